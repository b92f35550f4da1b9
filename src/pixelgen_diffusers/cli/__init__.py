# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The `pixelgen` command: a thin layer over the Python API (argument parsing, progress, one-line errors).

Each subcommand lives in its feature module, which exposes `add_parser(subparsers)`; the parser it adds sets
`func(args) -> int`. Adding a command is adding its name, module and one-line help to `COMMANDS`. Only the module of
the command being run is imported, and feature modules import torch and diffusers only when they run, so `--help` and
argument errors answer at once. A module that fails to import (a missing optional dependency, a broken install)
disables only its own command, which then reports the import error as one line.

Every failure of every command is one line on stderr and a non-zero exit status: 2 for bad input (arguments, files,
folders: ValueError), 1 for anything else (out of memory, a full disk, a library error), 130 for Ctrl-C. A
traceback is printed only with `--debug` (or `PIXELGEN_DEBUG=1`).
"""

import argparse
import errno
import importlib
import os
import sys

from ..utils import one_line


# Command name -> (the module that registers it, its one-line help for `pixelgen --help`).
COMMANDS = {
    "generate": ("pixelgen_diffusers.cli.generate", "generate images with a PixelGen model"),
    "labels": ("pixelgen_diffusers.cli.labels", "search class names (ImageNet's, or a model's) for --class"),
    "convert": (
        "pixelgen_diffusers.cli.convert",
        "convert an upstream PixelGen/JiT checkpoint into a self-contained diffusers folder",
    ),
    "export": (
        "pixelgen_diffusers.cli.export",
        "turn a saved PixelGen pipeline into a self-contained folder that loads with plain diffusers",
    ),
    "edit": (
        "pixelgen_diffusers.cli.edit",
        "edit an image with a PixelGen model: image-to-image, inpainting, outpainting",
    ),
    "push": ("pixelgen_diffusers.cli.push", "publish a converted or exported model folder to the Hugging Face Hub"),
    "sample": ("pixelgen_diffusers.cli.sample", "sample many images for evaluation (resumable, multi-process)"),
    "pack": ("pixelgen_diffusers.cli.pack", "merge the per-process shards of a `pixelgen sample` run into one npz"),
    "train": (
        "pixelgen_diffusers.cli.train",
        "train or fine-tune a class-to-image or text-to-image model on a folder of images",
    ),
    "evaluate": (
        "pixelgen_diffusers.cli.evaluate",
        "score samples as the paper does: ADM's FID, sFID, Inception Score, precision/recall",
    ),
    "sweep": (
        "pixelgen_diffusers.cli.sweep",
        "sample and evaluate a grid of settings (models/EMAs, guidance, interval, sampler, steps, cache)",
    ),
    "distill": (
        "pixelgen_diffusers.cli.distill",
        "distil a PixelGen model into a few-step student (1-8 steps, no guidance pass)",
    ),
    "eval-demo": (
        "pixelgen_diffusers.cli.eval_demo",
        "score the bundled demo models with the demo classifiers (--t2i: GenEval-style, text-to-image)",
    ),
    "demo": ("pixelgen_diffusers.cli.demo", "a web app to try a PixelGen model (needs the [demo] extra)"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (which option is wrong and where to read more), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The `pixelgen` parser. The modules of `commands` (default: every command) register their full parsers; the
    other commands are listed by name and help only, without importing anything."""
    from .. import __version__

    parser = ArgumentParser(
        prog="pixelgen",
        description="PixelGen pixel-space diffusion models in diffusers: generate, convert and export.",
        epilog="Errors are one line; --debug (or PIXELGEN_DEBUG=1) shows the full traceback.",
    )
    parser.add_argument("--version", action="version", version=f"pixelgen-diffusers {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, (module_name, help_text) in COMMANDS.items():
        if commands is not None and command not in commands:
            subparsers.add_parser(command, help=help_text, add_help=False)
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            _add_unavailable_command(subparsers, command, module_name, error)
            continue
        module.add_parser(subparsers)
    for subparser in subparsers.choices.values():  # `--debug` also after the command name
        if "--debug" not in subparser._option_string_actions:
            subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.command_parsers = subparsers.choices
    return parser


def _add_unavailable_command(subparsers, command: str, module_name: str, error: ImportError) -> None:
    """A command whose module cannot be imported: it takes any arguments and fails with the import error."""
    message = f"this command is unavailable: importing {module_name} failed: {one_line(error)}"

    def unavailable(args: argparse.Namespace) -> int:
        raise ImportError(message) from error

    parser = subparsers.add_parser(command, help=f"(unavailable: {one_line(error, 60)})", add_help=False)
    parser.set_defaults(func=unavailable, accepts_any_arguments=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The command is the first argument that is not an option (`pixelgen --version` and `--help` have none).
    command = next((argument for argument in argv if not argument.startswith("-")), None)
    parser = build_parser(commands=[command] if command in COMMANDS else [])
    try:
        args, unrecognized = parser.parse_known_args(argv)
        if unrecognized and not getattr(args, "accepts_any_arguments", False):
            command_parser = parser.command_parsers[args.command]
            command_parser.error(f"unrecognized arguments: {' '.join(unrecognized)}")  # as parse_args would
    except SystemExit as exit_request:  # a usage error (one line, status 2), --help or --version (status 0)
        return exit_request.code if isinstance(exit_request.code, int) else 2
    debug = getattr(args, "debug", False) or os.environ.get("PIXELGEN_DEBUG", "") not in ("", "0")
    try:
        if not getattr(args, "standard_library_only", False):
            _quiet_libraries()
        return args.func(args) or 0
    except KeyboardInterrupt:
        print(f"pixelgen {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # every failure is one line; the traceback only on request
        if debug:
            raise
        print(f"pixelgen {args.command}: error: {describe_error(error)}", file=sys.stderr)
        return 2 if isinstance(error, (ValueError, ImportError)) else 1


def describe_error(error: BaseException) -> str:
    """One line saying what went wrong and, where we know it, what to do."""
    torch = sys.modules.get("torch")  # only if a command loaded it
    out_of_memory = (MemoryError, torch.OutOfMemoryError) if torch is not None else (MemoryError,)
    message = one_line(error, max_length=None)
    if isinstance(error, out_of_memory):
        return f"out of memory ({message}); try a smaller --batch-size, --dtype bfloat16, or another --device"
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{message}; free some disk space (finished files are kept: rerun to resume where it stopped)"
    if isinstance(error, (ValueError, ImportError, OSError, FloatingPointError)):
        return message
    return f"{type(error).__name__}: {message} (run with --debug for the traceback)"


def _quiet_libraries() -> None:
    """Loading bars and library warnings would bury our output; sampling keeps its own progress bar. Only once a
    command runs, and not for commands that never load a model (`standard_library_only`): importing diffusers'
    logging alone takes seconds."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library_logging in (diffusers_logging, transformers_logging):
        library_logging.disable_progress_bar()
        library_logging.set_verbosity_error()
