"""The editing picture of the README: held-out demo shapes, the centre 16x16 repainted as another class (eta 0 and
the default eta 1), and image-to-image towards that class at strength 0.6 and 0.8, with the same noise.

    OMP_NUM_THREADS=1 python scripts/edit_grid.py   # seconds on one CPU core; writes docs/images/editing-demo.png
"""

from pathlib import Path

import numpy as np
import PIL.Image
import torch

from pixelgen_diffusers import PixelGenC2IImg2ImgPipeline, PixelGenC2IInpaintPipeline, PixelGenC2IPipeline
from pixelgen_diffusers.demo import CLASS_NAMES, model_dir
from pixelgen_diffusers.demo.shapes import EVAL_SEED, make_shapes
from pixelgen_diffusers.utils import atomic_save_image


ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["circle", "square", "heart", "triangle", "cross"]
TARGETS = ["star", "ring", "diamond", "crescent", "arrow"]


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return ((image.permute(1, 2, 0).numpy() + 1) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)


def main() -> None:
    pipe = PixelGenC2IPipeline.from_pretrained(model_dir())
    pipe.set_progress_bar_config(disable=True)
    inpaint, img2img = PixelGenC2IInpaintPipeline.from_pipe(pipe), PixelGenC2IImg2ImgPipeline.from_pipe(pipe)
    images, labels = make_shapes(1, seed=EVAL_SEED)
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 255
    rows = []
    for source, target in zip(SOURCES, TARGETS):
        image = PIL.Image.fromarray(to_uint8(images[labels.tolist().index(CLASS_NAMES.index(source))]))
        masked = np.asarray(image).copy()
        masked[8:24, 8:24] = 255
        cells = [np.asarray(image), masked]
        for eta in (0.0, 1.0):
            generator = torch.Generator().manual_seed(0)
            edited = inpaint(target, image=image, mask_image=mask, eta=eta, generator=generator).images[0]
            cells.append(np.asarray(edited))
        for strength in (0.6, 0.8):
            generator = torch.Generator().manual_seed(0)
            cells.append(np.asarray(img2img(target, image=image, strength=strength, generator=generator).images[0]))
        rows.append(np.concatenate([np.pad(cell, ((2, 2), (2, 2), (0, 0)), constant_values=255) for cell in cells], 1))
    grid = PIL.Image.fromarray(np.concatenate(rows, 0)).resize((6 * 36 * 3, len(rows) * 36 * 3), PIL.Image.NEAREST)
    atomic_save_image(grid, ROOT / "docs" / "images" / "editing-demo.png")


if __name__ == "__main__":
    main()
