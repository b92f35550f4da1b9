# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen convert`: an upstream PixelGen/JiT checkpoint into a self-contained model folder."""

import argparse

from ..conversion.checkpoints import WEIGHT_CHOICES
from ..conversion.convert import convert_checkpoint
from ..utils import DTYPE_NAMES, check_output_folder
from .export import add_card_arguments, add_folder_output_arguments


# ------------------------------------------------------------------------------------------------------------- CLI
def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an upstream PixelGen/JiT checkpoint into a self-contained diffusers folder",
        description="Convert an upstream PixelGen Lightning checkpoint (.ckpt) or original JiT checkpoint (.pth) "
        "into a model folder that loads with plain diffusers.",
    )
    parser.add_argument(
        "source", help="PixelGen .ckpt, JiT .pth, or a bare upstream state dict (with --to upstream: a model folder)"
    )
    parser.add_argument("output_dir", help="folder to create (with --to upstream: the .ckpt file to write)")
    parser.add_argument(
        "--to",
        choices=("diffusers", "upstream"),
        default="diffusers",
        help="diffusers (default): checkpoint -> model folder; upstream: model folder -> upstream Lightning .ckpt "
        "with its YAML beside it",
    )
    parser.add_argument("--config", help="upstream YAML (e.g. configs_c2i/PixelGen_XL.yaml): architecture + sampling")
    parser.add_argument("--weights", choices=WEIGHT_CHOICES, default="ema", help="which copy of the weights")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help="storage dtype")
    parser.add_argument("--labels", help="class names: JSON list/object or one name per line (non-ImageNet models)")
    parser.add_argument("--text-encoder", help="text-to-image: text encoder folder or Hub id to include")
    parser.add_argument("--tokenizer", help="text-to-image: tokenizer folder or Hub id (default: the text encoder's)")
    parser.add_argument("--in-context-start", type=int, help="only for architectures no preset or YAML describes")
    add_folder_output_arguments(parser)
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="unpickle the checkpoint fully (needed for JiT files with saved args). UNSAFE for untrusted files",
    )
    add_card_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.to == "upstream":
        return run_to_upstream(args)
    convert_checkpoint(
        args.source,
        check_output_folder(args.output_dir, "OUTPUT_DIR"),
        config=args.config,
        weights=args.weights,
        dtype=args.dtype,
        labels=args.labels,
        text_encoder=args.text_encoder,
        tokenizer=args.tokenizer,
        in_context_start=args.in_context_start,
        max_shard_size=args.max_shard_size,
        overwrite=args.overwrite,
        allow_pickle=args.allow_pickle,
        license=args.license,
        base_model=args.base_model,
        verbose=True,
    )
    return 0


def run_to_upstream(args: argparse.Namespace) -> int:
    from ..conversion.to_upstream import convert_to_upstream

    given = [
        option
        for option, value in (
            ("--config", args.config),
            ("--labels", args.labels),
            ("--text-encoder", args.text_encoder),
            ("--tokenizer", args.tokenizer),
            ("--in-context-start", args.in_context_start),
            ("--license", args.license),
            ("--base-model", args.base_model),
        )
        if value is not None
    ]
    if given or args.weights != "ema" or args.dtype != "float32" or args.allow_pickle:
        given += ["--weights"] * (args.weights != "ema") + ["--dtype"] * (args.dtype != "float32")
        given += ["--allow-pickle"] * args.allow_pickle
        raise ValueError(f"{', '.join(given)} apply to conversions into a model folder, not to --to upstream")
    convert_to_upstream(args.source, args.output_dir, overwrite=args.overwrite, verbose=True)
    return 0
