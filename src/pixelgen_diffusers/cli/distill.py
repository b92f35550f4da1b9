# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen distill`: a PixelGen model into a few-step student (1-8 Euler steps, guidance distilled in)."""

import argparse
import dataclasses
from pathlib import Path

from ..utils import check_output_folder, cli_number


def add_parser(subparsers) -> None:
    """Registers `pixelgen distill`."""
    parser = subparsers.add_parser(
        "distill",
        help="distil a PixelGen model into a few-step student (1-8 steps, no guidance pass)",
        description="Distil a PixelGen folder (class-to-image or text-to-image) into a student that samples in"
        " --steps Euler steps with the teacher's guidance built in: the teacher's trajectories are computed once"
        " (cached in OUTPUT_DIR), the student learns to land on them, and OUTPUT_DIR/student is a self-contained"
        " pipeline folder whose recipe is its step count. Resumable (--resume latest); multi-GPU with `accelerate"
        " launch -m pixelgen_diffusers.cli distill ...`. See docs/distillation.md.",
        argument_default=argparse.SUPPRESS,  # only the options given are passed on
    )
    arg = parser.add_argument
    arg("teacher", help="PixelGen pipeline folder or Hub id")
    arg("output_dir", help="checkpoints, the trajectory cache and the final student (OUTPUT_DIR/student)")
    arg("--steps", dest="num_inference_steps", metavar="K", type=cli_number(integer=True, minimum=1, maximum=8),
        help="the student's sampling steps, 1-8 (default 4)")  # fmt: skip
    arg("--guidance-scale", type=cli_number(), help="teacher guidance to distil in (default: the teacher's recipe)")
    arg("--teacher-steps", type=cli_number(integer=True, minimum=1),
        help="teacher ODE steps per trajectory, a multiple of --steps (default: its recipe's rounded up)")  # fmt: skip
    arg("--teacher-sampling-method", choices=("heun", "euler", "adam_lm"), help="default: the teacher's recipe")
    arg("--num-trajectories", type=cli_number(integer=True, minimum=1), help="teacher trajectories (default 2048)")
    arg("--prompts", help="text-to-image: a text file of prompts to distil on, one per line")
    arg("--trajectory-cache", help="the teacher trajectories' file, to share between students of one teacher"
        " (default: OUTPUT_DIR/teacher_trajectories.safetensors)")  # fmt: skip
    arg("--teacher-batch-size", type=cli_number(integer=True, minimum=1))
    arg("--max-steps", type=cli_number(integer=True, minimum=1))
    arg("--batch-size", type=cli_number(integer=True, minimum=1), help="per process")
    arg("--learning-rate", type=cli_number(minimum=0, exclusive_minimum=True))
    arg("--weight-decay", type=cli_number(minimum=0))
    arg("--max-grad-norm", type=cli_number(minimum=0), help="0 disables clipping")
    arg("--ema-decay", type=cli_number(minimum=0, maximum=1), help="default 0.99")
    arg("--lora-rank", type=cli_number(integer=True, minimum=1),
        help="train a LoRA adapter on the frozen teacher; the student holds it fused, and as an adapter")  # fmt: skip
    arg("--lora-alpha", type=cli_number(minimum=0, exclusive_minimum=True))
    arg("--lora-target-modules", nargs="+")
    arg("--mixed-precision", choices=("auto", "no", "bf16", "fp16"))
    arg("--seed", type=cli_number(integer=True, minimum=0))
    arg("--log-every", type=cli_number(integer=True, minimum=1))
    arg("--checkpoint-every", type=cli_number(integer=True, minimum=1))
    arg("--checkpoints-total-limit", type=cli_number(integer=True, minimum=1))
    arg("--resume", help="'latest' (in OUTPUT_DIR) or a checkpoint folder")
    parser.set_defaults(func=run)


def read_prompts(path: str) -> list[str]:
    try:
        prompts = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--prompts {path}: cannot read it ({error.__class__.__name__}: {error})") from None
    if not prompts:
        raise ValueError(f"--prompts {path} holds no prompt; accepted: a text file with one prompt per line")
    return prompts


def run(args: argparse.Namespace) -> int:
    from ..training.distill import DistillationConfig, distill

    names = {config_field.name for config_field in dataclasses.fields(DistillationConfig)}
    given = {name: value for name, value in vars(args).items() if name in names}
    given["output_dir"] = str(check_output_folder(given["output_dir"], "OUTPUT_DIR"))
    if "prompts" in given:
        given["prompts"] = read_prompts(given["prompts"])
    student = distill(DistillationConfig(**given))
    print(f"Student: {student}")
    return 0
