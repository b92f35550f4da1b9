# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Scores the demo model (`pixelgen eval-demo`): for each sampler setting, the demo classifier's accuracy on
generated images (is each image the requested class?) and the Frechet distance between the classifier's features
of generated and of real held-out images (do they look like the data?)."""

import itertools
import time

import torch

from ..utils import atomic_write_json, cli_number
from .classifier import load_classifier
from .shapes import CLASS_NAMES, EVAL_SEED, make_shapes


# Second real sample, disjoint from the reference: its row is the noise floor of the metrics at this sample size.
REAL_BASELINE_SEED = 3
METHODS = ("heun", "euler", "adam_lm")
# (sampling_method, num_inference_steps, guidance_scale); Heun uses 2N - 1 model evaluations.
DEFAULT_TABLE = [
    (method, steps, guidance)
    for method, step_counts in (("heun", (5, 10, 25)), ("euler", (10, 25, 50)), ("adam_lm", (10, 25)))
    for steps in step_counts
    for guidance in (1.0, 2.0, 3.0)
]


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


@torch.no_grad()
def generate(pipeline, method: str, steps: int, guidance: float, num_samples: int, seed: int, batch_size: int = 100):
    """`num_samples` images, classes in turn (0, 1, ..., 9, 0, ...), as [-1, 1] tensors with their labels."""
    labels = torch.arange(num_samples) % len(pipeline.id2label)
    generator = torch.Generator().manual_seed(seed)
    images = []
    for start in range(0, num_samples, batch_size):
        batch = labels[start : start + batch_size].tolist()
        output = pipeline(
            batch,
            num_inference_steps=steps,
            guidance_scale=guidance,
            sampling_method=method,
            generator=generator,
            output_type="latent",
        )
        images.append(quantize(output.images.float().cpu()))
    return torch.cat(images), labels


def evaluate(
    pipeline,
    table: list[tuple[str, int, float]] = DEFAULT_TABLE,
    num_samples: int = 200,
    num_real: int = 1000,
    seed: int = 0,
    classifier=None,
    progress: bool = False,
) -> list[dict]:
    """One row per (method, steps, guidance) of `table`, plus a first row scoring real images (the metrics' floor).
    Generated images use one generator seeded with `seed` per row."""
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
        }
    ]
    if progress:
        print(format_table(rows, header=False), flush=True)
    for method, steps, guidance in table:
        start = time.perf_counter()
        images, labels = generate(pipeline, method, steps, guidance, num_samples, seed)
        seconds = time.perf_counter() - start
        features, predictions = _features_and_predictions(classifier, images)
        rows.append(
            {
                "method": method,
                "steps": steps,
                "guidance_scale": guidance,
                "accuracy": (predictions == model_to_classifier[labels]).float().mean().item(),
                "frechet_distance": frechet_distance(features, reference_features),
                "seconds_per_image": seconds / num_samples,
            }
        )
        if progress:
            print(format_table(rows[-1:], header=False), flush=True)
    return rows


def choose_default(rows: list[dict]) -> dict:
    """The demo's default setting: among generated rows within one point of the best accuracy, the lowest Frechet
    distance."""
    generated = [row for row in rows if row["method"] in METHODS]
    best = max(row["accuracy"] for row in generated)
    return min((row for row in generated if row["accuracy"] >= best - 0.01), key=lambda row: row["frechet_distance"])


def format_table(rows: list[dict], header: bool = True) -> str:
    lines = []
    if header:
        lines += [
            "| sampler | steps | guidance | accuracy | Frechet distance | s / image |",
            "|---|---:|---:|---:|---:|---:|",
        ]
    for row in rows:
        guidance = "-" if row["guidance_scale"] is None else f"{row['guidance_scale']:g}"
        steps = "-" if not row["steps"] else str(row["steps"])
        lines.append(
            f"| {row['method']} | {steps} | {guidance} | {row['accuracy']:.1%} | {row['frechet_distance']:.2f} |"
            f" {row['seconds_per_image']:.4f} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------ CLI
def add_parser(subparsers) -> None:
    """Registers `pixelgen eval-demo`."""
    parser = subparsers.add_parser(
        "eval-demo",
        help="score the bundled demo model (or another shapes model) with the demo classifier",
        description="Accuracy of the demo classifier on generated images and Frechet distance of its features to"
        " real held-out images, per sampler / steps / guidance. Without --methods/--steps/--guidance it runs the"
        " README's table; with any of them, their product.",
    )
    parser.add_argument("--model", help="a pipeline folder trained on the shapes dataset (default: the bundled demo)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="samplers (default: all)")
    parser.add_argument(
        "--steps", nargs="+", type=cli_number(integer=True, minimum=1), help="step counts (default: 10 25)"
    )
    parser.add_argument("--guidance", nargs="+", type=cli_number(), help="guidance scales (default: 1 2 3)")
    parser.add_argument(
        "--num-samples",
        type=cli_number(integer=True, minimum=1, maximum=100_000),
        default=200,
        help="generated images per row",
    )
    parser.add_argument(
        "--num-real",
        type=cli_number(integer=True, minimum=2, maximum=100_000),
        default=1000,
        help="real held-out images for the reference",
    )
    parser.add_argument("--seed", type=cli_number(integer=True, minimum=0), default=0)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.set_defaults(func=run_from_args)


def run_from_args(args) -> int:
    from ..hub import load_pipeline
    from . import model_dir

    pipeline = load_pipeline(args.model or model_dir())
    pipeline.set_progress_bar_config(disable=True)
    if args.methods or args.steps or args.guidance:
        table = list(
            itertools.product(args.methods or METHODS, args.steps or (10, 25), args.guidance or (1.0, 2.0, 3.0))
        )
    else:
        table = DEFAULT_TABLE
    print(format_table([]))
    rows = evaluate(pipeline, table, args.num_samples, args.num_real, args.seed, progress=True)
    if args.json:
        atomic_write_json(args.json, rows)
    return 0
