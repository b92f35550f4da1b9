# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The `pixelgen` command: a thin layer over the Python API (argument parsing, progress, one-line errors).

Each subcommand lives in its feature module, which exposes `add_parser(subparsers)`; the parser it adds sets
`func(args) -> int`. Adding a command is adding its name and module to `COMMAND_MODULES`. A module that fails to
import (a missing optional dependency, a broken install) disables only its own command, which then reports the import
error as one line.
"""

import argparse
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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="pixelgen",
        description="PixelGen pixel-space diffusion models in diffusers: generate, convert and export.",
        epilog="Set PIXELGEN_DEBUG=1 to see full tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"pixelgen-diffusers {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, module_name in COMMAND_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            _add_unavailable_command(subparsers, command, module_name, error)
            continue
        module.add_parser(subparsers)
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
    args, unrecognized = parser.parse_known_args(argv)
    if unrecognized and not getattr(args, "accepts_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unrecognized)}")  # as parse_args would
    # Loading bars and library warnings would bury our output; sampling keeps its own progress bar.
    for library_logging in (diffusers_logging, transformers_logging):
        library_logging.disable_progress_bar()
        library_logging.set_verbosity_error()
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print(f"pixelgen {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as error:
        # User errors (bad arguments, files, names) are ValueErrors or OSErrors; print one line, no traceback.
        if os.environ.get("PIXELGEN_DEBUG"):
            raise
        print(f"pixelgen {args.command}: error: {one_line(error, max_length=None)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
