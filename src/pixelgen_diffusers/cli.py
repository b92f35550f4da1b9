# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The `pixelgen` command: a thin layer over the Python API (argument parsing, progress, one-line errors).

Each subcommand lives in its feature module, which exposes `add_parser(subparsers)`; the parser it adds sets
`func(args) -> int`. Adding a command is adding its name and module to `COMMAND_MODULES`. A module that fails to
import (a missing optional dependency, a broken install) disables only its own command, which then reports the import
error as one line.

Every failure of every command is one line on stderr and a non-zero exit status: 2 for bad input (arguments, files,
folders: ValueError), 1 for anything else (out of memory, a full disk, a library error), 130 for Ctrl-C. A
traceback is printed only with `--debug` (or `PIXELGEN_DEBUG=1`).
"""

import argparse
import errno
import importlib
import os
import sys

from .utils import one_line


# Command name -> the module that registers it.
COMMAND_MODULES = {
    "generate": "pixelgen_diffusers.generate",
    "convert": "pixelgen_diffusers.convert",
    "export": "pixelgen_diffusers.export",
    "sample": "pixelgen_diffusers.sample",
    "train": "pixelgen_diffusers.training.trainer",
    "eval-demo": "pixelgen_diffusers.demo.evaluate",
    "demo": "pixelgen_diffusers.demo_app",
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (which option is wrong and where to read more), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = ArgumentParser(
        prog="pixelgen",
        description="PixelGen pixel-space diffusion models in diffusers: generate, convert and export.",
        epilog="Errors are one line; --debug (or PIXELGEN_DEBUG=1) shows the full traceback.",
    )
    parser.add_argument("--version", action="version", version=f"pixelgen-diffusers {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, module_name in COMMAND_MODULES.items():
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
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    parser = build_parser()
    try:
        args, unrecognized = parser.parse_known_args(argv)
        if unrecognized and not getattr(args, "accepts_any_arguments", False):
            command_parser = parser.command_parsers[args.command]
            command_parser.error(f"unrecognized arguments: {' '.join(unrecognized)}")  # as parse_args would
    except SystemExit as exit_request:  # a usage error (one line, status 2), --help or --version (status 0)
        return exit_request.code if isinstance(exit_request.code, int) else 2
    debug = getattr(args, "debug", False) or os.environ.get("PIXELGEN_DEBUG", "") not in ("", "0")
    # Loading bars and library warnings would bury our output; sampling keeps its own progress bar.
    for library_logging in (diffusers_logging, transformers_logging):
        library_logging.disable_progress_bar()
        library_logging.set_verbosity_error()
    try:
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
    import torch

    message = one_line(error, max_length=None)
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return f"out of memory ({message}); try a smaller --batch-size, --dtype bfloat16, or another --device"
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{message}; free some disk space (finished files are kept: rerun to resume where it stopped)"
    if isinstance(error, (ValueError, ImportError, OSError, FloatingPointError)):
        return message
    return f"{type(error).__name__}: {message} (run with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
