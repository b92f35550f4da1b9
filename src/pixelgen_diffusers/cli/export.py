# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen export`: a saved PixelGen pipeline into a self-contained model folder."""

import argparse

from ..conversion.export import export_pipeline
from ..utils import DTYPE_NAMES, check_output_folder, cli_shard_size


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="turn a saved PixelGen pipeline into a self-contained folder that loads with plain diffusers",
        description="Copy a saved PixelGen pipeline (save_pretrained output) into a self-contained model folder: "
        "weights, configs, and the code diffusers needs to load it without pixelgen-diffusers.",
    )
    parser.add_argument("pipeline_dir", help="a folder written by save_pretrained (or a model folder)")
    parser.add_argument("output_dir", help="folder to create")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, help="transformer storage dtype (default: as saved)")
    add_folder_output_arguments(parser)
    parser.add_argument(
        "--ema",
        type=int,
        default=0,
        metavar="INDEX",
        help="training checkpoints: which tracked EMA to export (default 0)",
    )
    add_card_arguments(parser)
    parser.add_argument(
        "--text-encoder",
        help="text-to-image: the encoder's Hub id to record, or a folder (Qwen3 + tokenizer, or a pipeline folder) to "
        "ship; by default an encoder the model names by a path of this machine is shipped",
    )
    parser.set_defaults(func=run)


def add_folder_output_arguments(parser) -> None:
    """`--max-shard-size` and `--overwrite`, as every command that writes a model folder takes them."""
    parser.add_argument(
        "--max-shard-size",
        type=cli_shard_size,
        default="10GB",
        help="shard safetensors above this size, e.g. 500MB (units TB, GB, MB, KB; default 10GB)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR once the new folder is complete")


def add_card_arguments(parser) -> None:
    """`--license` and `--base-model`: recorded in the folder metadata and on its model card (convert, export)."""
    parser.add_argument(
        "--license",
        help="the weights' license as a Hub license id (e.g. mit, apache-2.0), for the model card; never guessed",
    )
    parser.add_argument("--base-model", metavar="REPO_ID", help="the Hub model the weights derive from, for the card")


def run(args: argparse.Namespace) -> int:
    export_pipeline(
        args.pipeline_dir,
        check_output_folder(args.output_dir, "OUTPUT_DIR"),
        dtype=args.dtype,
        max_shard_size=args.max_shard_size,
        overwrite=args.overwrite,
        verbose=True,
        ema_index=args.ema,
        license=args.license,
        base_model=args.base_model,
        text_encoder=args.text_encoder,
    )
    return 0
