# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The transformer's architecture: read from the upstream tensor shapes, checked against (and completed from) the
upstream YAML or JiT's saved arguments, matched to the published presets; and the diffusers transformer built to hold
exactly the converted weights. torch and the models are imported where they are used."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from ..utils import one_line
from .keys import C2I, ModelKind, list_keys
from .model_folder import ConversionError


if TYPE_CHECKING:
    import torch


def _required(state_dict: dict[str, torch.Tensor], *keys: str) -> list[torch.Tensor]:
    missing = [key for key in keys if key not in state_dict]
    if missing:
        raise ConversionError(f"missing weight keys: {list_keys(missing)}")
    return [state_dict[key] for key in keys]


def _count_blocks(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    indices = {int(match.group(1)) for key in state_dict if (match := re.match(rf"{re.escape(prefix)}(\d+)\.", key))}
    return max(indices) + 1 if indices else 0


def _grid_side(tokens: int, key: str) -> int:
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ConversionError(f"{key} has {tokens} positions, which is not a square grid of patches")
    return side


def _shape(tensor: torch.Tensor) -> str:
    return "(" + ", ".join(str(size) for size in tensor.shape) + ")"


def _infer_c2i(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[Any, str]]:
    """Architecture numbers readable from upstream JiT tensor shapes, each with the tensor that tells it."""
    pos_embed, class_table, proj1, q_norm, w3 = _required(
        state_dict,
        "pos_embed",
        "y_embedder.embedding_table.weight",
        "x_embedder.proj1.weight",
        "blocks.0.attn.q_norm.weight",
        "blocks.0.mlp.w3.weight",
    )
    hidden_size = pos_embed.shape[-1]
    patch_size = proj1.shape[-1]
    grid = _grid_side(pos_embed.shape[1], "pos_embed")
    head_dim = q_norm.shape[0]
    bottleneck = "x_embedder.proj2.weight" in state_dict
    in_context = state_dict.get("in_context_posemb")
    return {
        "hidden_size": (hidden_size, f"pos_embed {_shape(pos_embed)}"),
        "patch_size": (patch_size, f"x_embedder.proj1.weight {_shape(proj1)}"),
        "in_channels": (proj1.shape[1], f"x_embedder.proj1.weight {_shape(proj1)}"),
        "sample_size": (grid * patch_size, f"pos_embed {_shape(pos_embed)} x patch {patch_size}"),
        "depth": (_count_blocks(state_dict, "blocks."), "number of blocks.N"),
        "num_heads": (hidden_size // head_dim, f"blocks.0.attn.q_norm.weight {_shape(q_norm)}"),
        "num_classes": (class_table.shape[0] - 1, f"y_embedder.embedding_table.weight {_shape(class_table)}"),
        "bottleneck_dim": (
            proj1.shape[0] if bottleneck else None,
            f"x_embedder.proj1.weight {_shape(proj1)}" if bottleneck else "no x_embedder.proj2",
        ),
        "in_context_len": (
            in_context.shape[1] if in_context is not None else 0,
            f"in_context_posemb {_shape(in_context)}" if in_context is not None else "no in_context_posemb",
        ),
        "ffn_inner_dim": (w3.shape[1], f"blocks.0.mlp.w3.weight {_shape(w3)}"),
    }


def _infer_t2i(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[Any, str]]:
    pos_embed, text_pos, proj1, text_proj, q_norm = _required(
        state_dict,
        "pos_embed",
        "y_pos_embedding",
        "x_embedder.proj1.weight",
        "y_embedder.proj.weight",
        "blocks.0.attn.q_norm.weight",
    )
    hidden_size = pos_embed.shape[-1]
    patch_dim = proj1.shape[1]  # in_channels * patch**2, unfolded
    patch_size = math.isqrt(patch_dim // 3)
    if 3 * patch_size * patch_size != patch_dim:
        raise ConversionError(
            f"x_embedder.proj1.weight {_shape(proj1)} does not fit 3-channel square patches; pass --config"
        )
    grid = _grid_side(pos_embed.shape[1], "pos_embed")
    head_dim = q_norm.shape[0]
    return {
        "hidden_size": (hidden_size, f"pos_embed {_shape(pos_embed)}"),
        "patch_size": (patch_size, f"x_embedder.proj1.weight {_shape(proj1)} (3 channels)"),
        "in_channels": (3, f"x_embedder.proj1.weight {_shape(proj1)}"),
        "sample_size": (grid * patch_size, f"pos_embed {_shape(pos_embed)} x patch {patch_size}"),
        "depth": (_count_blocks(state_dict, "blocks."), "number of blocks.N"),
        "num_heads": (hidden_size // head_dim, f"blocks.0.attn.q_norm.weight {_shape(q_norm)}"),
        "num_text_blocks": (_count_blocks(state_dict, "text_refine_blocks."), "number of text_refine_blocks.N"),
        "txt_embed_dim": (text_proj.shape[1], f"y_embedder.proj.weight {_shape(text_proj)}"),
        "txt_max_length": (text_pos.shape[1], f"y_pos_embedding {_shape(text_pos)}"),
        "bottleneck_dim": (proj1.shape[0], f"x_embedder.proj1.weight {_shape(proj1)}"),
    }


def infer_architecture(kind: ModelKind, state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[Any, str]]:
    """The architecture numbers `state_dict` (upstream names) shows: field -> (value, the tensor that tells it)."""
    return (_infer_c2i if kind is C2I else _infer_t2i)(state_dict)


def _ffn_ratio(hidden_size: int, inner_dim: int, preferred: float = 4.0) -> float | None:
    """An `mlp_ratio` for which JiT's SwiGLU width int(int(hidden * ratio) * 2 / 3) equals `inner_dim`."""
    if int(int(hidden_size * preferred) * 2 / 3) == inner_dim:
        return preferred
    for width in range(math.ceil(1.5 * inner_dim), math.ceil(1.5 * (inner_dim + 1)) + 1):
        ratio = width / hidden_size
        if int(int(hidden_size * ratio) * 2 / 3) == inner_dim:
            return ratio
    return None


def match_preset(config: dict, family: str) -> str | None:
    """The published architecture these numbers describe (PixelGen-L/16 and JiT-L/16 share one; `family` picks)."""
    from ..models.transformer_jit import PIXELGEN_PRESETS

    fields = ("patch_size", "hidden_size", "depth", "num_heads", "bottleneck_dim", "in_context_len")
    matches = [
        name
        for name, preset in PIXELGEN_PRESETS.items()
        if all(preset.get(field) == config.get(field) for field in fields)
        and config.get("in_context_start", preset["in_context_start"]) == preset["in_context_start"]
    ]
    preferred = [name for name in matches if name.lower().startswith(family)]
    return (preferred or matches or [None])[0]


def resolve_architecture(
    kind: ModelKind,
    state_dict: dict[str, torch.Tensor],
    upstream_config: dict | None,
    family: str,
    jit_args: dict | None = None,
    in_context_start: int | None = None,
    config_name: str = "--config",
) -> tuple[dict, dict[str, str], str | None]:
    """The diffusers config of the transformer, where each field came from, and the matching preset name.

    Shapes decide what they can; the YAML (or JiT's saved arguments) must agree with them and supplies the rest.
    """
    from ..models.transformer_jit import PIXELGEN_PRESETS

    inferred = infer_architecture(kind, state_dict)
    config = {field: value for field, (value, _) in inferred.items()}
    sources = {field: f"weights: {origin}" for field, (_, origin) in inferred.items()}
    ffn_inner_dim = config.pop("ffn_inner_dim", None)
    sources.pop("ffn_inner_dim", None)

    stated = {}  # field -> (value, where it was stated)
    if upstream_config is not None:
        init_args = upstream_config["model"]["denoiser"].get("init_args") or {}
        for argument, (field, default) in kind.yaml_fields.items():
            value = init_args.get(argument, default)
            origin = f"{config_name} model.denoiser.init_args.{argument}"
            stated[field] = (value, origin if argument in init_args else f"{origin} (upstream default)")
        if kind is C2I and not init_args.get("use_bottleneck", True):
            stated["bottleneck_dim"] = (None, f"{config_name} model.denoiser.init_args.use_bottleneck: false")
    elif jit_args:
        preset = PIXELGEN_PRESETS.get(jit_args.get("model"))
        if preset is not None:
            for field in ("patch_size", "hidden_size", "depth", "num_heads", "bottleneck_dim", "in_context_len"):
                stated[field] = (preset[field], f"checkpoint args.model {jit_args['model']}")
            stated["in_context_start"] = (preset["in_context_start"], f"checkpoint args.model {jit_args['model']}")
        for argument, field in (
            ("img_size", "sample_size"),
            ("class_num", "num_classes"),
            ("attn_dropout", "attention_dropout"),
            ("proj_dropout", "dropout"),
        ):
            if argument in jit_args:
                stated[field] = (jit_args[argument], f"checkpoint args.{argument}")
    if in_context_start is not None:
        stated["in_context_start"] = (in_context_start, "--in-context-start")

    for field, (value, origin) in stated.items():
        if field in config:
            if value != config[field]:
                raise ConversionError(
                    f"{origin} says {field}={value!r}, but the weights have {field}={config[field]!r} "
                    f"({sources[field].removeprefix('weights: ')})"
                )
        else:
            config[field] = value
            sources[field] = origin

    if kind is C2I:
        hidden_size = config["hidden_size"]
        if "mlp_ratio" in config:
            expected = int(int(hidden_size * config["mlp_ratio"]) * 2 / 3)
            if expected != ffn_inner_dim:
                raise ConversionError(
                    f"{sources['mlp_ratio']} says mlp_ratio={config['mlp_ratio']!r} (SwiGLU width {expected}), but the"
                    f" weights have width {ffn_inner_dim} (blocks.0.mlp.w3.weight)"
                )
        else:
            ratio = _ffn_ratio(hidden_size, ffn_inner_dim)
            if ratio is None:
                raise ConversionError(f"no mlp_ratio gives the SwiGLU width {ffn_inner_dim} of blocks.0.mlp.w3.weight")
            config["mlp_ratio"] = ratio
            sources["mlp_ratio"] = f"weights: blocks.0.mlp.w3.weight width {ffn_inner_dim}"

    preset = match_preset(config, family) if kind is C2I else None
    if kind is C2I:
        for field in ("in_context_start", "dropout"):
            if field not in config and preset is not None and field in PIXELGEN_PRESETS[preset]:
                config[field] = PIXELGEN_PRESETS[preset][field]
                sources[field] = f"preset {preset}"
        if "in_context_start" not in config:
            if config["in_context_len"] == 0:
                config["in_context_start"] = 0
                sources["in_context_start"] = "unused (no in-context tokens)"
            else:
                raise ConversionError(
                    "the weights do not say where the in-context tokens enter (in_context_start) and match no known "
                    f"preset (hidden_size {config['hidden_size']}, depth {config['depth']}); pass --config with the "
                    "upstream YAML, or --in-context-start"
                )
    return config, sources, preset


def build_transformer(kind: ModelKind, config: dict, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The diffusers transformer holding exactly `state_dict` (diffusers names); any missing, extra or misshapen
    tensor is an error that names it (in upstream names) and the config fields that decide its shape."""
    import torch

    transformer_class, _ = kind.classes()
    try:
        with torch.device("meta"):
            model = transformer_class(**config)
    except (ValueError, TypeError) as error:
        raise ConversionError(f"invalid architecture {config}: {one_line(error)}") from None

    expected = model.state_dict()
    if kind is C2I and config.get("in_context_len") == 0 and "in_context_pos_embed" not in state_dict:
        # Upstream creates no in-context table when in_context_len is 0; ours is an empty parameter.
        empty = torch.zeros(1, 0, config["hidden_size"], dtype=next(iter(state_dict.values())).dtype)
        state_dict = {**state_dict, "in_context_pos_embed": empty}
    missing = sorted(kind.key_map.to_upstream(key) or key for key in expected if key not in state_dict)
    unexpected = sorted(kind.key_map.to_upstream(key) or key for key in state_dict if key not in expected)
    if missing:
        raise ConversionError(f"missing weight keys: {list_keys(missing)}")
    if unexpected:
        raise ConversionError(f"unexpected weight keys (not part of the model): {list_keys(unexpected)}")
    for key, tensor in state_dict.items():
        if tensor.shape != expected[key].shape:
            upstream = kind.key_map.to_upstream(key) or key
            fields = ", ".join(f"{field}={config[field]}" for field in _shape_fields(key) if field in config)
            raise ConversionError(
                f"weight {upstream} has shape {_shape(tensor)}, but the architecture needs {_shape(expected[key])}"
                f" ({fields or 'see the config'})"
            )

    model.load_state_dict({key: tensor.contiguous() for key, tensor in state_dict.items()}, strict=True, assign=True)
    return model.eval()


def _shape_fields(key: str) -> tuple[str, ...]:
    """Config fields that decide the shape of a diffusers tensor, for error messages."""
    rules = (
        ("pos_embed", ("sample_size", "patch_size", "hidden_size")),
        ("text_pos_embed", ("txt_max_length", "hidden_size")),
        ("in_context_pos_embed", ("in_context_len", "hidden_size")),
        ("class_embedder", ("num_classes", "hidden_size")),
        ("patch_embedder", ("patch_size", "in_channels", "bottleneck_dim", "hidden_size")),
        ("text_embedder", ("txt_embed_dim", "hidden_size")),
        (".ff.", ("hidden_size", "mlp_ratio")),
        ("norm_q", ("hidden_size", "num_heads")),
        ("norm_k", ("hidden_size", "num_heads")),
        ("final_layer.proj_out", ("patch_size", "in_channels", "hidden_size")),
    )
    for fragment, fields in rules:
        if fragment in key:
            return fields
    return ("hidden_size",)
