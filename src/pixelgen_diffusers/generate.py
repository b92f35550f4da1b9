# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen generate`: images from a model folder or Hub id, written as PNGs named by class (or prompt) and seed.

Every image has its own generator seeded with `seed + index` (index counts the images of one class or prompt), so an
image depends only on its class, its seed and the sampling settings, never on the batch it was drawn in.
"""

import argparse
import inspect
import math
import re
from pathlib import Path

import torch

from .scheduling_pixelgen import SAMPLING_METHODS
from .utils import add_sampling_speed_arguments, compile_transformer, default_dtype, is_text_to_image


def demo_model_dir() -> Path:
    """The bundled demo model, used when no --model is given."""
    try:
        from .demo import model_dir

        path = Path(model_dir())
    except (ImportError, AttributeError, OSError):
        path = None
    if path is None or not (path / "model_index.json").is_file():
        raise ValueError("no --model given and the bundled demo model is not installed")
    return path


def slugify(text: str, max_length: int = 48) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")[:max_length].rstrip("_") or "image"


def class_ids(pipeline, classes: list[str]) -> list[int]:
    """Class ids for `--class` values: digits are ids, anything else a class name; duplicates are dropped."""
    ids = []
    for value in classes:
        value = value.strip()
        class_id = pipeline.get_label_ids(int(value) if value.isdigit() else value)[0]
        if class_id not in ids:
            ids.append(class_id)
    return ids


def plan_images(pipeline, args: argparse.Namespace, text_to_image: bool) -> list[dict]:
    """One entry per image: its pipeline condition, seed and file name."""
    jobs = []
    if text_to_image:
        if args.classes:
            raise ValueError("this is a text-to-image model: use --prompt, not --class")
        if not args.prompts:
            raise ValueError("--prompt is required for a text-to-image model")
        for prompt_index, prompt in enumerate(args.prompts):
            for index in range(args.num_images):
                seed = args.seed + index
                name = f"{prompt_index:02d}-{slugify(prompt)}-seed{seed}.png"
                jobs.append({"condition": prompt, "seed": seed, "file_name": name})
    else:
        if args.prompts:
            raise ValueError("this is a class-conditional model: use --class (a class name or id), not --prompt")
        if not args.classes:
            raise ValueError(
                '--class is required: a class name (e.g. --class "golden retriever") or an id (--class 207)'
            )
        for class_id in class_ids(pipeline, args.classes):
            label = pipeline.id2label.get(class_id, str(class_id)).split(",")[0]
            for index in range(args.num_images):
                seed = args.seed + index
                name = f"{class_id}-{slugify(label)}-seed{seed}.png"
                jobs.append({"condition": class_id, "seed": seed, "file_name": name})
    return jobs


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate images with a PixelGen model",
        description="Generate images with a PixelGen model folder, Hub repo or Hub subfolder (owner/repo/subfolder). "
        "Sampling settings default to the model's recommended ones.",
    )
    parser.add_argument("--model", help="folder, owner/repo or owner/repo/subfolder (default: the bundled demo model)")
    parser.add_argument(
        "--class", dest="classes", action="append", metavar="CLASS", help="class name or id; repeat for several"
    )
    parser.add_argument("--prompt", dest="prompts", action="append", help="text-to-image prompt; repeat for several")
    parser.add_argument("--negative-prompt", help="text-to-image negative prompt")
    parser.add_argument("--num-images", type=int, default=1, help="images per class or prompt (default 1)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (default: the model's)")
    parser.add_argument("--sampler", choices=SAMPLING_METHODS, help="ODE solver (default: the model's)")
    parser.add_argument(
        "--guidance-interval",
        nargs=2,
        type=float,
        metavar=("MIN", "MAX"),
        help="guide only while MIN < t <= MAX, t from 0 (noise) to 1 (image) (default: the model's)",
    )
    parser.add_argument("--timeshift", type=float, help="time-grid shift, > 0 (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed + i")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward batch (default 4)")
    add_sampling_speed_arguments(parser)
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--out", default="outputs", help="output folder (default ./outputs)")
    add_trust_remote_code_argument(parser)
    parser.set_defaults(func=run)


def add_trust_remote_code_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the code a model folder ships when it differs from the installed pixelgen-diffusers (only for "
        "folders you trust; folders with the installed code load without it)",
    )


def run(args: argparse.Namespace) -> int:
    from .hub import load_pipeline

    for option, value in (
        ("--num-images", args.num_images),
        ("--batch-size", args.batch_size),
        ("--steps", args.steps),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be a positive integer, got {value}")
    for option, value in (
        ("--guidance-scale", args.guidance_scale),
        ("--timeshift", args.timeshift),
        *(("--guidance-interval", bound) for bound in args.guidance_interval or ()),
    ):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{option} must be a finite number, got {value}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {args.device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None

    model = args.model if args.model is not None else demo_model_dir()
    dtype = default_dtype(args.dtype, device)
    pipeline = load_pipeline(model, dtype=dtype, trust_remote_code=args.trust_remote_code).to(device)
    call_parameters = inspect.signature(pipeline.__call__).parameters
    text_to_image = is_text_to_image(pipeline)
    jobs = plan_images(pipeline, args, text_to_image)

    options = {
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "sampling_method": args.sampler,
        "timeshift": args.timeshift,
        "negative_prompt": args.negative_prompt,
    }
    if args.guidance_interval is not None:
        options["guidance_interval_min"], options["guidance_interval_max"] = args.guidance_interval
    options = {key: value for key, value in options.items() if value is not None}
    unsupported = [key for key in options if key not in call_parameters]
    if unsupported:
        raise ValueError(f"this model's pipeline does not take {', '.join(unsupported)}")

    compile_transformer(pipeline, args.compile)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    num_batches = (len(jobs) + args.batch_size - 1) // args.batch_size
    for batch_index in range(num_batches):
        batch = jobs[batch_index * args.batch_size : (batch_index + 1) * args.batch_size]
        pipeline.set_progress_bar_config(desc=f"batch {batch_index + 1}/{num_batches}")
        conditions = [job["condition"] for job in batch]
        generators = [torch.Generator("cpu").manual_seed(job["seed"]) for job in batch]
        condition = {"prompt": conditions} if text_to_image else {"class_labels": conditions}
        images = pipeline(**condition, generator=generators, output_type="pil", **options).images
        for job, image in zip(batch, images):
            path = out / job["file_name"]
            image.save(path)
            written.append(path)
    print(f"Wrote {len(written)} image{'s' * (len(written) != 1)} to {out}/: " + ", ".join(p.name for p in written))
    return 0
