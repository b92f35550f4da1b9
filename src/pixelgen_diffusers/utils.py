# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Definitions the tools (`generate`, `sample`, `convert`, `export`, `hub`, the CLI) share, kept in one place."""

import inspect

import torch


# `--dtype` names accepted by every command.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
