# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Captioned shapes for the text-to-image demo: one of the demo's 10 shapes in one of 8 named colours on a flat
background of another named colour, with a caption that names what is drawn (no download).

Caption grammar (`{a}` is "a" or "an", whichever the next word takes):

    caption  := full | colour+shape | shape+background | shape
    full     := "{a} COLOUR SHAPE on {a} COLOUR background"          (the canonical phrasing)
              | "{a} COLOUR SHAPE against {a} COLOUR background"
              | "{a} COLOUR background with {a} COLOUR SHAPE"
              | "COLOUR SHAPE, COLOUR background"
    colour+shape     := "{a} COLOUR SHAPE"
    shape+background := "{a} SHAPE on {a} COLOUR background"
    shape            := "{a} SHAPE"
    COLOUR   := red | orange | yellow | green | blue | purple | white | black
    SHAPE    := arrow | circle | crescent | cross | diamond | heart | ring | square | star | triangle

Training captions are `full` (70%, the four phrasings equally often) or one of the partial forms (10% each); what
a partial caption leaves out is still drawn, at random. Shape and background colours always differ. Counts and
positions are not part of the grammar: at 32x32 a shape fills a third to most of the image, so "on the left" or
"two stars" would not be drawable, let alone learnable.

Every (shape, colour, background) triple whose `(shape + 3 * colour + 5 * background) % 7 == 0` is held out: it
never appears in training images, though each of its pairs (shape-colour, shape-background, colour-background)
does. The GenEval-style evaluation asks for exactly these unseen combinations.

Image `index` of a split depends only on `(seed, index)`.
"""

import itertools
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from .shapes import CLASS_NAMES, SUPERSAMPLING, draw_shape


COLORS = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 220, 40),
    "green": (35, 160, 55),
    "blue": (35, 75, 215),
    "purple": (135, 55, 185),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
COLOR_NAMES = tuple(COLORS)
# Each channel of a drawn colour is its palette value plus a uniform offset in [-COLOR_JITTER, COLOR_JITTER].
COLOR_JITTER = 12

FULL_TEMPLATES = (
    "{a_color} {color} {shape} on {a_background} {background} background",
    "{a_color} {color} {shape} against {a_background} {background} background",
    "{a_background} {background} background with {a_color} {color} {shape}",
    "{color} {shape}, {background} background",
)
COLOR_SHAPE_TEMPLATE = "{a_color} {color} {shape}"
SHAPE_BACKGROUND_TEMPLATE = "{a_shape} {shape} on {a_background} {background} background"
SHAPE_TEMPLATE = "{a_shape} {shape}"
# Probabilities of: full caption, colour + shape, shape + background, shape only.
CAPTION_FORM_PROBABILITIES = (0.7, 0.1, 0.1, 0.1)

# Seeds of the splits: the model trains on T2I_TRAIN_SEED, the attribute classifier on T2I_CLASSIFIER_SEED, and
# the classifier is checked on T2I_EVAL_SEED. A salt keeps these streams apart from the class-to-image shapes'.
T2I_TRAIN_SEED, T2I_CLASSIFIER_SEED, T2I_EVAL_SEED = 0, 1, 2
_STREAM = 20260214


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(shape: str, color: str | None = None, background: str | None = None, template: str | None = None) -> str:
    """A caption in the grammar; the attributes given choose the form, `template` (for full captions, one of
    FULL_TEMPLATES) the phrasing (default: the canonical one)."""
    if color is not None and background is not None:
        template = template or FULL_TEMPLATES[0]
    elif color is not None:
        template = COLOR_SHAPE_TEMPLATE
    elif background is not None:
        template = SHAPE_BACKGROUND_TEMPLATE
    else:
        template = SHAPE_TEMPLATE
    words = {"shape": shape, "color": color, "background": background}
    return template.format(
        **words, **{f"a_{key}": article(value) for key, value in words.items() if value is not None}
    )


def is_held_out(shape: int, color: int, background: int) -> bool:
    """Whether the (shape, colour, background) triple (indices into CLASS_NAMES and COLOR_NAMES) is held out."""
    return (shape + 3 * color + 5 * background) % 7 == 0


def all_triples() -> list[tuple[int, int, int]]:
    """Every drawable (shape, colour, background) index triple (the colours differ)."""
    return [
        (shape, color, background)
        for shape, color, background in itertools.product(
            range(len(CLASS_NAMES)), range(len(COLOR_NAMES)), range(len(COLOR_NAMES))
        )
        if color != background
    ]


def training_triples() -> list[tuple[int, int, int]]:
    return [triple for triple in all_triples() if not is_held_out(*triple)]


def held_out_triples() -> list[tuple[int, int, int]]:
    return [triple for triple in all_triples() if is_held_out(*triple)]


def _jittered(name: str, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(COLORS[name], dtype=np.float32) + rng.uniform(-COLOR_JITTER, COLOR_JITTER, size=3)


def render_triple(triple: tuple[int, int, int], rng: np.random.Generator, size: int = 32) -> PIL.Image.Image:
    """Draws shape `triple[0]` in colour `triple[1]` on a flat background of colour `triple[2]`."""
    shape, color, background = triple
    canvas = size * SUPERSAMPLING
    background_rgb = np.broadcast_to(_jittered(COLOR_NAMES[background], rng), (canvas, canvas, 3))
    return draw_shape(CLASS_NAMES[shape], background_rgb, _jittered(COLOR_NAMES[color], rng), rng, size)


def sample_caption(triple: tuple[int, int, int], rng: np.random.Generator) -> str:
    """A training caption of `triple`, its form and phrasing drawn from the grammar's probabilities."""
    shape, color, background = CLASS_NAMES[triple[0]], COLOR_NAMES[triple[1]], COLOR_NAMES[triple[2]]
    form = rng.choice(len(CAPTION_FORM_PROBABILITIES), p=CAPTION_FORM_PROBABILITIES)
    if form == 0:
        return caption(shape, color, background, FULL_TEMPLATES[rng.integers(len(FULL_TEMPLATES))])
    if form == 1:
        return caption(shape, color)
    if form == 2:
        return caption(shape, background=background)
    return caption(shape)


def captioned_shape(
    index: int, seed: int, size: int = 32, held_out: bool | None = False
) -> tuple[PIL.Image.Image, str, tuple[int, int, int]]:
    """Image `index` of split `seed`: (image, caption, (shape, colour, background) indices). The triple is drawn
    uniformly from the training triples (`held_out=False`), the held-out ones (`True`) or all (`None`)."""
    triples = {False: training_triples, True: held_out_triples, None: all_triples}[held_out]()
    rng = np.random.default_rng([_STREAM, seed, index])
    triple = triples[rng.integers(len(triples))]
    text = sample_caption(triple, rng)
    return render_triple(triple, rng, size), text, triple


def make_captioned_shapes(
    num_images: int, seed: int, size: int = 32, held_out: bool | None = False
) -> tuple[torch.Tensor, list[str], torch.LongTensor]:
    """`num_images` images as a (N, 3, size, size) float tensor in [-1, 1], their captions, and (N, 3) attribute
    labels (shape, colour, background)."""
    images, captions, labels = [], [], []
    for index in range(num_images):
        image, text, triple = captioned_shape(index, seed, size, held_out)
        images.append(np.asarray(image))
        captions.append(text)
        labels.append(triple)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return pixels, captions, torch.tensor(labels)


def write_captioned_dataset(
    root: str | os.PathLike, num_images: int, seed: int = T2I_TRAIN_SEED, size: int = 32
) -> Path:
    """Writes the training split as PNGs plus a `metadata.jsonl` (`file_name`, `text`): the Hugging Face
    `imagefolder` layout that `pixelgen train` reads for text-to-image. Returns `root`."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(num_images):
        image, text, _ = captioned_shape(index, seed, size)
        file_name = f"images/{index:06d}.png"
        image.save(root / file_name)
        lines.append(json.dumps({"file_name": file_name, "text": text}))
    # Complete or absent: a unique temporary file, renamed into place.
    with tempfile.NamedTemporaryFile("w", dir=root, prefix=".metadata.", suffix=".tmp", delete=False) as file:
        file.write("\n".join(lines) + "\n")
    os.replace(file.name, root / "metadata.jsonl")
    return root
