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
