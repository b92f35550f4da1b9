# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Scores the demo model (`pixelgen eval-demo`): for each sampler setting, the demo classifier's accuracy on
generated images (is each image the requested class?) and the Frechet distance between the classifier's features
of generated and of real held-out images (do they look like the data?)."""

import contextlib
import time

import torch

from ..demo.classifier import load_classifier
from ..demo.shapes import CLASS_NAMES, EVAL_SEED, make_shapes
from ..utils.sampling_options import (
    SCHEDULERS,
    calibrate_mag_ratios,
    make_cache_config,
    make_scheduler,
    parse_cache,
)


# Second real sample, disjoint from the reference: its row is the noise floor of the metrics at this sample size.
REAL_BASELINE_SEED = 3
METHODS = ("heun", "euler", "adam_lm")
# Stock diffusers schedulers, by their `--scheduler` names.
STOCK_SCHEDULERS = tuple(name for name in SCHEDULERS if SCHEDULERS[name] is not None)
# (sampling_method, num_inference_steps, guidance_scale); Heun uses 2N - 1 model evaluations.
DEFAULT_TABLE = [
    (method, steps, guidance)
    for method, step_counts in (("heun", (5, 10, 25)), ("euler", (10, 25, 50)), ("adam_lm", (10, 25)))
    for steps in step_counts
    for guidance in (1.0, 2.0, 3.0)
]
# `--table caches`: the default recipe (Euler 10, guidance 3) and Heun 25 with guidance 3, uncached and under each
# cache at two or three settings. `--table solvers`: each stock solver at 5, 10 and 25 steps, guidance 3.
CACHE_SETTINGS = [
    "first-block:0.05", "first-block:0.1", "first-block:0.2", "mag:0.06", "mag:0.12", "sea:0.1", "sea:0.25",
    "taylorseer:2", "taylorseer:3", "pyramid-attention-broadcast:2", "pyramid-attention-broadcast:3",
]  # fmt: skip
CACHE_TABLE = [
    (method, steps, 3.0, cache) for method, steps in (("euler", 10), ("heun", 25)) for cache in (None, *CACHE_SETTINGS)
]
SOLVER_TABLE = [(name, steps, 3.0, None) for name in STOCK_SCHEDULERS for steps in (5, 10, 25)]
TABLES = {"default": DEFAULT_TABLE, "caches": CACHE_TABLE, "solvers": SOLVER_TABLE}


def frechet_distance(features: torch.Tensor, reference: torch.Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to two feature sets, in float64.
    tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric S_a^(1/2) S_b
    S_a^(1/2), which has the same spectrum."""
    features, reference = features.double(), reference.double()
    mean_difference = features.mean(dim=0) - reference.mean(dim=0)
    covariance, reference_covariance = torch.cov(features.T), torch.cov(reference.T)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    covariance_sqrt = eigenvectors @ torch.diag(eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T
    product = covariance_sqrt @ reference_covariance @ covariance_sqrt
    trace_sqrt = torch.linalg.eigvalsh((product + product.T) / 2).clamp_min(0).sqrt().sum()
    distance = mean_difference.square().sum() + covariance.trace() + reference_covariance.trace() - 2 * trace_sqrt
    return distance.item()


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images rounded to 8 bits the way the pipeline writes PNGs, so generated and real images are scored
    at the same precision."""
    return ((images + 1) * 127.5 + 0.5).clamp(0, 255).floor() / 127.5 - 1


@torch.no_grad()
def _features_and_predictions(classifier, images: torch.Tensor, batch_size: int = 500):
    features = torch.cat([classifier.features(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    return features, classifier.head(features).argmax(dim=1)


@contextlib.contextmanager
def sampler(pipeline, method: str, steps: int, guidance: float, cache: str | None = None):
    """Sets up `method` (a PixelGenScheduler solver or a stock scheduler name) and `cache` (`NAME[:VALUE]`) on the
    pipeline for the duration, and yields the extra call arguments. MagCache calibrates its ratios first, with one
    uncached run of ten images (not timed)."""
    original_scheduler = pipeline.scheduler
    call_kwargs = {}
    if method in METHODS:
        call_kwargs["sampling_method"] = method
    else:
        pipeline.scheduler = make_scheduler(method, pipeline)
    try:
        if cache is not None:
            name, value = parse_cache(cache)
            ratios = None
            if name == "mag":
                labels = list(range(len(pipeline.id2label)))
                recipe = dict(num_inference_steps=steps, guidance_scale=guidance, **call_kwargs)
                ratios = calibrate_mag_ratios(
                    pipeline, class_labels=labels, generator=torch.Generator().manual_seed(0), **recipe
                )
            config = make_cache_config(name, value, pipeline, len(ratios) if ratios else None, ratios)
            pipeline.transformer.enable_cache(config)
        yield call_kwargs
    finally:
        if getattr(pipeline.transformer, "is_cache_enabled", False):
            pipeline.transformer.disable_cache()
        pipeline.scheduler = original_scheduler


@contextlib.contextmanager
def count_compute(transformer):
    """Counts, in image rows, the transformer blocks and the attention layers that actually run (a cache that
    skips a block or reuses an attention output skips these counts too)."""
    counts = {"blocks": 0, "attention": 0}

    def counter(key):
        def count(module, args):
            counts[key] += args[0].shape[0]

        return count

    handles = []
    for block in transformer.transformer_blocks:
        handles.append(block.ff.register_forward_pre_hook(counter("blocks")))
        handles.append(block.attn.to_qkv.register_forward_pre_hook(counter("attention")))
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def generate(
    pipeline,
    method: str,
    steps: int,
    guidance: float,
    num_samples: int,
    seed: int,
    batch_size: int = 100,
    cache: str | None = None,
):
    """`num_samples` images, classes in turn (0, 1, ..., 9, 0, ...), as [-1, 1] tensors with their labels, and the
    compute spent: model evaluations per image, and block / attention rows that ran."""
    labels = torch.arange(num_samples) % len(pipeline.id2label)
    generator = torch.Generator().manual_seed(seed)
    images = []
    setup = sampler(pipeline, method, steps, guidance, cache)
    with setup as call_kwargs, count_compute(pipeline.transformer) as counts:
        start_time = time.perf_counter()
        for start in range(0, num_samples, batch_size):
            batch = labels[start : start + batch_size].tolist()
            output = pipeline(
                batch,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generator,
                output_type="latent",
                **call_kwargs,
            )
            images.append(quantize(output.images.float().cpu()))
        counts["seconds"] = time.perf_counter() - start_time
        counts["evaluations"] = len(pipeline.scheduler.timesteps)
    return torch.cat(images), labels, counts


def evaluate(
    pipeline,
    table: list[tuple] = DEFAULT_TABLE,
    num_samples: int = 200,
    num_real: int = 1000,
    seed: int = 0,
    classifier=None,
    progress: bool = False,
) -> list[dict]:
    """One row per (method, steps, guidance[, cache]) of `table`, plus a first row scoring real images (the metrics'
    floor). `method` is a PixelGenScheduler solver or a stock scheduler name, `cache` a `--cache` spec. Generated
    images use one generator seeded with `seed` per row. Cache rows report the blocks and attention layers computed
    as a share of the same recipe uncached (run first if the table lacks it)."""
    if num_samples < 2 or num_real < 2:
        raise ValueError(f"num_samples and num_real must be at least 2, got {num_samples} and {num_real}.")
    unknown = sorted(set(pipeline.id2label.values()) - set(CLASS_NAMES))
    if unknown:
        raise ValueError(f"The model's classes {unknown} are not demo shapes ({', '.join(CLASS_NAMES)}).")
    # Generated images are labelled with the model's ids; the classifier predicts CLASS_NAMES indices.
    model_to_classifier = torch.tensor([CLASS_NAMES.index(name) for _, name in sorted(pipeline.id2label.items())])
    classifier = classifier if classifier is not None else load_classifier()
    num_classes = len(CLASS_NAMES)
    real_images, _ = make_shapes(-(-num_real // num_classes), EVAL_SEED)
    reference_features, _ = _features_and_predictions(classifier, real_images[:num_real])

    baseline_images, baseline_labels = make_shapes(-(-num_samples // num_classes), REAL_BASELINE_SEED)
    features, predictions = _features_and_predictions(classifier, baseline_images[:num_samples])
    rows = [
        {
            "method": "real images",
            "steps": 0,
            "guidance_scale": None,
            "accuracy": (predictions == baseline_labels[:num_samples]).float().mean().item(),
            "frechet_distance": frechet_distance(features, reference_features),
            "seconds_per_image": 0.0,
            "cache": None,
            "evaluations": 0,
        }
    ]
    if progress:
        print(format_table(rows, header=False), flush=True)
    uncached_compute = {}
    settings = [(*setting, None)[:4] for setting in table]
    for setting in list(settings):  # each cache row's uncached recipe runs first, for its compute share
        if setting[3] is not None and (*setting[:3], None) not in settings:
            settings.insert(settings.index(setting), (*setting[:3], None))
    for method, steps, guidance, cache in settings:
        images, labels, counts = generate(pipeline, method, steps, guidance, num_samples, seed, cache=cache)
        features, predictions = _features_and_predictions(classifier, images)
        row = {
            "method": method,
            "steps": steps,
            "guidance_scale": guidance,
            "cache": cache,
            "accuracy": (predictions == model_to_classifier[labels]).float().mean().item(),
            "frechet_distance": frechet_distance(features, reference_features),
            "seconds_per_image": counts["seconds"] / num_samples,
            "evaluations": counts["evaluations"],
        }
        if cache is None:
            uncached_compute[method, steps, guidance] = counts
        else:
            uncached = uncached_compute[method, steps, guidance]
            row["blocks_computed"] = counts["blocks"] / uncached["blocks"]
            row["attention_computed"] = counts["attention"] / uncached["attention"]
        rows.append(row)
        if progress:
            print(format_table(rows[-1:], header=False), flush=True)
    return rows


def choose_default(rows: list[dict]) -> dict:
    """The demo's default setting: among generated rows within one point of the best accuracy, the lowest Frechet
    distance."""
    generated = [row for row in rows if row["method"] in METHODS and row.get("cache") is None]
    best = max(row["accuracy"] for row in generated)
    return min((row for row in generated if row["accuracy"] >= best - 0.01), key=lambda row: row["frechet_distance"])


def format_table(rows: list[dict], header: bool = True) -> str:
    lines = []
    if header:
        lines += [
            "| sampler | steps | guidance | cache | evaluations | blocks computed | attention computed | accuracy |"
            " Frechet distance | s / image |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
    for row in rows:
        guidance = "-" if row["guidance_scale"] is None else f"{row['guidance_scale']:g}"
        steps = "-" if not row["steps"] else str(row["steps"])
        evaluations = "-" if not row.get("evaluations") else str(row["evaluations"])
        shares = [f"{row[key]:.0%}" if key in row else "-" for key in ("blocks_computed", "attention_computed")]
        lines.append(
            f"| {row['method']} | {steps} | {guidance} | {row.get('cache') or '-'} | {evaluations} | {shares[0]} |"
            f" {shares[1]} | {row['accuracy']:.1%} | {row['frechet_distance']:.2f} | {row['seconds_per_image']:.4f} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------ CLI
