# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen sweep REF --out FOLDER`: sample and evaluate every point of a grid over models (e.g. EMA folders),
guidance scale, guidance interval, sampler, steps and cache, so "sweep EMA x CFG" is one command.

Each point samples into its own folder `FOLDER/points/<point>/` (`pixelgen sample`'s resumable sampler: finished
images are kept) and records its scores in `result.json` there; a rerun skips finished points. After every point
`sweep.csv`, `sweep.json` (one row per point) and `sweep.png` (the plotted metric against guidance scale, one line per
combination of the other settings) are rewritten atomically.

Light at import (standard library only): the CLI imports this module to build its parser.
"""

import argparse
import csv
import io
import itertools
import json
import re
from pathlib import Path

from ..utils import SAMPLING_METHODS, atomic_write_bytes, atomic_write_json, check_output_folder, cli_number
from .evaluate import METRIC_NAMES, OPTIONAL_METRIC_NAMES


SETTINGS = ("model", "guidance_scale", "guidance_interval", "sampler", "steps", "cache")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="sample and evaluate a grid of settings (models/EMAs, guidance, interval, sampler, steps, cache)",
        description="Sample --num-samples images at every point of a grid and score each against REF with ADM's "
        "metrics (see `pixelgen evaluate`). Every axis takes several values; omitted axes keep the model's default. "
        "Resumable: finished points are skipped, finished images kept. Writes sweep.csv, sweep.json and sweep.png "
        "into --out.",
    )
    parser.add_argument("reference", metavar="REF", help="reference set, as for `pixelgen evaluate`")
    parser.add_argument("--out", required=True, help="output folder (resumes a sweep already there)")
    parser.add_argument(
        "--model",
        nargs="+",
        default=[None],
        help="model folders or Hub ids, e.g. the EMA folders of one run (default: the bundled demo model)",
    )
    parser.add_argument("--guidance-scale", nargs="+", type=cli_number(), default=[None], metavar="SCALE")
    parser.add_argument(
        "--guidance-interval",
        nargs="+",
        default=[None],
        metavar="MIN:MAX",
        help="guidance intervals, each MIN:MAX with t from 0 (noise) to 1 (image)",
    )
    parser.add_argument("--sampler", nargs="+", choices=SAMPLING_METHODS, default=[None])
    parser.add_argument("--steps", nargs="+", type=cli_number(integer=True, minimum=1), default=[None])
    parser.add_argument(
        "--cache", nargs="+", default=[None], metavar="NAME[:VALUE]", help="caches as for `pixelgen sample`, or none"
    )
    parser.add_argument("--num-samples", type=cli_number(integer=True, minimum=2), required=True)
    parser.add_argument("--batch-size", type=cli_number(integer=True, minimum=1), default=32)
    parser.add_argument("--seed", type=cli_number(integer=True, minimum=0), default=0)
    parser.add_argument("--inception-weights", metavar="FILE", help="as for `pixelgen evaluate`")
    parser.add_argument(
        "--metric", nargs="+", choices=METRIC_NAMES + OPTIONAL_METRIC_NAMES, metavar="METRIC", help="metrics"
    )
    parser.add_argument("--dino", metavar="FOLDER_OR_ID", help="DINOv2 model for fd_dinov2")
    parser.add_argument("--plot-metric", help="the metric sweep.png shows (default: fid if computed)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.set_defaults(func=run)


def parse_interval(text: str | None) -> tuple[float, float] | None:
    """ "0.1:1" -> (0.1, 1.0); a ValueError naming the value otherwise."""
    if text is None or text == "none":
        return None
    low, separator, high = text.partition(":")
    try:
        interval = (float(low), float(high)) if separator else None
    except ValueError:
        interval = None
    if interval is None or not 0 <= interval[0] < interval[1] <= 1:
        raise ValueError(f"--guidance-interval {text!r}: expected MIN:MAX with 0 <= MIN < MAX <= 1, e.g. 0.1:1")
    return interval


def grid_points(args: argparse.Namespace) -> list[dict]:
    """Every combination of the axes, as dicts of `SETTINGS` (None: the model's default)."""
    intervals = [parse_interval(text) for text in args.guidance_interval]
    caches = [None if spec in (None, "none") else spec for spec in args.cache]
    axes = (args.model, args.guidance_scale, intervals, args.sampler, args.steps, caches)
    return [dict(zip(SETTINGS, values)) for values in itertools.product(*axes)]


def point_name(point: dict) -> str:
    """A readable, unique folder name for a point (`model-ema2_cfg-1.5_interval-0.1-1_...`)."""
    parts = []
    for key in SETTINGS:
        value = point[key]
        if value is None:
            continue
        if key == "model":
            value = Path(str(value)).name or str(value)
        elif key == "guidance_interval":
            value = f"{value[0]:g}-{value[1]:g}"
        elif isinstance(value, float):
            value = f"{value:g}"
        parts.append(f"{key}-{value}")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(parts)) or "defaults"


def _call_options(point: dict) -> dict:
    options = {
        "guidance_scale": point["guidance_scale"],
        "num_inference_steps": point["steps"],
        "sampling_method": point["sampler"],
    }
    if point["guidance_interval"] is not None:
        options["guidance_interval_min"], options["guidance_interval_max"] = point["guidance_interval"]
    return {key: value for key, value in options.items() if value is not None}


def _csv_value(value):
    return json.dumps(value) if isinstance(value, (list, tuple)) else value


def write_outputs(out: Path, rows: list[dict], plot_metric: str | None) -> None:
    """sweep.json, sweep.csv and (when a metric has numbers) sweep.png, each written atomically."""
    atomic_write_json(out / "sweep.json", rows)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(value) for key, value in row.items()})
    atomic_write_bytes(out / "sweep.csv", text.getvalue().encode("utf-8"))
    if plot_metric is not None and any(row.get(plot_metric) is not None for row in rows):
        try:
            atomic_write_bytes(out / "sweep.png", plot(rows, plot_metric))
        except ImportError:
            print("sweep.png needs matplotlib (pip install 'pixelgen-diffusers[eval]'); CSV and JSON are written")


def plot(rows: list[dict], metric: str) -> bytes:
    """PNG bytes: `metric` against guidance scale, one line per combination of the other settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = {}
    for row in rows:
        if row.get(metric) is None:
            continue
        label = ", ".join(f"{key}={row[key]}" for key in SETTINGS if key != "guidance_scale" and row[key] is not None)
        scale = row["guidance_scale"] if row["guidance_scale"] is not None else float("nan")
        lines.setdefault(label or "model defaults", []).append((scale, row[metric]))
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, points in lines.items():
        points.sort()
        axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
    axes.set_xlabel("guidance scale")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    import torch

    from ..utils import sampling_options

    points = grid_points(args)
    for spec in {point["cache"] for point in points if point["cache"] is not None}:
        sampling_options.parse_cache(spec)
    out = check_output_folder(args.out, "--out")
    metrics = args.metric
    plot_metric = args.plot_metric or ("fid" if metrics is None or "fid" in metrics else metrics[0])

    from ..conversion.hub import load_pipeline
    from ..evaluation.evaluator import evaluate
    from ..evaluation.reference import load_reference
    from ..evaluation.weights import load_inception
    from ..utils import default_dtype, resolve_device
    from .generate import demo_model_dir, set_threads
    from .sample import sample_many

    device = resolve_device(args.device)
    load_reference(args.reference)  # bad input fails before any sampling
    needs_inception = metrics is None or any(name in METRIC_NAMES for name in metrics)
    inception, weights_sha256 = load_inception(args.inception_weights, device) if needs_inception else (None, None)
    out.mkdir(parents=True, exist_ok=True)
    rows, pipeline, loaded_model = [], None, object()
    for index, point in enumerate(points):
        folder = out / "points" / point_name(point)
        result_path = folder / "result.json"
        row = {key: point[key] for key in SETTINGS}
        if result_path.is_file():
            rows.append({**row, **json.loads(result_path.read_text())})
            print(f"[{index + 1}/{len(points)}] {folder.name}: done before")
            continue
        print(f"[{index + 1}/{len(points)}] {folder.name}")
        if point["model"] != loaded_model:
            model = point["model"] if point["model"] is not None else str(demo_model_dir())
            pipeline = load_pipeline(model, dtype=default_dtype(None, device)).to(device)
            set_threads(None, pipeline)
            loaded_model = point["model"]
        options = _call_options(point)
        if point["cache"] is not None:
            cache_arguments = argparse.Namespace(scheduler="pixelgen", cache=point["cache"], sampler=point["sampler"])
            calibration = {"class_labels": [0], "generator": torch.Generator().manual_seed(args.seed)}
            sampling_options.apply_arguments(pipeline, cache_arguments, options, calibration)
        try:
            sample_many(
                pipeline,
                folder,
                num_samples=args.num_samples,
                seed=args.seed,
                batch_size=args.batch_size,
                model=model,
                **options,
            )
        finally:
            if point["cache"] is not None:
                pipeline.transformer.disable_cache()
        result = evaluate(
            args.reference,
            folder / "samples.npz",
            metrics=metrics,
            batch_size=args.batch_size,
            device=device,
            model=inception,
            weights_sha256=weights_sha256,
            dino=args.dino,
        )
        if result is None:  # another process of several: the main one records the point
            continue
        result.pop("unavailable", None)
        atomic_write_json(result_path, result)
        rows.append({**row, **result})
        write_outputs(out, rows, plot_metric)
    write_outputs(out, rows, plot_metric)
    print(f"{len(rows)} points: {out / 'sweep.csv'}, {out / 'sweep.json'}, {out / 'sweep.png'}")
    return 0
