# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen train`: train or fine-tune a class-to-image or text-to-image model on a folder of images."""

import argparse
import dataclasses
import json
from pathlib import Path

from ..models.transformer_jit import PIXELGEN_PRESETS
from ..training.trainer import (
    MAX_TRAINING_SEED,
    MIXED_PRECISION,
    MODEL_TYPES,
    TrainingConfig,
    read_training_state,
    resolve_resume,
)
from ..utils import check_hub_reachable, check_output_folder, cli_number
from .generate import add_threads_argument, set_threads


def _json_object(text: str) -> dict:
    """A JSON object given inline or as a path to a .json file. Errors are `ArgumentTypeError`s, whose message
    argparse prints as is (a ValueError would become "invalid _json_object value")."""
    import argparse

    if text.endswith(".json") and not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"JSON file {text} not found")
    try:
        source = Path(text).read_text() if text.endswith(".json") else text
        value = json.loads(source)
    except (OSError, UnicodeDecodeError) as error:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {error}") from None
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid JSON ({error}); expected an object such as"
            " '{\"hidden_size\": 128}' or a .json file"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object ({{...}}), got {type(value).__name__}: {text!r}")
    return value


def add_parser(subparsers) -> None:
    """Registers `pixelgen train`."""
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a class-to-image or text-to-image model on a folder of images",
        description="Train a PixelGen model with upstream's recipe (x-prediction flow matching, EMA, optional LPIPS /"
        " P-DINO / REPA): class-to-image on class folders, text-to-image on captioned images (metadata.jsonl or"
        " .txt files). Multi-GPU: `accelerate launch -m pixelgen_diffusers.cli train ...`. Options not given take"
        " TrainingConfig's defaults, or on --resume the checkpoint's values.",
        argument_default=argparse.SUPPRESS,  # only the options given are passed on (see run_from_args)
    )
    arg = parser.add_argument
    arg(
        "--data-dir",
        help="class sub-folders (or see --labels-file), or captioned images; on --resume, the checkpoint's",
    )
    arg("--output-dir", required=True, help="checkpoints, sample grids and train_log.jsonl go here")
    arg("--labels-file", help="JSON {path: label} or `path,label` lines, paths relative to --data-dir")
    arg("--unconditional", action="store_true", help="train on the null class only: any image layout, no labels")
    arg("--model-type", choices=MODEL_TYPES, help="default: the pretrained model's, else t2i for captioned data")
    arg("--caption-column", help="caption column of metadata.jsonl")
    arg("--caption-dropout", type=float, help="rate of empty-prompt captions")
    arg("--text-encoder", help="Qwen3 folder or Hub id with its tokenizer (default: the pretrained model's)")
    arg("--caption-cache-dir", help="caption embedding cache (default: OUTPUT_DIR/caption_embeddings)")
    arg("--pretrained", help="pipeline or transformer folder (or Hub id) to fine-tune")
    arg("--preset", choices=sorted(PIXELGEN_PRESETS), help="architecture of a new model")
    arg("--model-config", type=_json_object, help="constructor overrides, e.g. '{\"hidden_size\": 128}'")
    arg("--sample-size", type=int, help="image size of a new model")
    arg("--max-steps", type=int)
    arg("--batch-size", type=int, help="per process")
    arg("--learning-rate", type=float)
    arg("--weight-decay", type=float)
    arg("--adam-beta1", type=float)
    arg("--adam-beta2", type=float)
    arg("--max-grad-norm", type=float, help="0 disables clipping")
    arg(
        "--ema-decay",
        type=float,
        nargs="+",
        help="one or more EMA decays; the first is saved (default 0.9999; LoRA: 0)",
    )
    arg("--lora-rank", type=int, help="train a LoRA of this rank on --pretrained instead of all weights")
    arg("--lora-alpha", type=float, help="LoRA alpha (default: the rank, i.e. scale 1)")
    arg("--lora-target-modules", nargs="+", help="linear layers to adapt (default: attention and feed-forward)")
    arg("--label-dropout", type=float)
    arg("--p-mean", type=float)
    arg("--p-std", type=float)
    arg("--timeshift", type=float, help="training time shift")
    arg("--noise-scale", type=float)
    arg("--lpips", help="LPIPS weights: file, folder or Hub id (lpips' VGG state dict, or VGG-16 + vgg.pth)")
    arg("--lpips-weight", type=float)
    arg("--dino", help="DINOv2 (transformers Dinov2Model) folder or Hub id, e.g. facebook/dinov2-base")
    arg("--dino-weight", type=float, help="P-DINO weight")
    arg("--dino-layer", type=int)
    arg("--percept-t-threshold", type=float, help="noise gate")
    arg("--repa-layer", type=int, help="enable REPA on this block's input tokens (upstream: 8); needs --dino")
    arg("--repa-weight", type=float)
    arg("--adaptive-weight-start", type=int)
    arg("--mixed-precision", choices=MIXED_PRECISION)
    arg("--gradient-checkpointing", action="store_true")
    arg("--seed", type=cli_number(integer=True, minimum=0, maximum=MAX_TRAINING_SEED))
    arg("--num-workers", type=int)
    arg("--log-every", type=int)
    arg("--sample-every", type=int)
    arg("--checkpoint-every", type=int)
    arg("--checkpoints-total-limit", type=int)
    arg("--resume", help="'latest' (in --output-dir) or a checkpoint folder")
    arg(
        "--overwrite",
        action="store_true",
        help="start a new run in an --output-dir that holds another run, deleting its checkpoints, log and samples",
    )
    add_threads_argument(parser)
    # The saved pipelines' sampling recipe; unset values keep the pretrained folder's (or the model kind's default).
    arg("--sampling-method", choices=("heun", "euler", "adam_lm"))
    arg("--sampling-timeshift", type=float)
    arg("--solver-order", type=int, choices=(1, 2, 3, 4), help="Adams-Bashforth order of adam_lm")
    arg("--num-inference-steps", type=int)
    arg("--guidance-scale", type=float)
    arg("--guidance-interval-min", type=float)
    arg("--guidance-interval-max", type=float)
    arg("--eval-every", type=int, help="every K steps, log FID-N of the EMA model to train_log.jsonl")
    arg("--eval-reference", help="reference for --eval-every, as for `pixelgen evaluate` (e.g. an ADM npz)")
    arg("--eval-num-samples", type=int, help="N of FID-N (default 1000)")
    arg("--eval-inception-weights", help="Inception weights for --eval-every (default: the cached ones)")
    parser.set_defaults(func=run_from_args)


def run_from_args(args) -> int:
    """Options given on the command line override; the others are TrainingConfig's defaults, or, when resuming,
    the values recorded in the checkpoint (so `--resume latest` needs only --output-dir)."""
    names = {config_field.name for config_field in dataclasses.fields(TrainingConfig)}
    given = {name: value for name, value in vars(args).items() if name in names}
    given["output_dir"] = str(check_output_folder(given["output_dir"], "--output-dir"))
    for name in ("pretrained", "dino", "lpips", "text_encoder"):
        check_hub_reachable(given.get(name), f"--{name.replace('_', '-')}")
    if given.get("caption_cache_dir") is not None:
        given["caption_cache_dir"] = str(check_output_folder(given["caption_cache_dir"], "--caption-cache-dir"))
    if given.get("resume") is not None:
        checkpoint = resolve_resume(given["resume"], Path(given["output_dir"]))
        if checkpoint is None and not given.get("data_dir"):
            raise ValueError(
                f"--resume {given['resume']}: {given['output_dir']} holds no checkpoint (checkpoint-N folder) to"
                " resume from, so this starts a new run, which needs --data-dir"
            )
        if checkpoint is not None:
            recorded = read_training_state(checkpoint)["config"]
            kept = {
                name: value
                for name, value in recorded.items()
                if name in names and name not in ("resume", "output_dir", "overwrite")
            }
            given = {**kept, **given}
    if not given.get("data_dir"):
        raise ValueError("--data-dir is required (a resumed run takes the one recorded in its checkpoint)")
    from ..training.trainer import Trainer

    trainer = Trainer(TrainingConfig(**given))
    set_threads(getattr(args, "threads", None), trainer.ema.model)
    checkpoint = trainer.train()
    print(f"Final checkpoint: {checkpoint}")
    return 0
