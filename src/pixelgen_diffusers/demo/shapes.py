# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""A procedural, class-labelled dataset of coloured shapes on varied backgrounds (no download).

Image `index` of class `class_id` depends only on `(seed, class_id, index)`, so any split is reproducible and
disjoint splits are just different seeds. Shapes are drawn 4x larger and box-filtered down, for clean edges.
"""

import math
import os
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch


# Sorted, so that class ids are the same here, in the ImageFolder the trainer reads, and in the trained model.
CLASS_NAMES = ("arrow", "circle", "crescent", "cross", "diamond", "heart", "ring", "square", "star", "triangle")

# The splits the demo uses: the model is trained on TRAIN_SEED, the classifier on CLASSIFIER_SEED, and both are
# evaluated against EVAL_SEED.
TRAIN_SEED, CLASSIFIER_SEED, EVAL_SEED = 0, 1, 2
SUPERSAMPLING = 4


def _regular_polygon(num_vertices: int, radius: float = 1.0, phase: float = -math.pi / 2) -> list[tuple]:
    return [
        (
            radius * math.cos(phase + 2 * math.pi * k / num_vertices),
            radius * math.sin(phase + 2 * math.pi * k / num_vertices),
        )
        for k in range(num_vertices)
    ]


def _circle(center=(0.0, 0.0), radius: float = 1.0) -> list[tuple]:
    return [(center[0] + x, center[1] + y) for x, y in _regular_polygon(64, radius)]


def _star(points: int = 5, inner: float = 0.42) -> list[tuple]:
    outer = _regular_polygon(points)
    inner_vertices = _regular_polygon(points, inner, phase=-math.pi / 2 + math.pi / points)
    return [vertex for pair in zip(outer, inner_vertices) for vertex in pair]


# Each shape is a list of (fill, polygon) in unit coordinates (y down), drawn in order onto a mask: 255 adds, 0 cuts.
SHAPES = {
    "circle": [(255, _circle())],
    "square": [(255, [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)])],
    "triangle": [(255, _regular_polygon(3, 1.05, phase=-math.pi / 2))],
    "diamond": [(255, [(0.0, -1.0), (0.6, 0.0), (0.0, 1.0), (-0.6, 0.0)])],
    "star": [(255, _star())],
    "cross": [(255, [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1),
                     (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)])],
    "ring": [(255, _circle()), (0, _circle(radius=0.55))],
    "heart": [(255, _circle((-0.45, -0.35), 0.52)), (255, _circle((0.45, -0.35), 0.52)),
              (255, [(-0.95, -0.2), (0.95, -0.2), (0.0, 0.95)])],
    "crescent": [(255, _circle()), (0, _circle((0.45, -0.25), 0.8))],
    "arrow": [(255, [(-1, -0.22), (0.15, -0.22), (0.15, -0.62), (1, 0), (0.15, 0.62), (0.15, 0.22), (-1, 0.22)])],
}  # fmt: skip
ROTATION_FREE = ("circle", "ring")


def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A flat colour or a linear gradient between two colours at a random angle."""
    first = _random_color(rng)
    if rng.random() < 0.5:
        return np.broadcast_to(first, (size, size, 3)).copy(), [first]
    second = _random_color(rng)
    angle = rng.uniform(0, 2 * math.pi)
    coordinates = (np.arange(size) + 0.5) / size - 0.5
    projection = math.cos(angle) * coordinates[None, :] + math.sin(angle) * coordinates[:, None]
    weight = (projection - projection.min()) / (projection.max() - projection.min())
    return first + weight[..., None] * (second - first), [first, second]


def render_shape(
    class_id: int, rng: np.random.Generator, size: int = 32, background_color: tuple | None = None
) -> PIL.Image.Image:
    """One RGB image of class `class_id`: random background (or a flat `background_color`, an RGB triple), colour
    (contrasting with the background), size, position and (for shapes where it shows) a rotation of up to +-20
    degrees."""
    if not 0 <= class_id < len(CLASS_NAMES):
        raise ValueError(f"class_id must be in [0, {len(CLASS_NAMES)}), got {class_id}.")
    canvas = size * SUPERSAMPLING
    if background_color is None:
        background, background_colors = _background(rng, canvas)
    else:
        color = np.asarray(background_color, dtype=np.float32)
        background, background_colors = np.broadcast_to(color, (canvas, canvas, 3)).copy(), [color]
    for _ in range(100):
        color = _random_color(rng)
        if all(np.linalg.norm(color - other) >= 150 for other in background_colors):
            break
    return draw_shape(CLASS_NAMES[class_id], background, color, rng, size)


def draw_shape(
    name: str, background: np.ndarray, color: np.ndarray, rng: np.random.Generator, size: int = 32
) -> PIL.Image.Image:
    """Shape `name` in RGB `color` over `background` (a (size * SUPERSAMPLING, size * SUPERSAMPLING, 3) float
    array), with a random size, position and (for shapes where it shows) a rotation of up to +-20 degrees, box-filtered
    down to `size` x `size`."""
    canvas = size * SUPERSAMPLING
    radius = rng.uniform(0.28, 0.42) * canvas
    center = rng.uniform(radius + 2, canvas - radius - 2, size=2)
    angle = 0.0 if name in ROTATION_FREE else math.radians(rng.uniform(-20, 20))
    cos, sin = math.cos(angle), math.sin(angle)

    mask = PIL.Image.new("L", (canvas, canvas), 0)
    draw = PIL.ImageDraw.Draw(mask)
    for fill, polygon in SHAPES[name]:
        points = [
            (center[0] + radius * (cos * x - sin * y), center[1] + radius * (sin * x + cos * y)) for x, y in polygon
        ]
        draw.polygon(points, fill=fill)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255
    image = background * (1 - alpha) + color * alpha
    image = PIL.Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8))
    return image.resize((size, size), resample=PIL.Image.BOX)


def make_shapes(num_per_class: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.LongTensor]:
    """`num_per_class` images of every class as a (N, 3, size, size) float tensor in [-1, 1] and (N,) labels,
    class-interleaved (labels 0, 1, ..., 9, 0, 1, ...)."""
    images, labels = [], []
    for index in range(num_per_class):
        for class_id in range(len(CLASS_NAMES)):
            rng = np.random.default_rng([seed, class_id, index])
            images.append(np.asarray(render_shape(class_id, rng, size)))
            labels.append(class_id)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return pixels, torch.tensor(labels)


def write_shapes_dataset(
    root: str | os.PathLike,
    num_per_class: int,
    seed: int = TRAIN_SEED,
    size: int = 32,
    background_color: tuple | None = None,
) -> Path:
    """Writes the dataset as PNGs in the ImageFolder layout `root/<class name>/<index>.png` (what `pixelgen train`
    reads) and returns `root`."""
    root = Path(root)
    for class_id, name in enumerate(CLASS_NAMES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(num_per_class):
            rng = np.random.default_rng([seed, class_id, index])
            render_shape(class_id, rng, size, background_color).save(root / name / f"{index:05d}.png")
    return root
