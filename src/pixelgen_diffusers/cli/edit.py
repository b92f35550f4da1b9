# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen edit`: image-to-image, inpainting and outpainting of one image with a PixelGen model.

Without `--mask` the whole image is redrawn (image-to-image); with one, its white pixels are repainted and its black
ones come back exactly (grey: a per-pixel strength). Image i is drawn with a generator seeded with `seed + i`.
torch and the pipelines are imported when the command runs, after its arguments are checked.
"""

import argparse
from pathlib import Path

from ..utils import (
    DTYPE_NAMES,
    SAMPLING_METHODS,
    atomic_save_image,
    check_number,
    check_output_folder,
    cli_number,
    default_dtype,
    is_text_to_image,
    resolve_device,
)
from .generate import (
    POSITIVE_INTEGER,
    add_text_encoder_argument,
    add_threads_argument,
    add_trust_remote_code_argument,
    class_ids,
    demo_model_dir,
    prepare_text_encoder,
    set_threads,
    slugify,
)


UNIT_INTERVAL = cli_number(minimum=0, maximum=1)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "edit",
        help="edit an image with a PixelGen model: image-to-image, inpainting, outpainting",
        description="Edit an image with a PixelGen model folder, Hub repo or Hub subfolder: redraw it towards a class "
        "or prompt (image-to-image), or repaint the white pixels of a mask (inpainting; for outpainting, place the "
        "image on a canvas of the model's size and mask the rest). Known pixels come back exactly. Sampling settings "
        "default to the model's recommended ones.",
    )
    parser.add_argument("--image", required=True, help="the image to edit (RGB, of the model's size)")
    parser.add_argument(
        "--mask",
        help="repaint mask (grayscale, of the image's size): white = repaint, black = keep, grey = partial "
        "(default: none, image-to-image)",
    )
    parser.add_argument(
        "--strength",
        type=UNIT_INTERVAL,
        help="how much to change, in [0, 1]: the run keeps the last strength x steps; 0 returns the image, 1 "
        "ignores it (default: 1 with --mask, 0.6 without)",
    )
    parser.add_argument(
        "--eta",
        type=UNIT_INTERVAL,
        help="share of fresh noise mixed in at every step, in [0, 1] (default: the pipeline's, 1)",
    )
    parser.add_argument(
        "--mask-blur", type=cli_number(minimum=0), default=0, help="blur of the mask's edges, in pixels (default 0)"
    )
    parser.add_argument("--model", help="folder, owner/repo or owner/repo/subfolder (default: the bundled demo model)")
    condition = parser.add_mutually_exclusive_group()
    condition.add_argument("--class", dest="class_label", metavar="CLASS", help="class name or id (class-to-image)")
    condition.add_argument("--prompt", help="prompt (text-to-image)")
    parser.add_argument("--negative-prompt", help="text-to-image negative prompt")
    parser.add_argument("--num-images", type=POSITIVE_INTEGER, default=1, help="edits to draw (default 1)")
    parser.add_argument("--steps", type=POSITIVE_INTEGER, help="sampling steps (default: the model's)")
    parser.add_argument("--guidance-scale", type=cli_number(), help="guidance scale (default: the model's)")
    parser.add_argument("--sampler", choices=SAMPLING_METHODS, help="ODE solver (default: the model's)")
    parser.add_argument(
        "--seed", type=cli_number(integer=True, minimum=0), default=0, help="seed of edit 0; edit i uses seed + i"
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype", choices=DTYPE_NAMES, help="transformer weights (default: bfloat16 on CUDA, else float32)"
    )
    parser.add_argument("--out", default="outputs", help="output folder (default ./outputs; created on success)")
    add_text_encoder_argument(parser)
    add_threads_argument(parser)
    add_trust_remote_code_argument(parser)
    parser.set_defaults(func=run)


def open_image(path: str, option: str):
    """The PIL image at `path`, fully read; a ValueError naming `option` if it is missing or not an image."""
    import PIL.Image

    try:
        with PIL.Image.open(Path(path).expanduser()) as image:
            image.load()
            return image
    except (OSError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"{option} {path}: cannot read it as an image ({error.__class__.__name__})") from None


def edit_pipeline(pipeline, inpaint: bool):
    """The editing twin of a loaded pipeline, sharing its components (`from_pipe`)."""
    from .. import (
        PixelGenC2IImg2ImgPipeline,
        PixelGenC2IInpaintPipeline,
        PixelGenT2IImg2ImgPipeline,
        PixelGenT2IInpaintPipeline,
    )

    if is_text_to_image(pipeline):
        cls = PixelGenT2IInpaintPipeline if inpaint else PixelGenT2IImg2ImgPipeline
    else:
        cls = PixelGenC2IInpaintPipeline if inpaint else PixelGenC2IImg2ImgPipeline
    return cls.from_pipe(pipeline)


def run(args: argparse.Namespace) -> int:
    for option, value in (("--strength", args.strength), ("--eta", args.eta)):
        if value is not None:
            check_number(option, value, minimum=0, maximum=1)
    check_number("--mask-blur", args.mask_blur, minimum=0)
    out = check_output_folder(args.out, "--out")
    image = open_image(args.image, "--image")
    mask = open_image(args.mask, "--mask") if args.mask is not None else None
    import torch

    from ..conversion.hub import load_pipeline

    device = resolve_device(args.device)
    model = args.model if args.model is not None else demo_model_dir(text_to_image=args.prompt is not None)
    pipeline = load_pipeline(model, dtype=default_dtype(args.dtype, device), trust_remote_code=args.trust_remote_code)
    text_to_image = is_text_to_image(pipeline)
    if text_to_image and args.class_label is not None:
        raise ValueError("this is a text-to-image model: use --prompt, not --class")
    if not text_to_image and args.prompt is not None:
        raise ValueError("this is a class-conditional model: use --class (a class name or id), not --prompt")
    if text_to_image and args.prompt is None:
        raise ValueError("--prompt is required for a text-to-image model")
    if not text_to_image and args.class_label is None:
        raise ValueError("--class is required for a class-conditional model")
    pipeline = edit_pipeline(pipeline.to(device), inpaint=mask is not None)
    set_threads(args.threads, pipeline)
    prepare_text_encoder(pipeline, args.text_encoder)

    if text_to_image:
        condition = {"prompt": args.prompt, "negative_prompt": args.negative_prompt}
        name = slugify(args.prompt)
    else:
        class_id = class_ids(pipeline, [args.class_label])[0]
        condition = {"class_labels": class_id}
        name = f"{class_id}-{slugify(pipeline.id2label.get(class_id, str(class_id)).split(',')[0])}"
    options = {
        "strength": args.strength,
        "eta": args.eta,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "sampling_method": args.sampler,
    }
    if mask is not None:
        options.update(mask_image=mask, mask_blur=args.mask_blur)
    options = {key: value for key, value in options.items() if value is not None}
    generators = [torch.Generator("cpu").manual_seed(args.seed + i) for i in range(args.num_images)]
    images = pipeline(
        **condition, image=image, num_images_per_prompt=args.num_images, generator=generators, **options
    ).images
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, edited in enumerate(images):
        path = out / f"edit-{name}-seed{args.seed + index}.png"
        atomic_save_image(edited, path)
        written.append(path)
    print(f"Wrote {len(written)} image{'s' * (len(written) != 1)} to {out}/: " + ", ".join(p.name for p in written))
    return 0
