# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen sample`: many images for evaluation (FID, IS, GenEval), resumable and data-parallel.

Sample i is fully determined by i: class `i % num_classes` (so every prefix of the set is class-balanced) or prompt
`i // images_per_prompt`, and its own CPU generator seeded with `seed + i`. The result is therefore independent of
the batch size and of the number of processes, and a stopped run resumes where it stopped (finished PNGs are kept;
each is written to a temporary name and renamed). With several processes (`accelerate launch` or `torchrun`),
process r takes the samples i with i % world_size == r. At the end the first process packs every PNG into
`samples.npz` (`arr_0`: uint8 NHWC, `arr_1`: class ids), the layout of the ADM evaluation suite.
"""

import argparse
import os
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from .generate import DTYPES, SAMPLERS


def sample_conditions(pipeline, num_samples: int, prompts: list[str] | None, images_per_prompt: int) -> list:
    """The condition of every sample index: a class id, or a prompt."""
    if prompts is not None:
        if not prompts:
            raise ValueError("the prompt file holds no prompts")
        return [prompts[i // images_per_prompt] for i in range(len(prompts) * images_per_prompt)]
    num_classes = pipeline.transformer.config.num_classes
    return [i % num_classes for i in range(num_samples)]


def write_png(image: PIL.Image.Image, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    image.save(temporary, format="PNG")
    os.replace(temporary, path)


def pack_npz(folder: Path, conditions: list, output: Path) -> np.ndarray:
    """Stacks sample_000000.png ... into one uint8 array (N, H, W, 3), in index order."""
    images = np.stack(
        [np.asarray(PIL.Image.open(folder / f"{i:06d}.png").convert("RGB")) for i in range(len(conditions))]
    )
    labels = np.array([c if isinstance(c, int) else -1 for c in conditions], dtype=np.int64)
    np.savez(output, arr_0=images, arr_1=labels)
    return images


def sample_many(
    pipeline,
    out_dir: str | Path,
    num_samples: int = 50_000,
    seed: int = 0,
    batch_size: int = 32,
    prompts: list[str] | None = None,
    images_per_prompt: int = 4,
    pack: bool = True,
    **call_kwargs,
) -> Path:
    """Writes sample PNGs to `out_dir` (skipping those already there) and, unless `pack=False`, `samples.npz`.
    `call_kwargs` go to the pipeline (steps, guidance, sampler...). Returns the output folder."""
    from accelerate import PartialState

    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be positive, got {num_samples} and {batch_size}")
    state = PartialState()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conditions = sample_conditions(pipeline, num_samples, prompts, images_per_prompt)
    mine = [i for i in range(len(conditions)) if i % state.num_processes == state.process_index]
    todo = [i for i in mine if not (out_dir / f"{i:06d}.png").exists()]
    key = "prompt" if prompts is not None else "class_labels"
    pipeline.set_progress_bar_config(disable=True)
    with tqdm(
        total=len(mine), initial=len(mine) - len(todo), desc="sampling", disable=not state.is_main_process
    ) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            generators = [torch.Generator("cpu").manual_seed(seed + i) for i in batch]
            images = pipeline(**{key: [conditions[i] for i in batch]}, generator=generators, **call_kwargs).images
            for i, image in zip(batch, images):
                write_png(image, out_dir / f"{i:06d}.png")
            bar.update(len(batch))
    state.wait_for_everyone()
    if pack and state.is_main_process:
        images = pack_npz(out_dir, conditions, out_dir / "samples.npz")
        print(f"Packed {len(images)} samples of {images.shape[1]}x{images.shape[2]} into {out_dir / 'samples.npz'}")
    return out_dir


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="sample many images for evaluation (resumable, multi-process)",
        description="Sample an evaluation set: class-balanced for class-to-image models, or N images per line of a "
        "prompt file for text-to-image ones. PNGs plus samples.npz (arr_0 uint8 NHWC, ADM layout). Launch with "
        "`accelerate launch -m pixelgen_diffusers.cli sample ...` or torchrun to use several GPUs.",
    )
    parser.add_argument("--model", required=True, help="folder, owner/repo or owner/repo/subfolder")
    parser.add_argument("--out", required=True, help="output folder (resumes if it holds samples already)")
    parser.add_argument("--num-samples", type=int, default=50_000, help="class-to-image set size (default 50000)")
    parser.add_argument("--prompts", help="text-to-image: a file with one prompt per line")
    parser.add_argument("--images-per-prompt", type=int, default=4, help="text-to-image: images per prompt")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward batch, per process")
    parser.add_argument("--seed", type=int, default=0, help="sample i uses a generator seeded with seed + i")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (default: the model's)")
    parser.add_argument("--sampler", choices=SAMPLERS, help="ODE solver (default: the model's)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="model dtype (default float32)")
    parser.add_argument("--no-npz", action="store_true", help="write PNGs only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from .hub import load_pipeline

    prompts = None
    if args.prompts:
        lines = Path(args.prompts).read_text(encoding="utf-8").splitlines()
        prompts = [line.strip() for line in lines if line.strip()]
    pipeline = load_pipeline(args.model, dtype=DTYPES[args.dtype]).to(PartialState().device)
    options = {
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "sampling_method": args.sampler,
    }
    options = {key: value for key, value in options.items() if value is not None}
    sample_many(
        pipeline,
        args.out,
        num_samples=args.num_samples,
        seed=args.seed,
        batch_size=args.batch_size,
        prompts=prompts,
        images_per_prompt=args.images_per_prompt,
        pack=not args.no_npz,
        **options,
    )
    return 0
