# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Definitions the tools (`generate`, `sample`, `convert`, `export`, `hub`, the CLI) share, kept in one place.

Light on purpose (standard library only): the CLI imports it before parsing, and `pixelgen --help` must not wait for
torch.
"""

import inspect


# `--dtype` names accepted by every command.
DTYPE_NAMES = ("float32", "bfloat16", "float16")
# The solvers of `PixelGenScheduler` (its `SAMPLING_METHODS`, repeated here so that parsing needs no torch; a test
# keeps the two equal).
SAMPLING_METHODS = ("heun", "euler", "adam_lm")


def torch_dtype(name: str):
    """The torch dtype of a `--dtype` name (one of `DTYPE_NAMES`)."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


# `--compile` modes of the sampling commands: the repeated blocks (diffusers' regional compile) or the whole model.
COMPILE_MODES = ("blocks", "model")


def add_sampling_speed_arguments(parser) -> None:
    """`--dtype` and `--compile`, shared by `pixelgen generate` and `pixelgen sample`."""
    parser.add_argument(
        "--dtype",
        choices=DTYPE_NAMES,
        help="transformer weights (default: bfloat16 on CUDA, float32 elsewhere); the sample and the solver stay "
        "float32 either way",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="blocks",
        choices=COMPILE_MODES,
        help="torch.compile the transformer: its repeated blocks (the default when given alone; fast to compile) or "
        "the whole model. One graph serves the whole run, guided and unguided steps alike",
    )


def default_dtype(name: str | None, device):
    """The torch dtype of a `--dtype` name, or the default for the device: bf16 weights on CUDA (what the model cards
    run), float32 elsewhere (CPUs gain little from bf16 and lose accuracy)."""
    import torch

    if name is not None:
        return torch_dtype(name)
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def compile_transformer(pipeline, mode: str | None) -> None:
    """`--compile`: compiles the pipeline's transformer in place (nothing when `mode` is None)."""
    if mode == "blocks":
        pipeline.transformer.compile_repeated_blocks(fullgraph=True)
    elif mode == "model":
        pipeline.transformer.compile(fullgraph=True)
    elif mode is not None:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")


def one_line(error: BaseException, max_length: int | None = 160) -> str:
    """An exception's message on one line (its type name if it has none), shortened to `max_length` characters, for
    quoting a library's error inside ours; `max_length=None` keeps it whole."""
    text = " ".join(str(error).split()) or type(error).__name__
    if max_length is not None and len(text) > max_length:
        text = text[: max_length - 3] + "..."
    return text


def is_text_to_image(pipeline) -> bool:
    """Text-to-image pipelines take a `prompt`; class-to-image ones take `class_labels`."""
    return "prompt" in inspect.signature(type(pipeline).__call__).parameters
