# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen generate`: images from a model folder or Hub id, written as PNGs named by class (or prompt) and seed.

Every image has its own generator seeded with `seed + index` (index counts the images of one class or prompt), so an
image depends only on its class, its seed and the sampling settings, never on the batch it was drawn in (up to one
uint8 level: matrix products round differently for other batch shapes; bitwise for the same --batch-size).
torch and the pipelines are imported when the command runs, after its arguments are checked.
"""

import argparse
import difflib
import hashlib
import inspect
import math
import os
import re
from pathlib import Path

from ..utils import (
    MAX_SEED,
    SAMPLING_METHODS,
    add_sampling_speed_arguments,
    atomic_save_image,
    check_hub_reachable,
    check_number,
    check_output_folder,
    cli_number,
    compile_transformer,
    default_dtype,
    is_text_to_image,
    one_line,
    resolve_device,
    sampling_options,
)


# Label sets up to this size are listed in full in `--class` errors; larger ones point to `pixelgen labels`.
LISTED_CLASSES = 30
# Below this many transformer parameters, CPU sampling defaults to one thread (see `set_threads`).
SMALL_MODEL_PARAMETERS = 50_000_000
# One `generate` call writes at most this many images; evaluation-scale sets are `pixelgen sample`'s job.
MAX_IMAGES = 100_000
POSITIVE_INTEGER = cli_number(integer=True, minimum=1)


def check_request_size(num_conditions: int, num_images: int) -> None:
    """Refuses a request too large for `generate` before any job is planned (it would build the whole list)."""
    total = num_conditions * num_images
    if total > MAX_IMAGES:
        raise ValueError(
            f"--num-images {num_images} for {num_conditions} class(es)/prompt(s) asks for {total:,} images; one "
            f"`pixelgen generate` writes at most {MAX_IMAGES:,} (use `pixelgen sample` for evaluation-scale sets)"
        )


def demo_model_dir(text_to_image: bool = False) -> Path:
    """The bundled demo model used when no --model is given: the text-to-image one for prompts, the class-to-image
    one for classes."""
    try:
        from ..demo import model_dir, t2i_model_dir

        path = Path(t2i_model_dir() if text_to_image else model_dir())
    except (ImportError, AttributeError, OSError):
        path = None
    if path is None or not (path / "model_index.json").is_file():
        kind = "text-to-image" if text_to_image else "class-to-image"
        raise ValueError(f"no --model given and the bundled demo model is not installed (the {kind} one)")
    return path


def slugify(text: str, max_length: int = 48) -> str:
    """A file-name part for `text`: its lowercased word characters (any script) joined by `_`. When that loses the
    text's identity (nothing left, as for "" or "   ", or cut at `max_length`), a short stable hash of the full text
    is added, so different prompts never share a file name."""
    words = re.sub(r"[\W_]+", "_", text.lower()).strip("_")
    slug = words[:max_length].rstrip("_")
    if slug and slug == words:
        return slug
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{slug or 'image'}_{digest}"


def class_ids(pipeline, classes: list[str]) -> list[int]:
    """Class ids for `--class` values: integers (negative ones too, which are out of range) are ids, anything else a
    class name; duplicates are dropped."""
    ids = []
    for value in classes:
        value = value.strip()
        try:
            class_id = pipeline.get_label_ids(int(value) if re.fullmatch(r"[+-]?\d+", value) else value)[0]
        except ValueError as error:
            if not str(error).startswith("Unknown class name"):
                raise
            raise ValueError(unknown_class_message(pipeline, value)) from None
        if class_id not in ids:
            ids.append(class_id)
    return ids


def unknown_class_message(pipeline, value: str) -> str:
    """An unknown `--class` name: close matches, then every name of a small label set, or for a large one the
    command that searches them."""
    names = first_names(pipeline)
    matches = difflib.get_close_matches(value, list(pipeline.labels), n=3, cutoff=0.6)
    message = f"unknown class {value!r}."
    if matches:
        message += f" Did you mean {', '.join(repr(match) for match in matches)}?"
    if len(names) <= LISTED_CLASSES:
        return f"{message} This model's classes: " + ", ".join(f"{i} {name}" for i, name in names.items())
    return f'{message} Search the {len(names)} class names with `pixelgen labels "{value}" --model MODEL`.'


def first_names(pipeline) -> dict[int, str]:
    """Class id -> the class's first-listed name."""
    return {class_id: names.split(",")[0].strip() for class_id, names in sorted(pipeline.id2label.items())}


def class_example(pipeline) -> str:
    """A `--class` example taken from the model's own labels (the demo's are shapes, not ImageNet classes)."""
    names = first_names(pipeline)
    class_id, name = next(iter(names.items()))
    example = f'a class name (e.g. --class "{name}") or an id (--class {class_id})'
    if len(names) <= LISTED_CLASSES:
        return f"{example}; this model's classes: " + ", ".join(f"{i} {name}" for i, name in names.items())
    return f"{example}; search the names with `pixelgen labels QUERY`"


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
    elif pipeline.transformer.config.num_classes == 0:
        if args.prompts or args.classes:
            raise ValueError("this is an unconditional model: drop --class and --prompt")
        for index in range(args.num_images):
            seed = args.seed + index
            jobs.append({"condition": None, "seed": seed, "file_name": f"unconditional-seed{seed}.png"})
    else:
        if args.prompts:
            raise ValueError("this is a class-conditional model: use --class (a class name or id), not --prompt")
        if not args.classes:
            raise ValueError(f"--class is required: {class_example(pipeline)}")
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
    parser.add_argument(
        "--model",
        help="folder, owner/repo or owner/repo/subfolder (default: the bundled demo model, text-to-image with"
        " --prompt, class-to-image with --class)",
    )
    condition = parser.add_mutually_exclusive_group()  # a model takes class labels or prompts, never both
    condition.add_argument(
        "--class", dest="classes", action="append", metavar="CLASS", help="class name or id; repeat for several"
    )
    condition.add_argument(
        "--prompt", dest="prompts", action="append", help="text-to-image prompt; repeat for several"
    )
    parser.add_argument("--negative-prompt", help="text-to-image negative prompt")
    parser.add_argument(
        "--num-images", type=POSITIVE_INTEGER, default=1, help="images per class or prompt (default 1)"
    )
    parser.add_argument("--steps", type=POSITIVE_INTEGER, help="sampling steps (default: the model's)")
    parser.add_argument(
        "--guidance-scale",
        type=cli_number(),
        help="classifier-free guidance scale: > 1 guides, <= 1 samples the conditional model alone (default: the "
        "model's)",
    )
    parser.add_argument("--sampler", choices=SAMPLING_METHODS, help="ODE solver (default: the model's)")
    sampling_options.add_arguments(parser)
    parser.add_argument(
        "--guidance-interval",
        nargs=2,
        type=cli_number(),
        metavar=("MIN", "MAX"),
        help="guide only while MIN < t <= MAX, t from 0 (noise) to 1 (image) (default: the model's)",
    )
    parser.add_argument(
        "--timeshift",
        type=cli_number(minimum=0, exclusive_minimum=True),
        help="time-grid shift, > 0 (default: the model's)",
    )
    parser.add_argument(
        "--seed",
        type=cli_number(integer=True, minimum=0, maximum=MAX_SEED),
        default=0,
        help="seed of the first image; image i uses seed + i",
    )
    parser.add_argument("--batch-size", type=POSITIVE_INTEGER, default=4, help="images per forward batch (default 4)")
    add_sampling_speed_arguments(parser)
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--out", default="outputs", help="output folder (default ./outputs; created on success)")
    parser.add_argument(
        "--lora",
        dest="loras",
        action="append",
        metavar="PATH[:SCALE]",
        help="a LoRA (pytorch_lora_weights.safetensors, its folder or a Hub id), optionally with a scale (default"
        " 1.0); repeat to combine several",
    )
    add_text_encoder_argument(parser)
    add_threads_argument(parser)
    add_trust_remote_code_argument(parser)
    add_quantize_argument(parser)
    parser.set_defaults(func=run)


def parse_lora(spec: str) -> tuple[str, float]:
    """`PATH[:SCALE]` -> (path, scale). A suffix that is not a number belongs to the path when it holds a path
    separator (`C:\\loras\\x`) or the whole spec exists; otherwise it was meant as a scale and is refused."""
    path, separator, scale = spec.rpartition(":")
    if separator:
        try:
            value = float(scale)
        except ValueError:
            if "/" in scale or "\\" in scale or Path(spec).expanduser().exists():
                return spec, 1.0
            raise ValueError(
                f"--lora {spec!r}: the scale after ':' must be a number (PATH[:SCALE], e.g. {path}:0.8), got {scale!r}"
            ) from None
        if not math.isfinite(value):
            raise ValueError(f"--lora {spec!r}: the scale must be a finite number, got {scale!r}")
        return path, value
    return spec, 1.0


def load_loras(pipeline, loras: list[tuple[str, float]]) -> None:
    """Loads each (path, scale) as adapter `lora_<i>` and activates them all with their scales (diffusers'
    `set_adapters`)."""
    if not hasattr(pipeline, "load_lora_weights"):
        raise ValueError(f"this model's pipeline ({type(pipeline).__name__}) has no LoRA support (load_lora_weights)")
    names, scales = [], []
    for index, (path, scale) in enumerate(loras):
        name = f"lora_{index}"
        try:
            pipeline.load_lora_weights(path, adapter_name=name)
        except ValueError as error:
            raise ValueError(f"--lora {path}: {error}") from error
        except OSError as error:
            raise ValueError(f"--lora {path}: not a LoRA file, a folder holding one, or a Hub id ({error})") from error
        names.append(name)
        scales.append(scale)
    pipeline.set_adapters(names, scales)


def add_text_encoder_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--text-encoder",
        metavar="FOLDER",
        help="text-to-image: a local copy (or Hub id) of the model's text encoder with its tokenizer, for models "
        "that do not ship one (default: the model's text_encoder_id, Qwen/Qwen3-1.7B)",
    )


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=POSITIVE_INTEGER,
        help="CPU threads for torch (default: OMP_NUM_THREADS if set; else 1 for small models such as the demo, "
        "whose work is too small to share, and torch's default for large ones)",
    )


def set_threads(threads: int | None, pipeline) -> None:
    """`--threads`: torch's intra-op threads. Without it, OMP_NUM_THREADS wins if set; otherwise small models
    (under `SMALL_MODEL_PARAMETERS`; `pipeline` is a pipeline or the model itself) use one thread: their per-step
    work is too small to split, and on a shared machine extra threads only wait for each other (the demo model: 2 s
    per image with two busy cores, 0.05 s with one)."""
    import torch

    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return
        model = getattr(pipeline, "transformer", pipeline)
        parameters = sum(parameter.numel() for parameter in model.parameters())
        if parameters >= SMALL_MODEL_PARAMETERS:
            return
        threads = 1
    torch.set_num_threads(threads)


def add_trust_remote_code_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the code a model folder ships when it differs from the installed pixelgen-diffusers (only for "
        "folders you trust; folders with the installed code load without it)",
    )


def add_quantize_argument(parser: argparse.ArgumentParser) -> None:
    from ..conversion.quantization import QUANTIZATION_CHOICES

    described = "; ".join(f"{name}: {description}" for name, (_, _, description) in QUANTIZATION_CHOICES.items())
    parser.add_argument(
        "--quantize",
        choices=tuple(QUANTIZATION_CHOICES),
        help=f"load the transformer (and a shipped text encoder) quantized ({described}); needs the [quantization]"
        " extra",
    )


def load_model(model, dtype, device, args: argparse.Namespace):
    """The pipeline `--model` names, in `dtype`, quantized as `--quantize` asks (refused before loading if its
    backend is missing or needs another device)."""
    from ..conversion.hub import load_pipeline
    from ..conversion.quantization import load_quantized

    if getattr(args, "quantize", None):
        return load_quantized(model, args.quantize, device, dtype=dtype, trust_remote_code=args.trust_remote_code)
    return load_pipeline(model, dtype=dtype, trust_remote_code=args.trust_remote_code)


def run(args: argparse.Namespace) -> int:
    for option, value in (
        ("--num-images", args.num_images),
        ("--batch-size", args.batch_size),
        ("--steps", args.steps),
        ("--threads", args.threads),
    ):
        if value is not None:
            check_number(option, value, integer=True, minimum=1)
    for option, value in (
        ("--guidance-scale", args.guidance_scale),
        ("--timeshift", args.timeshift),
        *(("--guidance-interval", bound) for bound in args.guidance_interval or ()),
    ):
        if value is not None:
            check_number(option, value)
    check_request_size(len(args.prompts or []) + len(args.classes or []) or 1, args.num_images)
    sampling_options.check_arguments(args)
    loras = [parse_lora(spec) for spec in args.loras or []]
    for path, _ in loras:
        check_hub_reachable(path, "--lora")
    out = check_output_folder(args.out, "--out")
    import torch

    device = resolve_device(args.device)

    model = args.model if args.model is not None else demo_model_dir(text_to_image=bool(args.prompts))
    dtype = default_dtype(args.dtype, device)
    pipeline = load_model(model, dtype, device, args).to(device)
    set_threads(args.threads, pipeline)
    if loras:
        load_loras(pipeline, loras)
    call_parameters = inspect.signature(pipeline.__call__).parameters
    text_to_image = is_text_to_image(pipeline)
    jobs = plan_images(pipeline, args, text_to_image)
    prepare_text_encoder(pipeline, args.text_encoder)

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
    key = "prompt" if text_to_image else "class_labels"
    condition = jobs[0]["condition"]  # None: an unconditional model, which takes no labels
    calibration = {
        key: [condition] if condition is not None else None,
        "generator": torch.Generator("cpu").manual_seed(jobs[0]["seed"]),
    }
    sampling_options.apply_arguments(pipeline, args, options, calibration)

    compile_transformer(pipeline, args.compile)
    written = []
    num_batches = (len(jobs) + args.batch_size - 1) // args.batch_size
    for batch_index in range(num_batches):
        batch = jobs[batch_index * args.batch_size : (batch_index + 1) * args.batch_size]
        pipeline.set_progress_bar_config(desc=f"batch {batch_index + 1}/{num_batches}")
        conditions = [job["condition"] for job in batch]
        generators = [torch.Generator("cpu").manual_seed(job["seed"]) for job in batch]
        if text_to_image:
            condition = {"prompt": conditions}
        elif conditions[0] is None:  # an unconditional model: one null condition, an image per generator
            condition = {"class_labels": None, "num_images_per_prompt": len(batch)}
        else:
            condition = {"class_labels": conditions}
        images = pipeline(**condition, generator=generators, output_type="pil", **options).images
        out.mkdir(parents=True, exist_ok=True)  # only once there is something to write: a failed run leaves none
        for job, image in zip(batch, images):
            path = out / job["file_name"]
            atomic_save_image(image, path)
            written.append(path)
    print(f"Wrote {len(written)} image{'s' * (len(written) != 1)} to {out}/: " + ", ".join(p.name for p in written))
    return 0


def prepare_text_encoder(pipeline, text_encoder: str | None) -> None:
    """`--text-encoder`: a text-to-image pipeline without its encoder loads it now (from `text_encoder`, else the
    model's `text_encoder_id`), before any output is written, with an error that names the CLI's remedy."""
    if not is_text_to_image(pipeline):
        if text_encoder is not None:
            raise ValueError("--text-encoder is for text-to-image models; this one is class-conditional")
        return
    if text_encoder is None and pipeline.text_encoder is not None:
        return
    source = text_encoder or pipeline.config.get("text_encoder_id")
    if source is None:
        raise ValueError(
            "this text-to-image model needs its text encoder, and its folder neither ships one nor records where to"
            " load it from (text_encoder_id is null); pass --text-encoder FOLDER, the encoder with its tokenizer"
        )
    try:
        check_hub_reachable(source, "--text-encoder" if text_encoder is not None else "text_encoder_id")
        check_hub_online(source)
    except ValueError as error:
        raise ValueError(
            f"this text-to-image model needs its text encoder, and loading it from {source!r} failed ({error});"
            " pass --text-encoder FOLDER, a local copy of the encoder with its tokenizer"
        ) from None
    try:
        pipeline.load_text_encoder(text_encoder)
    except ValueError as error:
        cause = error.__cause__ if error.__cause__ is not None else error
        raise ValueError(
            f"this text-to-image model needs its text encoder, and loading it from {source!r} failed"
            f" ({type(cause).__name__}: {one_line(cause)}); pass --text-encoder FOLDER, a local copy of the encoder"
            " with its tokenizer"
        ) from error


def check_hub_online(source: str) -> None:
    """An encoder named by a Hub id that is not in the local cache must be downloaded: one quick request first
    (huggingface_hub's `model_info`, no retries), so that an unreachable Hub is one line with the remedy at once,
    not a minute of download retries."""
    if Path(source).expanduser().exists() or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in (
        "1",
        "ON",
        "YES",
        "TRUE",
    ):
        return  # a local folder, or offline: check_hub_reachable has decided
    import huggingface_hub

    repo_id = "/".join(str(source).split("/")[:2])
    try:
        huggingface_hub.snapshot_download(repo_id, local_files_only=True)
        return  # cached
    except Exception:
        pass
    try:
        huggingface_hub.model_info(repo_id, timeout=10)
    except Exception as error:
        raise ValueError(
            f"{source} is not in the local cache and the Hub cannot be reached ({type(error).__name__}:"
            f" {one_line(error, 100)}); download it first: hf download {repo_id}"
        ) from None
