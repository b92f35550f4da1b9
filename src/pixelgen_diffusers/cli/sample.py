# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen sample`: many images for evaluation (FID, IS, GenEval), resumable and data-parallel.

Sample i is fully determined by i: class `i % num_classes` (so every prefix of the set is class-balanced) or prompt
`i // images_per_prompt`, and its own CPU generator seeded with `seed + i`. The result is therefore bitwise the same
for the same batch size and number of processes, and within one uint8 level for any others (matrix products round
differently for other batch shapes). A stopped run resumes where it stopped: finished PNGs are kept (each is written
atomically; a file cut short otherwise is detected and drawn again), and the output folder is locked against a
second run. With several processes (`torchrun`, `accelerate launch`; on one machine or several, GPUs or CPUs over
gloo), process r takes the samples i with i % world_size == r. At the end the first process packs every PNG into
`samples.npz` (`arr_0`: uint8 NHWC, `arr_1`: class ids), the layout of the ADM evaluation suite; where the processes
do not share one folder (nodes without a shared filesystem), each packs its share as `samples.rank{r}.npz` and
`pixelgen pack` merges them (docs/scaling.md).

Text-to-image seeds count over the whole set (`seed + i`), so no two images share a noise. Upstream's GenEval
instead seeds image k of every prompt with k (0..3): `seed_per_prompt=True` (`--seed-per-prompt`) seeds it with
`seed + k`, which with seed 0 reproduces that convention.

The first run records its settings in `sampling_config.json`, as the effective values (the model's defaults filled
in, so passing a default explicitly is the same run); a later run into the same folder must have the same ones, so a
resumed run never mixes two sample sets. A class-to-image set grows: a larger `num_samples` adds the missing indices
(sample i does not depend on the set size); a smaller one packs the first `num_samples`.
"""

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
from tqdm.auto import tqdm

from ..utils import (
    MAX_SEED,
    SAMPLING_METHODS,
    add_sampling_speed_arguments,
    atomic_save_image,
    atomic_write,
    atomic_write_json,
    check_number,
    check_output_folder,
    cli_number,
    compile_transformer,
    default_dtype,
    is_text_to_image,
    one_line,
    sampling_options,
)
from ..utils.distributed import check_same_settings, gather_objects, launch_state, locked_shared_folder, raise_together
from .generate import (
    add_quantize_argument,
    add_text_encoder_argument,
    add_threads_argument,
    add_trust_remote_code_argument,
    demo_model_dir,
    load_model,
    prepare_text_encoder,
    set_threads,
)


CONFIG_FILE = "sampling_config.json"
# Settings that grow with the set rather than define it: a run may extend (or pack a prefix of) a recorded set.
GROWING_SETTINGS = ("num_samples",)
# What a run records about how it ran, not about the set: never compared.
RUN_RECORDS = ("processes",)
# The pipeline's and the scheduler's recommended settings, filled in where a run does not override them.
PIPELINE_DEFAULTS = ("num_inference_steps", "guidance_scale", "guidance_interval_min", "guidance_interval_max")
PIPELINE_DEFAULTS += ("noise_scale",)
SCHEDULER_DEFAULTS = ("sampling_method", "timeshift", "solver_order")
# Sample files are named by a six-digit index (000000.png ...), so one set holds at most a million samples.
MAX_SAMPLES = 1_000_000
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last chunk of every complete PNG file


def check_sizes(num_samples: int, batch_size: int, images_per_prompt: int, num_prompts: int | None = None) -> None:
    """Refuses impossible or too large requests before any work (nothing is planned or loaded first)."""
    for name, value in (
        ("num_samples", num_samples),
        ("batch_size", batch_size),
        ("images_per_prompt", images_per_prompt),
    ):
        option = "--" + name.replace("_", "-")
        check_number(f"{name} ({option})", value, integer=True, minimum=1)
    total = num_samples if num_prompts is None else num_prompts * images_per_prompt
    if total > MAX_SAMPLES:
        what = "--num-samples" if num_prompts is None else f"{num_prompts:,} prompts x --images-per-prompt"
        raise ValueError(f"{what} asks for {total:,} samples; one sample set holds at most {MAX_SAMPLES:,}")


def is_complete_png(path: Path) -> bool:
    """Whether a sample file ends with PNG's final chunk (a file cut short by a crash or a full disk does not)."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            if file.tell() < len(PNG_END):
                return False
            file.seek(-len(PNG_END), os.SEEK_END)
            return file.read() == PNG_END
    except OSError:
        return False


def remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files of a run that was killed mid-write (only ours, under the lock; links are removed, never
    followed)."""
    for path in out_dir.glob(".*.tmp"):
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)


def sample_conditions(pipeline, num_samples: int, prompts: list[str] | None, images_per_prompt: int) -> list:
    """The condition of every sample index: a class id, or a prompt."""
    if is_text_to_image(pipeline):
        if prompts is None:
            raise ValueError("this is a text-to-image model: it needs prompts (--prompts, one prompt per line)")
        if not prompts:
            raise ValueError("the prompt file holds no prompts")
        return [prompts[i // images_per_prompt] for i in range(len(prompts) * images_per_prompt)]
    if prompts is not None:
        raise ValueError(
            "this is a class-conditional model: prompts (--prompts) are for text-to-image models; it samples "
            "num_samples (--num-samples) class-balanced images"
        )
    num_classes = pipeline.transformer.config.num_classes
    if num_classes == 0:  # an unconditional model (`train --unconditional`): every sample is of the null class
        return [None] * num_samples
    return [i % num_classes for i in range(num_samples)]


def check_call_options(pipeline, call_kwargs: dict) -> None:
    """The pipeline's own checks of the sampling numbers and scheduler options, before anything is recorded."""
    names = ("num_inference_steps", "guidance_scale", "guidance_interval_min", "guidance_interval_max", "noise_scale")
    if hasattr(pipeline, "check_sampling_defaults"):
        pipeline.check_sampling_defaults(*(call_kwargs.get(name, getattr(pipeline.config, name)) for name in names))
    if hasattr(pipeline.scheduler, "check_options"):
        options = ("sampling_method", "timeshift", "solver_order")
        pipeline.scheduler.check_options(**{name: call_kwargs[name] for name in options if name in call_kwargs})


def sampling_config(
    pipeline,
    model: str | None,
    num_samples: int,
    seed: int,
    prompts: list[str] | None,
    images_per_prompt: int,
    seed_per_prompt: bool,
    call_kwargs: dict,
) -> dict:
    """Every setting that decides the sample set (not the batch size or process count), as JSON reads it back: the
    effective ones, the model's defaults filled in for every setting the call leaves unset."""
    config = {"model": model, "dtype": str(pipeline.transformer.dtype).removeprefix("torch."), "seed": seed}
    if prompts is None:
        config["num_samples"] = num_samples
    else:
        config["num_prompts"] = len(prompts)
        config["prompts_sha256"] = hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()
        config["images_per_prompt"] = images_per_prompt
        config["seed_per_prompt"] = seed_per_prompt
    effective = {name: pipeline.config[name] for name in PIPELINE_DEFAULTS if name in pipeline.config}
    effective |= {
        name: pipeline.scheduler.config[name] for name in SCHEDULER_DEFAULTS if name in pipeline.scheduler.config
    }
    effective |= call_kwargs
    config.update(sorted(effective.items()))
    if not hasattr(pipeline.scheduler, "guidance_mask"):  # a stock scheduler in place of PixelGenScheduler
        config["scheduler"] = {"class": type(pipeline.scheduler).__name__, **pipeline.scheduler.config}
    if getattr(pipeline.transformer, "_cache_config", None) is not None:
        cache = pipeline.transformer._cache_config  # its settings; callbacks (clocks) are not settings
        settings = {field.name: getattr(cache, field.name) for field in dataclasses.fields(cache)}
        config["cache"] = {"class": type(cache).__name__} | {k: v for k, v in settings.items() if not callable(v)}
    return json.loads(json.dumps(config, default=repr))


def check_sampling_config(out_dir: Path, config: dict, state, leader: bool) -> None:
    """Records `config` in a new output folder, or checks that it equals the one recorded there (a larger
    `num_samples` is recorded instead: the set grows). A record beside no samples (a run that failed before its first
    sample) binds nothing and is replaced. The `leader` of the processes that see this folder writes, between
    barriers, and an error of any process is raised on every process, so all of them fail together or none does."""
    path = out_dir / CONFIG_FILE
    recorded_before = path.is_file()
    has_samples = any(out_dir.glob("[0-9]*.png"))
    error = None
    if not recorded_before and has_samples:
        error = f"{out_dir} holds samples but no {CONFIG_FILE}, so their settings are unknown; use a new --out folder"
    raise_together(state, error)  # also a barrier: nobody writes before every process has looked
    if leader and not (recorded_before and has_samples):
        try:
            atomic_write_json(path, config)
        except OSError as write_error:
            error = one_line(write_error)
    raise_together(state, error)
    try:
        recorded = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as read_error:
        recorded, error = {}, f"cannot read {path}: {one_line(read_error)}"
    if error is None and not isinstance(recorded, dict):
        kind, recorded = type(recorded).__name__, {}
        error = (
            f"{path} holds a JSON {kind}, not the settings object that `pixelgen sample` records; the samples"
            " beside it are not from `pixelgen sample`: use a new --out folder"
        )
    differing = [
        f"{key} (recorded {_describe(recorded, key)}, now {_describe(config, key)})"
        for key in [*recorded, *(key for key in config if key not in recorded)]
        if recorded.get(key, ...) != config.get(key, ...) and key not in GROWING_SETTINGS + RUN_RECORDS
    ]
    if differing and error is None:
        error = (
            f"{out_dir} holds samples made with other settings: {', '.join(differing)}; resume with the recorded "
            "settings or use a new --out folder"
        )
    raise_together(state, error)  # every process has read the record before it is replaced
    grows = config.get("num_samples", 0) > recorded.get("num_samples", 0)
    if grows and leader:
        atomic_write_json(path, {**recorded, "num_samples": config["num_samples"]})
    state.wait_for_everyone()


def record_processes(out_dir: Path, counts: list[int]) -> None:
    """Adds the process count and each process's share of the set to the folder's record (not a setting of the set:
    a run may resume with another number of processes)."""
    path = out_dir / CONFIG_FILE
    recorded = json.loads(path.read_text())
    atomic_write_json(path, {**recorded, "processes": {"world_size": len(counts), "samples_per_process": counts}})


def _describe(config: dict, key: str) -> str:
    return repr(config[key]) if key in config else "unset"


def write_npz(output: Path, arrays: dict) -> None:
    """`np.savez`'s format (an uncompressed zip of .npy files, what `np.load` reads), written atomically and with a
    fixed timestamp in every zip entry: equal arrays give equal bytes, so two runs' files can be compared as files."""
    with atomic_write(output) as file, zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(entry, "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, np.asanyarray(array), allow_pickle=False)


def pack_npz(
    folder: Path, conditions: list, output: Path, indices: list[int] | None = None, extra: dict | None = None
) -> np.ndarray:
    """Reads the samples `indices` (default: all, 000000.png ...) into one uint8 array (N, H, W, 3), in that order,
    and writes it with their class ids as `output` (`arr_0`, `arr_1`: ADM's layout; `extra` arrays beside them). The
    array is allocated once and filled image by image, so packing 50k samples needs the memory of the array, not
    twice that."""
    indices = range(len(conditions)) if indices is None else indices
    with PIL.Image.open(folder / f"{indices[0]:06d}.png") as image:
        width, height = image.size
    images = np.empty((len(indices), height, width, 3), dtype=np.uint8)
    for row, i in enumerate(indices):
        path = folder / f"{i:06d}.png"
        try:
            with PIL.Image.open(path) as image:
                if image.size != (width, height):
                    raise ValueError(f"{path} is {image.width}x{image.height}, but the first is {width}x{height}")
                images[row] = np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError) as error:  # PIL reports damaged files as either
            raise ValueError(
                f"cannot read sample {path} ({one_line(error)}); delete it and rerun to draw it again"
            ) from None
    labels = np.array([conditions[i] if isinstance(conditions[i], int) else -1 for i in indices], dtype=np.int64)
    write_npz(output, {"arr_0": images, "arr_1": labels, **(extra or {})})  # never a partial file
    return images


def shard_name(rank: int) -> str:
    return f"samples.rank{rank}.npz"


def sample_many(
    pipeline,
    out_dir: str | Path,
    num_samples: int = 50_000,
    seed: int = 0,
    batch_size: int = 32,
    prompts: list[str] | None = None,
    images_per_prompt: int = 4,
    pack: bool = True,
    seed_per_prompt: bool = False,
    model: str | None = None,
    **call_kwargs,
) -> Path:
    """Writes sample PNGs to `out_dir` (skipping those already there) and, unless `pack=False`, `samples.npz`.

    Args:
        prompts: text-to-image models only (required there): `images_per_prompt` samples of each.
        seed_per_prompt: text-to-image only; image k of every prompt uses `seed + k` instead of `seed + i`.
        model: the model's id or folder, recorded in `sampling_config.json` (default: `pipeline.name_or_path`).
        call_kwargs: go to the pipeline (steps, guidance, sampler...).
    Returns:
        The output folder.
    """
    check_sizes(num_samples, batch_size, images_per_prompt, len(prompts) if prompts is not None else None)
    check_number("seed (--seed)", seed, integer=True, minimum=0)
    conditions = sample_conditions(pipeline, num_samples, prompts, images_per_prompt)
    if seed_per_prompt and prompts is None:
        raise ValueError("seed_per_prompt (--seed-per-prompt) is for text-to-image models, which sample prompts")
    check_call_options(pipeline, call_kwargs)
    model = model if model is not None else getattr(pipeline, "name_or_path", None)
    if model is not None and Path(model).exists():
        model = str(Path(model).resolve())
    config = sampling_config(
        pipeline, model, num_samples, seed, prompts, images_per_prompt, seed_per_prompt, call_kwargs
    )

    state = launch_state()
    rank, world_size = state.process_index, state.num_processes
    if len(conditions) < world_size:  # alike on every process: all of them stop
        raise ValueError(
            f"the set holds {len(conditions)} samples, fewer than the {world_size} processes; launch at most "
            f"{len(conditions)} processes"
        )
    check_same_settings(state, {**config, "batch_size": batch_size, "pack": pack})
    with locked_shared_folder(out_dir, "sample", state) as view:
        out_dir = view.folder
        if view.leader:
            remove_stale_temporaries(out_dir)
            for stale in out_dir.glob(shard_name("*")):  # shards of an earlier run are written again at the end
                stale.unlink()
        check_sampling_config(out_dir, config, state, view.leader)
        key = "prompt" if prompts is not None else "class_labels"
        seeds = [seed + (i % images_per_prompt if seed_per_prompt else i) for i in range(len(conditions))]
        mine = list(range(rank, len(conditions), world_size))  # sample i is drawn by process i % world_size
        draw_missing_samples(
            pipeline, out_dir, key, conditions, seeds, mine, batch_size, call_kwargs, state.is_main_process
        )
        counts = gather_objects(state, len(mine))
        if view.leader:
            record_processes(out_dir, counts)
        if world_size > 1:
            print(f"Process {rank} of {world_size}: {len(mine)} samples in {out_dir}", flush=True)
        state.wait_for_everyone()
        if state.is_main_process:
            print(f"Drew {len(conditions)} samples on {world_size} process{'es' if world_size > 1 else ''}")
        if pack and view.shared:
            if state.is_main_process:
                images = pack_npz(out_dir, conditions, out_dir / "samples.npz")
                shape = f"{images.shape[1]}x{images.shape[2]}"
                print(f"Packed {len(images)} samples of {shape} into {out_dir / 'samples.npz'}")
        elif pack:  # no folder holds every sample: each process packs its own share, `pixelgen pack` merges them
            settings = json.dumps(config, sort_keys=True)
            run = {"indices": np.array(mine, dtype=np.int64), "settings": np.array(settings)}
            run |= {"rank": np.array(rank), "world_size": np.array(world_size)}
            run["num_samples"] = np.array(len(conditions))
            pack_npz(out_dir, conditions, out_dir / shard_name(rank), indices=mine, extra=run)
            state.wait_for_everyone()
            if state.is_main_process:
                print(
                    f"The output folder is not shared by the processes (separate folders for {view.describe()}): "
                    f"each process wrote its share as {shard_name('R')} into its folder; merge them with "
                    "`pixelgen pack FOLDER_OR_SHARD ... --out samples.npz`"
                )
        state.wait_for_everyone()
    return out_dir


def draw_missing_samples(
    pipeline,
    out_dir: Path,
    key: str,
    conditions: list,
    seeds: list[int],
    mine: list[int],
    batch_size: int,
    call_kwargs: dict,
    show_progress: bool = True,
) -> None:
    """Draws the samples `mine` that are missing or incomplete in `out_dir`; sample i is the pipeline called with
    `{key: conditions[i]}` and a generator seeded with `seeds[i]`."""
    import torch

    existing = [i for i in mine if (out_dir / f"{i:06d}.png").exists()]
    damaged = [i for i in existing if not is_complete_png(out_dir / f"{i:06d}.png")]
    if damaged:
        names = ", ".join(f"{i:06d}.png" for i in damaged[:5]) + (", ..." if len(damaged) > 5 else "")
        print(f"Drawing again {len(damaged)} incomplete sample file(s) in {out_dir}: {names}", file=sys.stderr)
    todo = sorted(set(mine) - set(existing) | set(damaged))
    pipeline.set_progress_bar_config(disable=True)
    with tqdm(total=len(mine), initial=len(mine) - len(todo), desc="sampling", disable=not show_progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            generators = [torch.Generator("cpu").manual_seed(seeds[i]) for i in batch]
            if conditions[batch[0]] is None:  # unconditional: the pipeline takes no labels, only a batch size
                condition = {"num_images_per_prompt": len(batch)}
            else:
                condition = {key: [conditions[i] for i in batch]}
            images = pipeline(**condition, generator=generators, **call_kwargs).images
            for i, image in zip(batch, images):
                atomic_save_image(image, out_dir / f"{i:06d}.png")
            bar.update(len(batch))


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="sample many images for evaluation (resumable, multi-process)",
        description="Sample an evaluation set: class-balanced for class-to-image models, or N images per line of a "
        "prompt file for text-to-image ones. PNGs plus samples.npz (arr_0 uint8 NHWC, ADM layout). Launch with "
        "`accelerate launch -m pixelgen_diffusers.cli sample ...` or torchrun to use several GPUs.",
    )
    parser.add_argument("--model", help="folder, owner/repo or owner/repo/subfolder (default: the bundled demo model)")
    parser.add_argument("--out", required=True, help="output folder (resumes if it holds samples already)")
    parser.add_argument(
        "--num-samples",
        type=cli_number(integer=True, minimum=1),
        help="class-to-image set size (default 50000); a larger one extends a finished set. Not with --prompts: a"
        " text-to-image set holds --images-per-prompt images per prompt",
    )
    parser.add_argument("--prompts", help="text-to-image: a file with one prompt per line")
    parser.add_argument(
        "--images-per-prompt",
        type=cli_number(integer=True, minimum=1),
        help="text-to-image (with --prompts): images per prompt (default 4)",
    )
    parser.add_argument(
        "--batch-size",
        type=cli_number(integer=True, minimum=1),
        default=32,
        help="images per forward batch, per process",
    )
    parser.add_argument(
        "--seed",
        type=cli_number(integer=True, minimum=0, maximum=MAX_SEED),
        default=0,
        help="sample i uses a generator seeded with seed + i",
    )
    parser.add_argument(
        "--seed-per-prompt",
        action="store_true",
        help="text-to-image: image k of every prompt uses seed + k (upstream GenEval's convention with seed 0)",
    )
    parser.add_argument(
        "--steps", type=cli_number(integer=True, minimum=1), help="sampling steps (default: the model's)"
    )
    parser.add_argument(
        "--guidance-scale",
        type=cli_number(),
        help="classifier-free guidance scale: > 1 guides, <= 1 samples the conditional model alone (default: the "
        "model's)",
    )
    parser.add_argument("--sampler", choices=SAMPLING_METHODS, help="ODE solver (default: the model's)")
    sampling_options.add_arguments(parser)
    add_sampling_speed_arguments(parser)
    parser.add_argument("--no-npz", action="store_true", help="write PNGs only")
    add_text_encoder_argument(parser)
    add_threads_argument(parser)
    add_trust_remote_code_argument(parser)
    add_quantize_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        check_number("--threads", args.threads, integer=True, minimum=1)
    sampling_options.check_arguments(args)
    if args.prompts and args.num_samples is not None:
        raise ValueError(
            "--num-samples sizes class-to-image sets; a --prompts set holds --images-per-prompt images per prompt"
            " (default 4): drop --num-samples"
        )
    if not args.prompts and args.images_per_prompt is not None:
        raise ValueError("--images-per-prompt needs --prompts (class-to-image sets are sized by --num-samples)")
    args.num_samples = 50_000 if args.num_samples is None else args.num_samples
    args.images_per_prompt = 4 if args.images_per_prompt is None else args.images_per_prompt
    import torch

    prompts = None
    if args.prompts:
        try:
            lines = Path(args.prompts).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read --prompts {args.prompts}: {one_line(error)}") from None
        prompts = [line.strip() for line in lines if line.strip()]
    check_sizes(args.num_samples, args.batch_size, args.images_per_prompt, len(prompts) if prompts else None)
    out = check_output_folder(args.out, "--out")
    model = args.model if args.model is not None else str(demo_model_dir(text_to_image=bool(args.prompts)))
    device = launch_state().device  # joins the launcher's processes first
    pipeline = load_model(model, default_dtype(args.dtype, device), device, args).to(device)
    set_threads(args.threads, pipeline)
    prepare_text_encoder(pipeline, args.text_encoder)
    compile_transformer(pipeline, args.compile)
    options = {
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "sampling_method": args.sampler,
    }
    options = {key: value for key, value in options.items() if value is not None}
    calibration = {"prompt": prompts[:1]} if prompts is not None else {"class_labels": [0]}
    if prompts is None and getattr(pipeline.transformer.config, "num_classes", None) == 0:
        calibration = {"class_labels": None}  # an unconditional model takes no labels
    sampling_options.apply_arguments(
        pipeline, args, options, {**calibration, "generator": torch.Generator().manual_seed(args.seed)}
    )
    with _sample_remedies():
        sample_many(
            pipeline,
            out,
            num_samples=args.num_samples,
            seed=args.seed,
            batch_size=args.batch_size,
            prompts=prompts,
            images_per_prompt=args.images_per_prompt,
            pack=not args.no_npz,
            seed_per_prompt=args.seed_per_prompt,
            model=model,
            **options,
        )
    return 0


@contextlib.contextmanager
def _sample_remedies():
    """The pipelines name `generate`'s remedies; `sample` keeps the model's guidance interval (it takes no
    `--guidance-interval`), so its own remedy replaces them."""
    try:
        yield
    except ValueError as error:
        if "`--guidance-interval -1 1`" not in str(error):
            raise
        raise ValueError(
            "--cache faster needs every step guided, but this model's recipe (its guidance_scale and guidance"
            " interval) leaves some steps unguided, and `pixelgen sample` keeps the recipe; choose another --cache"
            " (e.g. first-block), or sample with `pixelgen generate --cache faster --guidance-interval -1 1`"
        ) from error
