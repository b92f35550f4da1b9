# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Folders of other diffusers ports, read as conversion sources (`pixelgen convert PORT_FOLDER OUTPUT_DIR`).

- `Bili-Sakura/JiT-diffusers`: a `JiTPipeline` folder (`model_index.json`, `transformer/`, `scheduler/` with a
  `JiTScheduler` `solver`) or a bare `JiTTransformer2DModel` folder. The transformer wraps the original JiT module
  as `self.transformer`, so its weights are JiT's names under `transformer.`; its config names the JiT preset
  (`model_type`, e.g. `JiT-L/16`), `sample_size`, `num_class_embeds` and the dropouts, which become the JiT
  arguments the converter already reads from JiT's own checkpoints.
- `BiliSakura/PixelGen-diffusers` (the Hub repo; one model per subfolder, `PixelGenC2IPipeline` /
  `PixelGenT2IPipeline` like ours, its own `transformer_jit*.py`): its code is not public, so its weights are
  accepted under upstream PixelGen names (optionally under one wrapper prefix, as the same author's JiT port does)
  or under this package's names; the architecture comes from the weights and the published presets, `id2label` from
  `model_index.json`, and a shipped `text_encoder/` + `tokenizer/` are carried over.

Anything else (another pipeline class, weights under names neither table knows) is an error naming what was found.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoints import SelectedWeights
from .keys import MODEL_KINDS, detect_kind, list_keys
from .model_folder import ConversionError, read_model_index


if TYPE_CHECKING:
    import torch


JIT_PORT_PIPELINES = ("JiTPipeline",)
JIT_PORT_TRANSFORMERS = ("JiTTransformer2DModel",)
PIXELGEN_PORT_PIPELINES = ("PixelGenC2IPipeline", "PixelGenT2IPipeline")
WRAPPER_PREFIXES = ("transformer.", "net.", "model.", "module.")
# JiTTransformer2DModel config field (and its legacy alias) -> the JiT argument the converter reads.
JIT_PORT_CONFIG = {
    "model": ("model_type", "model_name"),
    "img_size": ("sample_size", "image_size"),
    "class_num": ("num_class_embeds", "num_classes"),
    "attn_dropout": ("attention_dropout", "attn_dropout"),
    "proj_dropout": ("dropout", "proj_dropout"),
}


@dataclasses.dataclass
class PortFolder:
    layout: str  # "JiT-diffusers" or "PixelGen-diffusers"
    selected: SelectedWeights
    id2label: dict[int, str] | None
    text_encoder: Path | None
    tokenizer: Path | None
    weight_files: list[Path]


def is_port_folder(path: Path) -> bool:
    return Path(path).is_dir() and ((path / "model_index.json").is_file() or (path / "config.json").is_file())


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConversionError(f"cannot read {path}: {error}") from None
    if not isinstance(value, dict):
        raise ConversionError(f"{path} must hold a JSON object")
    return value


def _read_weights(folder: Path) -> tuple[dict[str, torch.Tensor], list[Path]]:
    """Every tensor of a diffusers model folder: safetensors (sharded or not), else `.bin` read as plain tensors."""
    import torch
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        files = sorted(folder.glob("*.bin"))
    if not files:
        raise ConversionError(f"{folder} holds no weights (*.safetensors or *.bin)")
    state_dict = {}
    for path in files:
        try:
            if path.suffix == ".safetensors":
                state_dict.update(load_file(path))
            else:
                state_dict.update(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as error:  # safetensors and torch report damaged files with their own types
            raise ConversionError(f"cannot read {path}: {type(error).__name__} (truncated or corrupt?)") from None
    return state_dict, files


def _strip_wrapper(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    for prefix in WRAPPER_PREFIXES:
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            return {key[len(prefix) :]: value for key, value in state_dict.items()}, prefix
    return state_dict, ""


def _upstream_names(state_dict: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """The weights under upstream names: as they are if they already have them, renamed back if they carry this
    package's names; otherwise an error listing what no table maps."""
    try:
        detect_kind(state_dict)
        return state_dict
    except ConversionError:
        pass
    for kind in MODEL_KINDS.values():
        renamed = {kind.key_map.to_upstream(key): value for key, value in state_dict.items()}
        if None not in renamed and detect_kind_or_none(renamed) is kind:
            return renamed
    kinds = MODEL_KINDS.values()
    unmapped = sorted(key for key in state_dict if all(kind.key_map.to_upstream(key) is None for kind in kinds))
    raise ConversionError(
        f"{where}: weights under names no known layout maps (neither upstream PixelGen/JiT nor pixelgen-diffusers): "
        f"{list_keys(unmapped or sorted(state_dict), 6)}"
    )


def detect_kind_or_none(state_dict: dict[str, torch.Tensor]):
    try:
        return detect_kind(state_dict)
    except ConversionError:
        return None


def read_port_folder(folder: str | Path) -> PortFolder:
    """The weights (under upstream names), class names and text encoder of another port's folder."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        model_index = read_model_index(folder)
        class_entry = model_index.get("_class_name")
        pipeline_class = class_entry[-1] if isinstance(class_entry, list) else class_entry
        known = JIT_PORT_PIPELINES + PIXELGEN_PORT_PIPELINES
        if pipeline_class not in known:
            raise ConversionError(
                f"{folder} holds a {pipeline_class}; pixelgen convert reads folders of {', '.join(known)}"
                " (JiT-diffusers, PixelGen-diffusers)"
            )
        transformer_folder = folder / "transformer"
        if not (transformer_folder / "config.json").is_file():
            raise ConversionError(f"{folder} has no transformer/config.json")
        id2label = model_index.get("id2label")
    else:
        model_index, pipeline_class, transformer_folder, id2label = {}, None, folder, None
    transformer_config = _read_json(transformer_folder / "config.json")
    transformer_class = transformer_config.get("_class_name")
    state_dict, files = _read_weights(transformer_folder)
    state_dict, prefix = _strip_wrapper(state_dict)
    dropped = [key for key in state_dict if ".freqs_" in key or key.startswith("feat_rope")]  # RoPE tables, rebuilt
    state_dict = {key: value for key, value in state_dict.items() if key not in dropped}

    if pipeline_class in JIT_PORT_PIPELINES or transformer_class in JIT_PORT_TRANSFORMERS:
        jit_args = {}
        for argument, fields in JIT_PORT_CONFIG.items():
            value = next((transformer_config[f] for f in fields if transformer_config.get(f) is not None), None)
            if value is not None:
                jit_args[argument] = value
        scheduler_file = folder / "scheduler" / "scheduler_config.json"
        if scheduler_file.is_file():
            solver = _read_json(scheduler_file).get("solver")
            if solver is not None:
                jit_args["sampling_method"] = solver
        state_dict = _upstream_names(state_dict, transformer_folder)
        weights = f"{transformer_class} ({prefix or 'no'} prefix)"
        selected = SelectedWeights(state_dict, "jit", weights, dropped, [], jit_args=jit_args)
        layout = "JiT-diffusers"
    elif pipeline_class in PIXELGEN_PORT_PIPELINES or transformer_class in (
        "PixelGenTransformer2DModel",
        "PixelGenT2ITransformer2DModel",
    ):
        state_dict = _upstream_names(state_dict, transformer_folder)
        selected = SelectedWeights(state_dict, "port", f"{transformer_class} ({prefix or 'no'} prefix)", dropped, [])
        layout = "PixelGen-diffusers"
    else:
        raise ConversionError(
            f"{transformer_folder / 'config.json'} describes a {transformer_class}; pixelgen convert reads"
            f" {', '.join(JIT_PORT_TRANSFORMERS)} (JiT-diffusers) and PixelGen-diffusers folders"
        )
    labels = {int(key): str(value) for key, value in id2label.items()} if isinstance(id2label, dict) else None
    text_encoder = folder / "text_encoder" if (folder / "text_encoder" / "config.json").is_file() else None
    tokenizer = folder / "tokenizer" if text_encoder is not None and (folder / "tokenizer").is_dir() else None
    return PortFolder(layout, selected, labels, text_encoder, tokenizer, files)
