# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Upstream PixelGen / JiT model classes as this package sees them: the one-to-one renaming of their weights
(`KeyMap`), and a `ModelKind` per class (class-to-image, text-to-image) holding everything model-specific, so that
both share one conversion. `detect_kind` tells them apart by their weight names."""

from __future__ import annotations

import dataclasses
import importlib
import re
from typing import TYPE_CHECKING, Any

from .model_folder import ConversionError


if TYPE_CHECKING:
    import torch


class KeyMap:
    """A one-to-one renaming between upstream and diffusers state-dict names.

    Each entry maps a name pattern to another; `{n}` stands for a block index and `{p}` for `weight` or `bias`.
    """

    _fields = {"n": r"(?P<n>\d+)", "p": r"(?P<p>weight|bias)"}

    def __init__(self, table: dict[str, str]):
        self.table = table
        self._forward = [(self._compile(source), target) for source, target in table.items()]
        self._backward = [(self._compile(target), source) for source, target in table.items()]

    @classmethod
    def _compile(cls, pattern: str) -> re.Pattern:
        regex = re.escape(pattern)
        for name, group in cls._fields.items():
            regex = regex.replace(re.escape("{" + name + "}"), group)
        return re.compile(regex)

    @staticmethod
    def _apply(rules, key: str) -> str | None:
        for regex, template in rules:
            match = regex.fullmatch(key)
            if match:
                return template.format(**match.groupdict())
        return None

    def to_diffusers(self, key: str) -> str | None:
        return self._apply(self._forward, key)

    def to_upstream(self, key: str) -> str | None:
        return self._apply(self._backward, key)

    def rename(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Upstream -> diffusers names; any key without a rule is an error that lists them all."""
        unmapped = sorted(key for key in state_dict if self.to_diffusers(key) is None)
        if unmapped:
            raise ConversionError(f"unexpected weight keys (not part of the model): {list_keys(unmapped)}")
        return {self.to_diffusers(key): tensor for key, tensor in state_dict.items()}


# Upstream `src/models/transformer/JiT.py` (reference section 2.4) -> PixelGenTransformer2DModel.
C2I_KEY_MAP = KeyMap(
    {
        "pos_embed": "pos_embed",
        "in_context_posemb": "in_context_pos_embed",
        "t_embedder.mlp.0.{p}": "time_embedder.linear_1.{p}",
        "t_embedder.mlp.2.{p}": "time_embedder.linear_2.{p}",
        "y_embedder.embedding_table.weight": "class_embedder.weight",
        "x_embedder.proj1.{p}": "patch_embedder.proj_in.{p}",
        "x_embedder.proj2.{p}": "patch_embedder.proj_out.{p}",
        "blocks.{n}.norm1.weight": "transformer_blocks.{n}.norm1.weight",
        "blocks.{n}.norm2.weight": "transformer_blocks.{n}.norm2.weight",
        "blocks.{n}.attn.qkv.{p}": "transformer_blocks.{n}.attn.to_qkv.{p}",
        "blocks.{n}.attn.q_norm.weight": "transformer_blocks.{n}.attn.norm_q.weight",
        "blocks.{n}.attn.k_norm.weight": "transformer_blocks.{n}.attn.norm_k.weight",
        "blocks.{n}.attn.proj.{p}": "transformer_blocks.{n}.attn.to_out.{p}",
        "blocks.{n}.mlp.w12.{p}": "transformer_blocks.{n}.ff.proj_in.{p}",
        "blocks.{n}.mlp.w3.{p}": "transformer_blocks.{n}.ff.proj_out.{p}",
        "blocks.{n}.adaLN_modulation.1.{p}": "transformer_blocks.{n}.adaln_modulation.{p}",
        "final_layer.norm_final.weight": "final_layer.norm.weight",
        "final_layer.linear.{p}": "final_layer.proj_out.{p}",
        "final_layer.adaLN_modulation.1.{p}": "final_layer.adaln_modulation.{p}",
    }
)

# Upstream `src/models/transformer/JiT_T2I.py` (reference section 3.4) -> PixelGenT2ITransformer2DModel.
T2I_KEY_MAP = KeyMap(
    {
        "pos_embed": "pos_embed",
        "y_pos_embedding": "text_pos_embed",
        "x_embedder.proj1.{p}": "patch_embedder.proj_in.{p}",
        "x_embedder.proj2.{p}": "patch_embedder.proj_out.{p}",
        "t_embedder.mlp.0.{p}": "time_embedder.linear_1.{p}",
        "t_embedder.mlp.2.{p}": "time_embedder.linear_2.{p}",
        "y_embedder.proj.{p}": "text_embedder.proj.{p}",
        "y_embedder.norm.weight": "text_embedder.norm.weight",
        "blocks.{n}.norm1.weight": "transformer_blocks.{n}.norm1.weight",
        "blocks.{n}.norm2.weight": "transformer_blocks.{n}.norm2.weight",
        "blocks.{n}.attn.qkv_x.{p}": "transformer_blocks.{n}.attn.to_qkv.{p}",
        "blocks.{n}.attn.kv_y.{p}": "transformer_blocks.{n}.attn.to_added_kv.{p}",
        "blocks.{n}.attn.q_norm.weight": "transformer_blocks.{n}.attn.norm_q.weight",
        "blocks.{n}.attn.k_norm.weight": "transformer_blocks.{n}.attn.norm_k.weight",
        "blocks.{n}.attn.proj.{p}": "transformer_blocks.{n}.attn.to_out.{p}",
        "blocks.{n}.mlp.w12.{p}": "transformer_blocks.{n}.ff.proj_in.{p}",
        "blocks.{n}.mlp.w3.{p}": "transformer_blocks.{n}.ff.proj_out.{p}",
        "blocks.{n}.adaLN_modulation.0.{p}": "transformer_blocks.{n}.adaln_modulation.{p}",
        "text_refine_blocks.{n}.norm1.weight": "text_refiner_blocks.{n}.norm1.weight",
        "text_refine_blocks.{n}.norm2.weight": "text_refiner_blocks.{n}.norm2.weight",
        "text_refine_blocks.{n}.attn.qkv.{p}": "text_refiner_blocks.{n}.attn.to_qkv.{p}",
        "text_refine_blocks.{n}.attn.q_norm.weight": "text_refiner_blocks.{n}.attn.norm_q.weight",
        "text_refine_blocks.{n}.attn.k_norm.weight": "text_refiner_blocks.{n}.attn.norm_k.weight",
        "text_refine_blocks.{n}.attn.proj.{p}": "text_refiner_blocks.{n}.attn.to_out.{p}",
        "text_refine_blocks.{n}.mlp.w12.{p}": "text_refiner_blocks.{n}.ff.proj_in.{p}",
        "text_refine_blocks.{n}.mlp.w3.{p}": "text_refiner_blocks.{n}.ff.proj_out.{p}",
        "text_refine_blocks.{n}.adaLN_modulation.0.{p}": "text_refiner_blocks.{n}.adaln_modulation.{p}",
        "final_layer.linear.{p}": "final_layer.proj_out.{p}",
    }
)


def list_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """Everything the converter needs to know about one upstream model class."""

    name: str  # "c2i" or "t2i"
    upstream_class: str  # the YAML's `model.denoiser.class_path`, last two components
    key_map: KeyMap
    # upstream constructor argument -> (diffusers config field, upstream default)
    yaml_fields: dict[str, tuple[str, Any]]
    transformer_module: str
    transformer_class: str
    pipeline_module: str
    pipeline_class: str

    def classes(self) -> tuple[type, type]:
        transformer_module = importlib.import_module(f"pixelgen_diffusers.{self.transformer_module}")
        pipeline_module = importlib.import_module(f"pixelgen_diffusers.{self.pipeline_module}")
        return getattr(transformer_module, self.transformer_class), getattr(pipeline_module, self.pipeline_class)


C2I = ModelKind(
    name="c2i",
    upstream_class="JiT.JiT",
    key_map=C2I_KEY_MAP,
    yaml_fields={
        "input_size": ("sample_size", 256),
        "patch_size": ("patch_size", 16),
        "in_channels": ("in_channels", 3),
        "hidden_size": ("hidden_size", 1024),
        "depth": ("depth", 24),
        "num_heads": ("num_heads", 16),
        "mlp_ratio": ("mlp_ratio", 4.0),
        "attn_drop": ("attention_dropout", 0.0),
        "proj_drop": ("dropout", 0.0),
        "num_classes": ("num_classes", 1000),
        "bottleneck_dim": ("bottleneck_dim", 128),
        "in_context_len": ("in_context_len", 32),
        "in_context_start": ("in_context_start", 8),
    },
    transformer_module="models.transformer_jit",
    transformer_class="PixelGenTransformer2DModel",
    pipeline_module="pipelines.pipeline_pixelgen_c2i",
    pipeline_class="PixelGenC2IPipeline",
)

T2I = ModelKind(
    name="t2i",
    upstream_class="JiT_T2I.JiT_T2I",
    key_map=T2I_KEY_MAP,
    yaml_fields={
        "input_size": ("sample_size", 256),
        "patch_size": ("patch_size", 2),
        "in_channels": ("in_channels", 4),
        "hidden_size": ("hidden_size", 1152),
        "num_blocks": ("depth", 18),
        "num_groups": ("num_heads", 12),
        "num_text_blocks": ("num_text_blocks", 4),
        "txt_embed_dim": ("txt_embed_dim", 1024),
        "txt_max_length": ("txt_max_length", 100),
        "bottleneck_dim": ("bottleneck_dim", 256),
    },
    transformer_module="models.transformer_jit_t2i",
    transformer_class="PixelGenT2ITransformer2DModel",
    pipeline_module="pipelines.pipeline_pixelgen_t2i",
    pipeline_class="PixelGenT2IPipeline",
)

MODEL_KINDS = {kind.name: kind for kind in (C2I, T2I)}


def detect_kind(state_dict: dict[str, torch.Tensor]) -> ModelKind:
    if "y_pos_embedding" in state_dict or any(key.startswith("text_refine_blocks.") for key in state_dict):
        return T2I
    if "y_embedder.embedding_table.weight" in state_dict or any(key.startswith("blocks.") for key in state_dict):
        return C2I
    raise ConversionError(
        "not a PixelGen/JiT checkpoint: its weights have none of the upstream names (pos_embed, blocks.N.*, "
        f"y_embedder.*); found {list_keys(sorted(state_dict), 5)}"
    )
