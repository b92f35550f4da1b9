#!/usr/bin/env python
# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The editing pipelines on the bundled demo models: the tables of docs/editing.md.

- Class-to-image inpainting of held-out real shapes with their true class, for three masks (the centre 16x16 box,
  the right half, a random 70% of the pixels) and eta 0 / 0.5 / 1, against "generate a new image, then paste the
  known pixels": the demo classifier's accuracy and the PSNR of the repainted pixels against the real ones.
- Class-to-image image-to-image towards the next class, per eta and strength: how often the classifier sees the
  target class (and still the source class).
- Text-to-image background repaint: held-out captioned shapes, their background masked, a prompt naming the same
  shape and colour on another background colour: how often the attribute classifier finds the requested background
  and keeps the shape's colour and shape.

Every run uses the folder's recipe (class-to-image: Euler 10, guidance 3; text-to-image: Euler 25, guidance 4).

    OMP_NUM_THREADS=1 python scripts/edit_demo.py     # about 15 minutes on a busy 2-core CPU
"""

import argparse
import time

from pixelgen_diffusers import (
    PixelGenC2IImg2ImgPipeline,
    PixelGenC2IInpaintPipeline,
    PixelGenC2IPipeline,
    PixelGenT2IInpaintPipeline,
    PixelGenT2IPipeline,
)
from pixelgen_diffusers.demo import model_dir, t2i_model_dir
from pixelgen_diffusers.evaluation.demo_edit import format_rows, img2img_rows, inpainting_rows, t2i_background_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=200, help="class-to-image images per row (default 200)")
    parser.add_argument("--num-t2i-images", type=int, default=100, help="text-to-image images per row (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    pipeline = PixelGenC2IPipeline.from_pretrained(model_dir())
    pipeline.set_progress_bar_config(disable=True)
    inpaint = PixelGenC2IInpaintPipeline.from_pipe(pipeline)
    inpaint.set_progress_bar_config(disable=True)
    print("## Class-to-image inpainting, true class\n")
    print(format_rows(inpainting_rows(inpaint, args.num_images, seed=args.seed)) + "\n")
    img2img = PixelGenC2IImg2ImgPipeline.from_pipe(pipeline)
    img2img.set_progress_bar_config(disable=True)
    print("## Class-to-image image-to-image towards the next class\n")
    print(format_rows(img2img_rows(img2img, args.num_images, seed=args.seed)) + "\n")
    t2i = PixelGenT2IPipeline.from_pretrained(t2i_model_dir())
    t2i_inpaint = PixelGenT2IInpaintPipeline.from_pipe(t2i)
    t2i_inpaint.set_progress_bar_config(disable=True)
    print("## Text-to-image background repaint\n")
    print(format_rows(t2i_background_rows(t2i_inpaint, args.num_t2i_images, seed=args.seed)) + "\n")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
