# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Scores the editing pipelines on the bundled demo models (`scripts/edit_demo.py`, docs/editing.md): class-to-image
inpainting of held-out real shapes (does the demo classifier see the true class? how close are the repainted pixels
to the real ones?) against "generate a new image, then paste the known pixels", image-to-image towards another
class at increasing strength, and text-to-image background repainting scored by the attribute classifier."""

import math

import numpy as np
import PIL.Image
import torch

from ..demo.attribute_classifier import load_attribute_classifier
from ..demo.captions import COLOR_NAMES, T2I_EVAL_SEED, caption, make_captioned_shapes
from ..demo.classifier import accuracy, load_classifier
from ..demo.shapes import CLASS_NAMES, EVAL_SEED, make_shapes


ETAS = (0.0, 0.5, 1.0)
STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)
# Fraction of pixels the "random" mask repaints.
RANDOM_MASK_FRACTION = 0.7


def make_mask(kind: str, size: int = 32, seed: int = 0) -> np.ndarray:
    """A (size, size) uint8 repaint mask (255 = repaint): `"centre"` (the centre size/2 x size/2 box), `"half"`
    (the right half) or `"random"` (70% of the pixels, drawn with `seed`)."""
    mask = np.zeros((size, size), dtype=np.uint8)
    if kind == "centre":
        mask[size // 4 : size - size // 4, size // 4 : size - size // 4] = 255
    elif kind == "half":
        mask[:, size // 2 :] = 255
    elif kind == "random":
        mask[np.random.default_rng(seed).random((size, size)) < RANDOM_MASK_FRACTION] = 255
    else:
        raise ValueError(f"Unknown mask kind {kind!r}; accepted: centre, half, random.")
    return mask


MASK_KINDS = ("centre", "half", "random")


def real_shapes(num_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`num_images` held-out real shapes (the demo's evaluation split, classes interleaved) as uint8 (N, H, W, 3)
    arrays and their (N,) labels."""
    images, labels = make_shapes(math.ceil(num_images / len(CLASS_NAMES)), EVAL_SEED)
    pixels = ((images[:num_images] + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    return pixels, labels[:num_images]


def to_model_range(images: list[PIL.Image.Image] | torch.Tensor) -> torch.Tensor:
    """PIL images or uint8 (N, H, W, 3) to the classifiers' (N, 3, H, W) float input in [-1, 1]."""
    if isinstance(images, list):
        images = torch.from_numpy(np.stack([np.asarray(image) for image in images]))
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1


def masked_psnr(edited: torch.Tensor, real: torch.Tensor, mask: np.ndarray) -> float:
    """Mean over images of the PSNR (dB, pixel range [0, 1]) of the repainted pixels against the real ones."""
    selected = torch.from_numpy(mask > 0)
    difference = ((edited - real) / 2)[:, :, selected]
    mse = difference.square().flatten(1).mean(dim=1).clamp_min(1e-10)
    return (10 * torch.log10(1 / mse)).mean().item()


@torch.no_grad()
def run_batched(pipeline, num_images: int, batch_size: int, seed: int, **per_image) -> list[PIL.Image.Image]:
    """Calls `pipeline` on batches; `per_image` values that are lists or tensors of length `num_images` are sliced,
    others passed as they are; image i's generator is seeded with `seed + i` (results do not depend on batching)."""
    images = []
    for start in range(0, num_images, batch_size):
        stop = min(start + batch_size, num_images)
        kwargs = {
            name: value[start:stop] if isinstance(value, (list, torch.Tensor)) and len(value) == num_images else value
            for name, value in per_image.items()
        }
        generators = [torch.Generator().manual_seed(seed + i) for i in range(start, stop)]
        images += pipeline(generator=generators, output_type="pil", **kwargs).images
    return images


def inpainting_rows(
    inpaint_pipeline,
    num_images: int = 200,
    etas=ETAS,
    mask_kinds=MASK_KINDS,
    seed: int = 0,
    batch_size: int = 100,
    classifier=None,
) -> list[dict]:
    """Per mask kind: "generate then paste" (eta None) and inpainting at each eta, of `num_images` held-out real
    shapes with their true class: classifier accuracy and masked-region PSNR."""
    classifier = classifier or load_classifier()
    real, labels = real_shapes(num_images)
    real_input = to_model_range(real)
    rows = []
    for kind in mask_kinds:
        mask = make_mask(kind, real.shape[1], seed)
        # Generate then paste: the inpainting pipeline at strength 1 with an all-white mask is plain generation.
        generated = run_batched(
            inpaint_pipeline, num_images, batch_size, seed, class_labels=labels.tolist(),
            image=list(real.numpy()), mask_image=np.full_like(mask, 255), eta=0.0,
        )  # fmt: skip
        pasted = to_model_range(generated)
        pasted[:, :, torch.from_numpy(mask == 0)] = real_input[:, :, torch.from_numpy(mask == 0)]
        rows.append(_inpainting_row(kind, None, classifier, pasted, real_input, labels, mask))
        for eta in etas:
            edited = run_batched(
                inpaint_pipeline, num_images, batch_size, seed, class_labels=labels.tolist(),
                image=list(real.numpy()), mask_image=mask, eta=eta,
            )  # fmt: skip
            rows.append(_inpainting_row(kind, eta, classifier, to_model_range(edited), real_input, labels, mask))
    return rows


def _inpainting_row(kind, eta, classifier, images, real, labels, mask) -> dict:
    return {
        "mask": kind,
        "eta": eta,
        "accuracy": accuracy(classifier, images, labels),
        "psnr": masked_psnr(images, real, mask),
    }


def img2img_rows(
    img2img_pipeline,
    num_images: int = 200,
    strengths=STRENGTHS,
    etas=ETAS,
    seed: int = 0,
    batch_size: int = 100,
    classifier=None,
) -> list[dict]:
    """Image-to-image of held-out real shapes towards the next class ((c + 1) mod 10): per eta and strength, how
    often the classifier sees the target class, and how often it still sees the source class."""
    classifier = classifier or load_classifier()
    real, labels = real_shapes(num_images)
    targets = (labels + 1) % len(CLASS_NAMES)
    rows = []
    for eta in etas:
        for strength in strengths:
            edited = run_batched(
                img2img_pipeline, num_images, batch_size, seed, class_labels=targets.tolist(),
                image=list(real.numpy()), strength=strength, eta=eta,
            )  # fmt: skip
            edited = to_model_range(edited)
            rows.append(
                {
                    "eta": eta,
                    "strength": strength,
                    "target accuracy": accuracy(classifier, edited, targets),
                    "source accuracy": accuracy(classifier, edited, labels),
                }
            )
    return rows


def background_masks(images: torch.Tensor) -> np.ndarray:
    """(N, H, W) uint8 masks of the background of flat-background shapes (255 = background): the pixels closer to
    the image's background colour (its most common corner colour) than to the shape's colour (the pixel farthest
    from it)."""
    pixels = images.float()  # (N, H, W, 3)
    corners = torch.stack([pixels[:, 0, 0], pixels[:, 0, -1], pixels[:, -1, 0], pixels[:, -1, -1]], dim=1)
    background = corners.median(dim=1).values[:, None, None]
    distance_to_background = (pixels - background).norm(dim=-1)
    farthest = distance_to_background.flatten(1).argmax(dim=1)
    shape_color = pixels.flatten(1, 2)[torch.arange(len(pixels)), farthest][:, None, None]
    distance_to_shape = (pixels - shape_color).norm(dim=-1)
    return ((distance_to_background < distance_to_shape).numpy() * 255).astype(np.uint8)


def t2i_background_rows(
    inpaint_pipeline, num_images: int = 100, etas=ETAS, seed: int = 0, batch_size: int = 50, classifier=None
) -> list[dict]:
    """Text-to-image: repaint the background of held-out real captioned shapes with a prompt naming the same shape
    and colour on another background colour; per eta, how often the attribute classifier finds the requested
    background, and the untouched shape's colour and shape."""
    classifier = classifier or load_attribute_classifier()
    images, _, triples = make_captioned_shapes(num_images, T2I_EVAL_SEED, held_out=True)
    real = ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    masks = background_masks(real)
    rng = np.random.default_rng(seed)
    requests, prompts = [], []
    for shape, color, background in triples.tolist():
        choices = [index for index in range(len(COLOR_NAMES)) if index not in (color, background)]
        new_background = int(rng.choice(choices))
        requests.append((shape, color, new_background))
        prompts.append(caption(CLASS_NAMES[shape], COLOR_NAMES[color], COLOR_NAMES[new_background]))
    requests = torch.tensor(requests)
    rows = []
    for eta in etas:
        edited = run_batched(
            inpaint_pipeline, num_images, batch_size, seed, prompt=prompts, image=list(real.numpy()),
            mask_image=list(masks), eta=eta,
        )  # fmt: skip
        predictions = classifier.predict(to_model_range(edited))
        rows.append(
            {
                "eta": eta,
                "background": (predictions[:, 2] == requests[:, 2]).float().mean().item(),
                "shape colour kept": (predictions[:, 1] == requests[:, 1]).float().mean().item(),
                "shape kept": (predictions[:, 0] == requests[:, 0]).float().mean().item(),
            }
        )
    return rows


def format_rows(rows: list[dict]) -> str:
    """A Markdown table of `rows` (same keys); floats as percentages, except PSNR (dB) and eta / strength."""
    keys = list(rows[0])

    def cell(key, value):
        if value is None:
            return "generate, then paste"
        if key in ("eta", "strength"):
            return f"{value:g}"
        if key == "psnr":
            return f"{value:.1f} dB"
        return f"{100 * value:.1f}%" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(key, row[key]) for key in keys) + " |" for row in rows]
    return "\n".join(lines)
