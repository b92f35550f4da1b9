# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Upstream PixelGen / JiT checkpoints -> self-contained diffusers model folders (`pixelgen convert`).

Reads a PixelGen Lightning checkpoint (`*.ckpt`, weights under `state_dict` as `ema_denoiser.*` / `denoiser.*`), an
original JiT checkpoint (`checkpoint-*.pth`, `model` / `model_ema1` / `model_ema2` with a `net.` prefix) or a bare
upstream state dict; renames every tensor one-to-one to this package's names (anything unmapped is an error);
takes the architecture from the upstream YAML or from the tensor shapes; and writes a folder that loads with plain
diffusers, with the upstream evaluation recipe stored as the pipeline's defaults.

This module runs the conversion; its steps live by concern beside it: `checkpoints` (reading the inputs), `keys`
(weight names and the two model kinds), `architecture` (shapes -> config -> transformer), `upstream_config` (the
sampling recipe) and `model_card` / `model_folder` / `export` (writing the folder). torch, yaml and the models are
imported where they are used, so that `pixelgen convert --help` is instant.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..utils import (
    DTYPE_NAMES,
    check_number,
    check_shard_size,
    one_line,
    torch_dtype,
)
from .architecture import build_transformer, resolve_architecture
from .checkpoints import WEIGHT_CHOICES, file_sha256, load_checkpoint, read_labels, select_weights
from .export import write_model_folder
from .keys import C2I, T2I, ModelKind, detect_kind
from .model_card import card_fields, render_model_card
from .model_folder import ConversionError, check_output_dir, folder_size, format_size
from .ports import is_port_folder, read_port_folder
from .upstream_config import defaults_from_jit_args, read_upstream_config, recommended_defaults, sampling_from_config


if TYPE_CHECKING:
    import torch


DEFAULT_TEXT_ENCODER = "Qwen/Qwen3-1.7B"


def default_model_name(kind: ModelKind, preset: str | None, family: str, config: dict) -> str:
    if kind is T2I:
        xxl = (config["hidden_size"], config["depth"], config["num_heads"], config["patch_size"]) == (1536, 16, 24, 16)
        if xxl:
            return f"PixelGen-XXL-16-{config['sample_size']}-t2i"
        return (
            f"PixelGen-T2I-h{config['hidden_size']}-d{config['depth']}-p{config['patch_size']}-{config['sample_size']}"
        )
    size = config["sample_size"]
    if preset is not None:
        return f"{preset.replace('/', '-')}-{size}"
    prefix = "PixelGen" if family == "pixelgen" else "JiT"
    return f"{prefix}-h{config['hidden_size']}-d{config['depth']}-p{config['patch_size']}-{size}"


# ------------------------------------------------------------------------------------------------------ conversion
def convert_checkpoint(
    source: str | Path,
    output_dir: str | Path,
    *,
    config: str | Path | None = None,
    weights: str = "ema",
    dtype: str = "float32",
    labels: str | Path | None = None,
    text_encoder: str | Path | None = None,
    tokenizer: str | Path | None = None,
    in_context_start: int | None = None,
    max_shard_size: str | int = "10GB",
    overwrite: bool = False,
    allow_pickle: bool = False,
    license: str | None = None,
    base_model: str | None = None,
    verbose: bool = False,
) -> Path:
    """Converts an upstream PixelGen / JiT checkpoint into a self-contained diffusers model folder.

    Args:
        source: a PixelGen Lightning `.ckpt`, an original JiT `.pth`, or a bare upstream state dict.
        output_dir: the folder to create (written to a temporary folder next to it, renamed at the end).
        config: the upstream YAML; architecture and sampling defaults then come from it (checked against the weights).
        weights: `ema` (default), `online` (PixelGen `denoiser.*` / JiT `model`), `ema1` or `ema2` (JiT).
        dtype: storage dtype of the weights, `float32`, `bfloat16` or `float16`.
        labels: class names (JSON or one per line) for models that are not 1000-class ImageNet models.
        text_encoder, tokenizer: (text-to-image) a local folder or Hub id to ship in the folder.
        in_context_start: for architectures no preset or YAML describes.
        max_shard_size: safetensors files above this size are sharded (with an index file).
        overwrite: replace an existing non-empty `output_dir` (only once the new folder is complete).
        allow_pickle: allow full unpickling of the checkpoint. Unsafe for files you do not trust.
        license: the weights' license (a Hub license id, e.g. `mit`), recorded in the metadata and on the card; the
            checkpoint does not say, so it is recorded only when stated.
        base_model: the Hub id of the model the weights derive from, for the card.
        verbose: print a summary.
    Returns:
        The output folder.
    """
    from .. import __version__

    for name, value in (("source", source), ("output_dir", output_dir)):
        if not isinstance(value, (str, Path)) or not str(value):
            raise ConversionError(f"{name} must be a file or folder path, got {type(value).__name__}: {value!r}")
    source, output_dir = Path(source), Path(output_dir)
    if in_context_start is not None:
        check_number("in_context_start (--in-context-start)", in_context_start, integer=True, minimum=0)
    if dtype not in DTYPE_NAMES:
        raise ConversionError(f"--dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    if weights not in WEIGHT_CHOICES:
        raise ConversionError(f"--weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}")
    try:
        check_shard_size(max_shard_size)
    except ValueError as error:
        raise ConversionError(str(error)) from None
    stated_card_fields = card_fields(license, base_model)
    check_output_dir(output_dir, overwrite, source)
    upstream_config = read_upstream_config(config) if config is not None else None
    config_name = f"--config {Path(config).name}" if config is not None else "--config"

    port = read_port_folder(source) if is_port_folder(source) else None
    if port is not None:  # another port's folder (JiT-diffusers, PixelGen-diffusers)
        if weights != "ema":
            raise ConversionError(f"--weights applies to checkpoints; {source} is a {port.layout} folder")
        selected = port.selected
        labels = labels if labels is not None else port.id2label
        if text_encoder is None and port.text_encoder is not None:
            text_encoder, tokenizer = port.text_encoder, port.tokenizer
    else:
        checkpoint = load_checkpoint(source, allow_pickle=allow_pickle)
        selected = select_weights(checkpoint, weights)
    kind = detect_kind(selected.state_dict)
    if upstream_config is not None:
        class_path = str(upstream_config["model"]["denoiser"]["class_path"])
        if not class_path.endswith(kind.upstream_class):
            raise ConversionError(
                f"{config_name} describes {class_path}, but the checkpoint holds a {kind.upstream_class} model"
            )
    if kind is T2I and (labels is not None):
        raise ConversionError("--labels is for class-to-image models; this checkpoint is a text-to-image model")
    if tokenizer is not None and text_encoder is None:
        raise ConversionError("--tokenizer needs --text-encoder: the pipeline needs both, or neither")
    if kind is C2I and (text_encoder is not None or tokenizer is not None):
        raise ConversionError("--text-encoder/--tokenizer are for text-to-image models; this one is class-to-image")

    family = "jit" if selected.source_format == "jit" else "pixelgen"
    renamed = {key: tensor.to(torch_dtype(dtype)) for key, tensor in kind.key_map.rename(selected.state_dict).items()}
    architecture, sources, preset = resolve_architecture(
        kind, selected.state_dict, upstream_config, family, selected.jit_args, in_context_start, config_name
    )
    transformer = build_transformer(kind, architecture, renamed)

    notes = []
    if upstream_config is not None:
        defaults, notes = sampling_from_config(upstream_config, config_name)
        defaults_source = f"{config_name} model.diffusion_sampler"
    else:
        defaults, defaults_source = recommended_defaults(kind, preset, family, architecture)
        if selected.jit_args:
            defaults, taken = defaults_from_jit_args(defaults, selected.jit_args)
            if taken:
                defaults_source += f"; {', '.join(taken)} from checkpoint args"
    try:
        defaults.check()
    except ValueError as error:
        raise ConversionError(f"the sampling recipe ({defaults_source}): {error}") from None

    from ..schedulers.scheduling_pixelgen import PixelGenScheduler

    scheduler = PixelGenScheduler(**defaults.scheduler_config())
    _, pipeline_class = kind.classes()
    extra_folders = {}
    if kind is C2I:
        id2label = _class_names(architecture["num_classes"], labels)
        pipeline = pipeline_class(transformer, scheduler, id2label=id2label, **defaults.pipeline_config())
        text_encoder_id = None
    else:
        pipeline, extra_folders, text_encoder_id = _t2i_pipeline(
            pipeline_class, transformer, scheduler, defaults, upstream_config, text_encoder, tokenizer
        )

    model_name = default_model_name(kind, preset, family, architecture)
    metadata = {
        "converter": "pixelgen-diffusers",
        "converter_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "file_name": source.name,
            "size_bytes": folder_size(source) if port else source.stat().st_size,
            "sha256": _source_sha256(source, port),
            "format": port.layout if port else selected.source_format,
            "weights": selected.weights,
        },
        "dropped_keys": selected.dropped_keys,
        "ignored_entries": selected.ignored_entries,
        "model_kind": kind.name,
        "model_name": model_name,
        "preset": preset,
        "architecture": {key: architecture[key] for key in sorted(architecture)},
        "architecture_sources": {key: sources[key] for key in sorted(sources)},
        "storage_dtype": dtype,
        "sampling_defaults": dataclasses.asdict(defaults),
        "sampling_defaults_source": defaults_source,
        "upstream_config": _upstream_config_summary(upstream_config, config) if upstream_config else None,
        "notes": notes,
        **stated_card_fields,
    }
    if kind is T2I:
        metadata["text_encoder"] = text_encoder_id
        metadata["text_encoder_included"] = "text_encoder" in extra_folders
        metadata["tokenizer_included"] = "tokenizer" in extra_folders

    readme = render_model_card(pipeline, Path(output_dir).name, metadata)  # named as the user named the folder
    write_model_folder(
        pipeline,
        output_dir,
        overwrite=overwrite,
        max_shard_size=max_shard_size,
        metadata=metadata,
        readme=readme,
        extra_folders=extra_folders,
        source=source,
    )
    if verbose:
        print(format_summary(output_dir, metadata, transformer))
    return output_dir


def _source_sha256(source: Path, port) -> str | None:
    """The checkpoint's digest; for a port folder, its weights file's (None when sharded)."""
    if port is None:
        return file_sha256(source)
    return file_sha256(port.weight_files[0]) if len(port.weight_files) == 1 else None


def _class_names(num_classes: int, labels: str | Path | dict | None) -> dict[int, str]:
    if isinstance(labels, dict):  # a port folder's id2label
        if sorted(labels) != list(range(num_classes)):
            raise ConversionError(f"the folder's id2label does not name the model's {num_classes} classes 0..N-1")
        return labels
    if labels is not None:
        return read_labels(labels, num_classes)
    if num_classes == 1000:
        from .labels import imagenet_id2label

        return imagenet_id2label()
    return {i: str(i) for i in range(num_classes)}


def _upstream_config_summary(upstream_config: dict, path: str | Path) -> dict:
    model = upstream_config.get("model", {})
    return {
        "file_name": Path(path).name,
        "denoiser": model.get("denoiser"),
        "diffusion_sampler": model.get("diffusion_sampler"),
        "conditioner": model.get("conditioner"),
    }


def _t2i_pipeline(pipeline_class, transformer, scheduler, defaults, upstream_config, text_encoder, tokenizer):
    """The text-to-image pipeline and the text encoder / tokenizer folders to ship in the model folder, if given.

    Without them the folder records the encoder's Hub id (`text_encoder_id`), which the pipeline loads on demand.
    """
    text_encoder_id = DEFAULT_TEXT_ENCODER
    if upstream_config is not None:
        conditioner_args = (upstream_config.get("model", {}).get("conditioner") or {}).get("init_args") or {}
        text_encoder_id = conditioner_args.get("weight_path", text_encoder_id)
    extra_folders = {}
    if text_encoder is not None:
        folder = _resolve_folder(text_encoder, "--text-encoder")
        extra_folders["text_encoder"] = (folder, ["transformers", "Qwen3Model"])
        if not Path(text_encoder).expanduser().is_dir():
            text_encoder_id = str(text_encoder)
    if tokenizer is not None or text_encoder is not None:
        folder = _resolve_folder(tokenizer, "--tokenizer") if tokenizer is not None else folder
        try:
            tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        except (OSError, json.JSONDecodeError):
            tokenizer_config = {}
        tokenizer_class = tokenizer_config.get("tokenizer_class") or "Qwen2Tokenizer"
        extra_folders["tokenizer"] = (folder, ["transformers", tokenizer_class])
    pipeline = pipeline_class(
        transformer=transformer, scheduler=scheduler, text_encoder_id=text_encoder_id, **defaults.pipeline_config()
    )
    return pipeline, extra_folders, text_encoder_id


def _resolve_folder(path_or_id: str | Path, option: str) -> Path:
    """A local folder, or a Hub repo downloaded into the cache."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(path_or_id)):
        raise ConversionError(f"{option} {path_or_id} is neither a local folder nor a Hub repo id (owner/name)")
    import huggingface_hub

    try:
        return Path(huggingface_hub.snapshot_download(repo_id=str(path_or_id)))
    except Exception as error:  # network, authentication, missing repo: all reported the same way
        raise ConversionError(f"cannot download {option} {path_or_id}: {one_line(error)}") from None


def format_summary(output_dir: Path, metadata: dict, transformer: torch.nn.Module) -> str:
    parameters = sum(parameter.numel() for parameter in transformer.parameters())
    architecture = ", ".join(f"{key}={value}" for key, value in metadata["architecture"].items())
    defaults = metadata["sampling_defaults"]
    recipe = (
        f"{defaults['sampling_method']} {defaults['num_inference_steps']} steps, CFG {defaults['guidance_scale']} "
        f"for t in {defaults['guidance_interval_min']}..{defaults['guidance_interval_max']}, "
        f"timeshift {defaults['timeshift']}, noise_scale {defaults['noise_scale']}"
    )
    lines = [
        f"Converted {metadata['source']['file_name']} ({metadata['source']['weights']} weights) -> {output_dir}",
        f"  model:        {metadata['model_name']} ({metadata['model_kind']}), {parameters:,} parameters "
        f"stored as {metadata['storage_dtype']}",
        f"  architecture: {architecture}",
        f"  defaults:     {recipe} ({metadata['sampling_defaults_source']})",
        f"  dropped:      {_summarise_dropped(metadata['dropped_keys'])}",
        f"  folder size:  {format_size(folder_size(output_dir))}; every tensor re-read and verified",
    ]
    lines += [f"  note:         {note}" for note in metadata["notes"]]
    return "\n".join(lines)


def _summarise_dropped(keys: list[str]) -> str:
    if not keys:
        return "nothing"
    groups: dict[str, int] = {}
    for key in keys:
        group = key.split(".", 1)[0] + ".*"
        groups[group] = groups.get(group, 0) + 1
    return ", ".join(f"{group} ({count} tensors)" for group, count in groups.items())
