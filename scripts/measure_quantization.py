# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The quality gate of `--quantize int8wo` (docs/publishing.md): the bundled class-to-image demo model in float32
and quantized, scored with the demo classifier (`evaluation.demo_c2i.evaluate`) at its stored recipe, and the
transformer's memory footprint. Prints a Markdown table.

    python scripts/measure_quantization.py --num-samples 1000
"""

import argparse

import torch

from pixelgen_diffusers.conversion.export import format_size
from pixelgen_diffusers.conversion.hub import load_pipeline
from pixelgen_diffusers.conversion.quantization import load_quantized, stored_bytes
from pixelgen_diffusers.demo import model_dir
from pixelgen_diffusers.evaluation.demo_c2i import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--quantize", nargs="+", default=["int8wo"])
    args = parser.parse_args()
    loaded = {"float32": load_pipeline(model_dir(), dtype=torch.float32)}
    for name in args.quantize:
        loaded[name] = load_quantized(model_dir(), name, "cpu", dtype=torch.float32)
    config = loaded["float32"].config
    recipe = (
        config.get("sampling_method") or loaded["float32"].scheduler.config.sampling_method,
        config.num_inference_steps,
        config.guidance_scale,
    )
    print("| weights | transformer memory | accuracy | Frechet distance | s / image |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, pipeline in loaded.items():
        pipeline.set_progress_bar_config(disable=True)
        row = evaluate(pipeline, [recipe], num_samples=args.num_samples)[-1]
        memory = format_size(stored_bytes(pipeline.transformer))
        print(
            f"| {name} | {memory} | {100 * row['accuracy']:.1f}% | {row['frechet_distance']:.2f} |"
            f" {row['seconds_per_image']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
