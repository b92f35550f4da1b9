# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The `pixelgen` command: a thin layer over the Python API (argument parsing, progress, one-line errors).

Each subcommand lives in its feature module, which exposes `add_parser(subparsers)`; the parser it adds sets
`func(args) -> int`. Adding a command is adding its module to `COMMAND_MODULES`.
"""

import argparse
import importlib
import os
import sys


COMMAND_MODULES = (
    "pixelgen_diffusers.generate",
    "pixelgen_diffusers.convert",
    "pixelgen_diffusers.export",
    "pixelgen_diffusers.sample",
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="pixelgen",
        description="PixelGen pixel-space diffusion models in diffusers: generate, convert and export.",
        epilog="Set PIXELGEN_DEBUG=1 to see full tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"pixelgen-diffusers {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    parser = build_parser()
    args = parser.parse_args(argv)
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
        print(f"pixelgen {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
