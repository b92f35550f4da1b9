# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""A GenEval-style score for the text-to-image demo (`pixelgen eval-demo --t2i`).

GenEval (Ghosh et al., 2023, arXiv 2310.11513) generates images for templated prompts, detects what is drawn, and
counts an image as correct when everything its prompt asks for is there; a task's score is the fraction of correct
images and the overall score is the mean over tasks. Here the detector is the shipped attribute classifier (shape,
shape colour, background colour), and the tasks are built on the combinations held out from training:

- single object: "a star" (one prompt per shape) - the shape must be right;
- colors: "a red star" - shape and its colour;
- background: "a star on a blue background" - shape and background colour;
- color attribution: "a red star on a blue background", a held-out (shape, colour, background) combination in
  one of the four phrasings - all three right, and the two colours not swapped.

The colour and background prompts use the shape-colour and shape-background pairs of the held-out triples.
A first row scores real images drawn to the same prompts: the ceiling the classifier allows.
"""

import time

import numpy as np
import torch

from ..demo.attribute_classifier import ATTRIBUTES, load_attribute_classifier
from ..demo.captions import COLOR_NAMES, FULL_TEMPLATES, caption, held_out_triples, render_triple
from ..demo.shapes import CLASS_NAMES
from .demo_c2i import METHODS, quantize


TASKS = ("single object", "colors", "background", "color attribution")
# (sampling_method, num_inference_steps, guidance_scale); Heun uses 2N - 1 model evaluations.
DEFAULT_T2I_TABLE = [
    ("euler", 10, 1.0),
    ("euler", 10, 2.0),
    ("euler", 10, 4.0),
    ("euler", 10, 6.0),
    ("euler", 25, 4.0),
    ("heun", 5, 4.0),
    ("adam_lm", 10, 4.0),
    ("adam_lm", 10, 6.0),
]
SINGLE_OBJECT_IMAGES_PER_SHAPE = 8
REAL_IMAGES_SEED = 3


def geneval_prompts(images_per_prompt: int = 1) -> list[dict]:
    """The evaluation jobs: one dict per image with its `task`, `prompt` and the (shape, colour, background)
    indices it asks for (`None` where the prompt is silent)."""
    triples = held_out_triples()
    jobs = []

    def add(task, shape, color, background, text, count):
        jobs.extend({"task": task, "prompt": text, "attributes": (shape, color, background)} for _ in range(count))

    for shape in range(len(CLASS_NAMES)):
        add("single object", shape, None, None, caption(CLASS_NAMES[shape]), SINGLE_OBJECT_IMAGES_PER_SHAPE)
    for shape, color in dict.fromkeys((shape, color) for shape, color, _ in triples):
        add("colors", shape, color, None, caption(CLASS_NAMES[shape], COLOR_NAMES[color]), 1)
    for shape, background in dict.fromkeys((shape, background) for shape, _, background in triples):
        text = caption(CLASS_NAMES[shape], background=COLOR_NAMES[background])
        add("background", shape, None, background, text, 1)
    for index, (shape, color, background) in enumerate(triples):
        template = FULL_TEMPLATES[index % len(FULL_TEMPLATES)]
        text = caption(CLASS_NAMES[shape], COLOR_NAMES[color], COLOR_NAMES[background], template)
        add("color attribution", shape, color, background, text, 1)
    return [job for job in jobs for _ in range(images_per_prompt)]


def real_images(jobs: list[dict], seed: int = REAL_IMAGES_SEED) -> torch.Tensor:
    """A real image per job: what it asks for, with the attributes it leaves open drawn at random."""
    images = []
    for index, job in enumerate(jobs):
        rng = np.random.default_rng([seed, index])
        shape, color, background = job["attributes"]
        while color is None or background is None or color == background:
            color = job["attributes"][1] if job["attributes"][1] is not None else int(rng.integers(len(COLOR_NAMES)))
            background = job["attributes"][2]
            background = background if background is not None else int(rng.integers(len(COLOR_NAMES)))
        images.append(np.asarray(render_triple((shape, color, background), rng)))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def generate(pipeline, jobs, method: str, steps: int, guidance: float, seed: int, batch_size: int = 64):
    """One [-1, 1] image per job, image i from a generator seeded with `seed + i`."""
    images = []
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        output = pipeline(
            [job["prompt"] for job in batch],
            num_inference_steps=steps,
            guidance_scale=guidance,
            sampling_method=method,
            generator=[torch.Generator().manual_seed(seed + start + i) for i in range(len(batch))],
            output_type="latent",
        )
        images.append(quantize(output.images.float().cpu()))
    return torch.cat(images)


def score(classifier, images: torch.Tensor, jobs: list[dict]) -> dict[str, float]:
    """Per task, the fraction of images whose every requested attribute the classifier sees; `overall` is their
    mean (GenEval's overall score). Also, per attribute (`shape accuracy`, `color accuracy`, `background
    accuracy`), how often it is right among the images whose prompt names it: where the failures are."""
    predictions = classifier.predict(images)
    asked = torch.tensor([[-1 if value is None else value for value in job["attributes"]] for job in jobs])
    right = predictions == asked
    correct = (right | (asked < 0)).all(dim=1)
    tasks = [job["task"] for job in jobs]
    scores = {}
    for task in TASKS:
        members = torch.tensor([name == task for name in tasks])
        if members.any():
            scores[task] = correct[members].float().mean().item()
    scores["overall"] = sum(scores.values()) / len(scores)
    for index, name in enumerate(ATTRIBUTES):
        named = asked[:, index] >= 0
        scores[f"{name} accuracy"] = right[named, index].float().mean().item()
    return scores


def evaluate_t2i(
    pipeline,
    table: list[tuple[str, int, float]] = DEFAULT_T2I_TABLE,
    images_per_prompt: int = 1,
    seed: int = 0,
    classifier=None,
    progress: bool = False,
) -> list[dict]:
    """One row per (method, steps, guidance) of `table`, after a first row scoring real images."""
    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be a positive integer, got {images_per_prompt}.")
    classifier = classifier if classifier is not None else load_attribute_classifier()
    jobs = geneval_prompts(images_per_prompt)
    rows = [{"method": "real images", "steps": 0, "guidance_scale": None, "seconds_per_image": 0.0}]
    rows[0] |= score(classifier, real_images(jobs), jobs)
    if progress:
        print(format_t2i_table(rows, header=False), flush=True)
    for method, steps, guidance in table:
        start = time.perf_counter()
        images = generate(pipeline, jobs, method, steps, guidance, seed)
        seconds = time.perf_counter() - start
        row = {"method": method, "steps": steps, "guidance_scale": guidance, "seconds_per_image": seconds / len(jobs)}
        rows.append(row | score(classifier, images, jobs))
        if progress:
            print(format_t2i_table(rows[-1:], header=False), flush=True)
    return rows


def model_evaluations(row: dict) -> int:
    """Transformer calls per image (a guided call counts once: both halves run in one batch)."""
    return 2 * row["steps"] - 1 if row["method"] == "heun" else row["steps"]


def choose_t2i_default(rows: list[dict]) -> dict:
    """The demo's default setting: among generated rows within one point of the best overall score, the one with
    the fewest model evaluations (then the best score)."""
    generated = [row for row in rows if row["method"] in METHODS]
    best = max(row["overall"] for row in generated)
    candidates = [row for row in generated if row["overall"] >= best - 0.01]
    return min(candidates, key=lambda row: (model_evaluations(row), -row["overall"]))


def format_t2i_table(rows: list[dict], header: bool = True) -> str:
    columns = (*TASKS, "overall", *(f"{name} accuracy" for name in ATTRIBUTES))
    lines = []
    if header:
        lines += [
            "| sampler | steps | guidance | "
            + " | ".join(columns).replace("color accuracy", "shape color accuracy")
            + " | s / image |",
            "|---|---:|---:|" + "---:|" * (len(columns) + 1),
        ]
    for row in rows:
        guidance = "-" if row["guidance_scale"] is None else f"{row['guidance_scale']:g}"
        steps = "-" if not row["steps"] else str(row["steps"])
        scores = " | ".join(f"{row[column]:.3f}" for column in columns)
        lines.append(f"| {row['method']} | {steps} | {guidance} | {scores} | {row['seconds_per_image']:.4f} |")
    return "\n".join(lines)
