# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Upstream PixelGen / JiT checkpoints -> self-contained diffusers model folders (`pixelgen convert`).

Reads a PixelGen Lightning checkpoint (`*.ckpt`, weights under `state_dict` as `ema_denoiser.*` / `denoiser.*`), an
original JiT checkpoint (`checkpoint-*.pth`, `model` / `model_ema1` / `model_ema2` with a `net.` prefix) or a bare
upstream state dict; renames every tensor one-to-one to this package's names (anything unmapped is an error);
takes the architecture from the upstream YAML or from the tensor shapes; and writes a folder that loads with plain
diffusers, with the upstream evaluation recipe stored as the pipeline's defaults.

Everything model-specific lives in a `ModelKind` (class-to-image and text-to-image), so both share one pipeline.
torch, yaml and the models are imported where they are used, so that `pixelgen convert --help` is instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import importlib
import json
import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..utils import (
    DTYPE_NAMES,
    check_number,
    check_shard_size,
    one_line,
    torch_dtype,
)
from .export import (
    check_output_dir,
    folder_size,
    format_size,
    render_model_card,
    write_model_folder,
)
from .model_folder import ModelFolderError


if TYPE_CHECKING:
    import torch


WEIGHT_CHOICES = ("ema", "online", "ema1", "ema2")
DEFAULT_TEXT_ENCODER = "Qwen/Qwen3-1.7B"


class ConversionError(ModelFolderError):
    """A problem with the user's input; the CLI prints it as one line."""


# ----------------------------------------------------------------------------------------------------- key mapping
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
            raise ConversionError(f"unexpected weight keys (not part of the model): {_list_keys(unmapped)}")
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


def _list_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


# ------------------------------------------------------------------------------------------------ sampling defaults
@dataclasses.dataclass(frozen=True)
class SamplingDefaults:
    """A sampling recipe: written to the scheduler config (method, shift, order) and the pipeline config (the rest)."""

    sampling_method: str
    num_inference_steps: int
    guidance_scale: float
    guidance_interval_min: float
    guidance_interval_max: float
    timeshift: float
    noise_scale: float = 1.0
    solver_order: int = 2

    def check(self) -> "SamplingDefaults":
        """A recipe that would make the written folder fail or draw black images is refused before any folder is
        written: the pipeline's and the scheduler's own checks, run on these values (here, not at construction, so
        that importing this module needs no torch)."""
        from ..pipelines.pipeline_pixelgen_c2i import PixelGenC2IPipeline
        from ..schedulers.scheduling_pixelgen import PixelGenScheduler

        PixelGenScheduler.check_options(self.sampling_method, self.timeshift, self.solver_order)
        PixelGenC2IPipeline.check_sampling_defaults(
            self.num_inference_steps,
            self.guidance_scale,
            self.guidance_interval_min,
            self.guidance_interval_max,
            self.noise_scale,
        )
        return self

    def scheduler_config(self) -> dict:
        return dict(sampling_method=self.sampling_method, timeshift=self.timeshift, solver_order=self.solver_order)

    def pipeline_config(self) -> dict:
        return dict(
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            guidance_interval_min=self.guidance_interval_min,
            guidance_interval_max=self.guidance_interval_max,
            noise_scale=self.noise_scale,
        )


# The upstream evaluation recipes (reference section 4.4).
RECOMMENDED_SETTINGS = {
    # configs_c2i/PixelGen_XL.yaml: FID 1.83 with the 160-epoch weights.
    "PixelGen-XL/16": SamplingDefaults("heun", 50, 2.25, 0.1, 0.9, timeshift=2.0),
    # configs_c2i/PixelGen_Large.yaml (the paper's Table 1); also used for JiT models, with JiT's noise scale.
    "PixelGen-L/16": SamplingDefaults("euler", 50, 1.0, 0.1, 1.0, timeshift=1.0),
    # configs_t2i/sft_res512.yaml (GenEval) and app.py.
    "PixelGen-XXL/16-T2I": SamplingDefaults("adam_lm", 25, 4.0, 0.0, 1.0, timeshift=3.0, solver_order=2),
}
# Original JiT trains and samples larger images with proportionally larger noise; PixelGen always uses 1.0.
JIT_NOISE_SCALE = {256: 1.0, 512: 2.0, 1024: 4.0}

UPSTREAM_SAMPLERS = {"HeunSamplerJiT": "heun", "EulerSamplerJiT": "euler", "AdamLMSamplerJiT": "adam_lm"}
# Original JiT's sampling arguments (main_jit.py), saved with its checkpoints -> the SamplingDefaults field each sets.
JIT_SAMPLING_ARGS = {
    "sampling_method": "sampling_method",
    "num_sampling_steps": "num_inference_steps",
    "cfg": "guidance_scale",
    "interval_min": "guidance_interval_min",
    "interval_max": "guidance_interval_max",
    "noise_scale": "noise_scale",
}


# ------------------------------------------------------------------------------------------------------ model kinds
@dataclasses.dataclass(frozen=True)
class ModelKind:
    """Everything the converter needs to know about one upstream model class."""

    name: str  # "c2i" or "t2i"
    upstream_class: str  # the YAML's `model.denoiser.class_path`, last two components
    key_map: KeyMap
    # upstream constructor argument -> (diffusers config field, upstream default)
    yaml_fields: dict[str, tuple[str, Any]]
    infer_architecture: Callable[[dict[str, torch.Tensor]], dict[str, tuple[Any, str]]]
    transformer_module: str
    transformer_class: str
    pipeline_module: str
    pipeline_class: str

    def classes(self) -> tuple[type, type]:
        transformer_module = importlib.import_module(f"pixelgen_diffusers.{self.transformer_module}")
        pipeline_module = importlib.import_module(f"pixelgen_diffusers.{self.pipeline_module}")
        return getattr(transformer_module, self.transformer_class), getattr(pipeline_module, self.pipeline_class)


def _required(state_dict: dict[str, torch.Tensor], *keys: str) -> list[torch.Tensor]:
    missing = [key for key in keys if key not in state_dict]
    if missing:
        raise ConversionError(f"missing weight keys: {_list_keys(missing)}")
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
    infer_architecture=_infer_c2i,
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
    infer_architecture=_infer_t2i,
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
        f"y_embedder.*); found {_list_keys(sorted(state_dict), 5)}"
    )


# ------------------------------------------------------------------------------------------------- reading inputs
def load_checkpoint(path: str | Path, allow_pickle: bool = False) -> Any:
    """`torch.load` with `weights_only=True` unless `allow_pickle`; every failure becomes a one-line error."""
    import torch

    path = Path(path)
    if not path.exists():
        raise ConversionError(f"source checkpoint not found: {path}")
    if not path.is_file():
        raise ConversionError(f"source checkpoint is not a file: {path}")
    if path.stat().st_size == 0:
        raise ConversionError(f"source checkpoint {path} is empty (0 bytes): the file is truncated or corrupt")
    try:
        with open(path, "rb") as file:
            head = file.read(512)
    except OSError as error:
        raise ConversionError(f"cannot read source checkpoint {path}: {error.strerror or error}") from None
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # neither torch.save format (a zip archive, a pickle)
        hint = ""
        if _looks_like_yaml_config(path, head):
            hint = "; it is a YAML file (an upstream YAML config goes to --config, with the checkpoint as SOURCE)"
        raise ConversionError(
            f"{path.name} is not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle){hint}"
        )
    try:
        # mmap keeps multi-GB Lightning files (two weight copies, optimizer state) out of memory.
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if found:  # a well-formed file that holds Python objects besides tensors (JiT saves an argparse.Namespace)
            raise ConversionError(
                f"{path.name} cannot be loaded as plain tensors (it contains {found.group(1)}): it needs pickle, which"
                " can run arbitrary code. If you trust the file, pass --allow-pickle (allow_pickle=True)"
            ) from None
        raise ConversionError(f"{path.name} is truncated or corrupt ({one_line(error)})") from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, pickle.PickleError) as error:
        raise ConversionError(f"{path.name} is truncated or corrupt ({one_line(error)})") from None
    except ModuleNotFoundError as error:
        raise ConversionError(f"{path.name} needs the Python module {error.name!r} to unpickle") from None
    except OSError as error:  # unreadable (permissions, I/O error)
        raise ConversionError(f"cannot read source checkpoint {path}: {error.strerror or error}") from None


def _looks_like_yaml_config(path: Path, head: bytes) -> bool:
    """Whether a (small, text) file parses as a YAML mapping, e.g. an upstream config given as the checkpoint."""
    import yaml

    try:
        head.decode("utf-8")
        if path.stat().st_size > 1 << 20:
            return False
        return isinstance(yaml.safe_load(path.read_text()), dict)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False


def _is_state_dict(value: Any) -> bool:
    import torch

    return (
        isinstance(value, dict) and bool(value) and all(isinstance(tensor, torch.Tensor) for tensor in value.values())
    )


@dataclasses.dataclass
class SelectedWeights:
    state_dict: dict[str, torch.Tensor]  # upstream names, prefix stripped
    source_format: str  # "lightning", "jit" or "state_dict"
    weights: str  # e.g. "ema_denoiser", "model_ema1"
    dropped_keys: list[str]  # tensors in the file that are not converted (other copy, REPA projector, ...)
    ignored_entries: list[str]  # other top-level entries (optimizer state, epoch, ...)
    jit_args: dict | None = None  # JiT's training arguments, when the file carries them


def select_weights(checkpoint: Any, weights: str = "ema") -> SelectedWeights:
    """Picks one copy of the denoiser's weights out of an upstream checkpoint and strips its prefix.

    `weights` is one of `WEIGHT_CHOICES` (checked by `convert_checkpoint` before the checkpoint is read)."""
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"not a PixelGen/JiT checkpoint: the file holds a {type(checkpoint).__name__}")

    if isinstance(checkpoint.get("state_dict"), dict):  # PixelGen Lightning checkpoint
        if weights not in ("ema", "online"):
            raise ConversionError(f"--weights {weights} is for JiT checkpoints; a PixelGen checkpoint has ema|online")
        prefix = "ema_denoiser." if weights == "ema" else "denoiser."
        full = checkpoint["state_dict"]
        selected = {key[len(prefix) :]: value for key, value in full.items() if key.startswith(prefix)}
        if not selected:
            copies = sorted({key.split(".", 1)[0] for key in full})
            raise ConversionError(
                f"the checkpoint has no {prefix}* weights (--weights {weights}); it has: {', '.join(copies) or 'none'}"
            )
        dropped = sorted(key for key in full if not key.startswith(prefix))
        ignored = sorted(key for key in checkpoint if key != "state_dict")
        return SelectedWeights(_tensors_only(selected), "lightning", prefix[:-1], dropped, ignored)

    jit_copies = {"online": "model", "ema": "model_ema1", "ema1": "model_ema1", "ema2": "model_ema2"}
    if any(name in checkpoint for name in ("model", "model_ema1", "model_ema2")):  # original JiT checkpoint
        entry = jit_copies[weights]
        if not isinstance(checkpoint.get(entry), dict):
            available = [name for name in ("model", "model_ema1", "model_ema2") if name in checkpoint]
            raise ConversionError(f"the JiT checkpoint has no {entry!r} weights; it has: {', '.join(available)}")
        full = checkpoint[entry]
        selected = {key[len("net.") :]: value for key, value in full.items() if key.startswith("net.")}
        if not selected:
            raise ConversionError(f"not a JiT checkpoint: {entry!r} has no net.* weights")
        dropped = sorted(f"{entry}.{key}" for key in full if not key.startswith("net."))
        dropped += sorted(
            f"{name}.*" for name in ("model", "model_ema1", "model_ema2") if name in checkpoint and name != entry
        )
        ignored = sorted(key for key in checkpoint if key not in ("model", "model_ema1", "model_ema2"))
        args = checkpoint.get("args")
        jit_args = vars(args) if isinstance(args, argparse.Namespace) else args if isinstance(args, dict) else None
        return SelectedWeights(_tensors_only(selected), "jit", entry, dropped, ignored, jit_args)

    if _is_state_dict(checkpoint):  # a bare upstream state dict (e.g. extracted the way app.py does)
        if weights != "ema":
            raise ConversionError("--weights applies to Lightning/JiT checkpoints; this file is a bare state dict")
        for prefix in ("ema_denoiser.", "net."):
            if all(key.startswith(prefix) for key in checkpoint):
                checkpoint = {key[len(prefix) :]: value for key, value in checkpoint.items()}
        return SelectedWeights(dict(checkpoint), "state_dict", "state_dict", [], [])

    found = ", ".join(sorted(map(str, checkpoint))[:8]) or "nothing"
    raise ConversionError(
        f"not a PixelGen/JiT checkpoint: expected a Lightning `state_dict` or JiT `model`/`model_ema1` entry, "
        f"found {found}"
    )


def _tensors_only(state_dict: dict) -> dict[str, torch.Tensor]:
    import torch

    bad = sorted(key for key, value in state_dict.items() if not isinstance(value, torch.Tensor))
    if bad:
        raise ConversionError(f"not a PixelGen/JiT checkpoint: entries that are not tensors: {_list_keys(bad)}")
    return state_dict


def read_upstream_config(path: str | Path) -> dict:
    """The upstream Lightning/jsonargparse YAML as a dict (anchors resolved)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"--config file not found: {path}")
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConversionError(f"cannot read --config {path}: {one_line(error)}") from None
    model = config.get("model") if isinstance(config, dict) else None
    denoiser = model.get("denoiser") if isinstance(model, dict) else None
    if not isinstance(denoiser, dict) or "class_path" not in denoiser:
        raise ConversionError(f"--config {path.name} is not a PixelGen config: it has no model.denoiser.class_path")
    return config


def read_labels(path: str | Path, num_classes: int) -> dict[int, str]:
    """Class names from JSON (a list, or an object id -> name) or from a text file with one name per line."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConversionError(f"cannot read --labels {path}: {one_line(error)}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConversionError(f"--labels {path.name} is not valid JSON: {error}") from None
        if isinstance(data, list):
            labels = dict(enumerate(map(str, data)))
        elif isinstance(data, dict):
            try:
                labels = {int(key): str(value) for key, value in data.items()}
            except ValueError:
                raise ConversionError(f"--labels {path.name}: keys must be class ids (integers)") from None
        else:
            raise ConversionError(f"--labels {path.name} must hold a list of names or an object id -> name")
    else:
        labels = dict(enumerate(line.strip() for line in text.splitlines() if line.strip()))
    if sorted(labels) != list(range(num_classes)):
        raise ConversionError(
            f"--labels {path.name} names {len(labels)} classes with ids {min(labels, default=0)}.."
            f"{max(labels, default=-1)}, but the model has {num_classes} classes (ids 0..{num_classes - 1})"
        )
    return labels


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------- architecture
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

    inferred = kind.infer_architecture(state_dict)
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
        raise ConversionError(f"missing weight keys: {_list_keys(missing)}")
    if unexpected:
        raise ConversionError(f"unexpected weight keys (not part of the model): {_list_keys(unexpected)}")
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


def sampling_from_config(upstream_config: dict, config_name: str = "--config") -> tuple[SamplingDefaults, list[str]]:
    """The YAML's `diffusion_sampler` (with upstream's constructor defaults) and its prediction noise scale."""
    sampler = upstream_config.get("model", {}).get("diffusion_sampler")
    if not isinstance(sampler, dict) or "class_path" not in sampler:
        raise ConversionError(f"{config_name} has no model.diffusion_sampler.class_path")
    class_name = str(sampler["class_path"]).rsplit(".", 1)[-1]
    if class_name not in UPSTREAM_SAMPLERS:
        raise ConversionError(
            f"{config_name} model.diffusion_sampler is {class_name}; supported: {', '.join(UPSTREAM_SAMPLERS)}"
        )
    args = sampler.get("init_args") or {}
    notes = []
    guidance = args.get("guidance", 1.0)
    if not isinstance(guidance, (int, float)):
        raise ConversionError(f"{config_name} diffusion_sampler guidance must be one number, got {guidance!r}")
    if class_name == "HeunSamplerJiT" and not args.get("exact_henu", False):
        notes.append("the YAML's Heun sampler has exact_henu false; the exact Heun solver is used instead")
    if args.get("last_step") is not None:
        notes.append(f"the YAML's last_step {args['last_step']} is ignored (the grid ends at t = 1 - 1/N)")
    noise_scale = 1.0
    for dataset in ("pred_dataset", "eval_dataset"):
        dataset_args = (upstream_config.get("data", {}).get(dataset) or {}).get("init_args") or {}
        if "noise_scale" in dataset_args:
            noise_scale = dataset_args["noise_scale"]
            if isinstance(noise_scale, bool) or not isinstance(noise_scale, (int, float)):
                raise ConversionError(f"{config_name} data.{dataset}.init_args.noise_scale must be a number")
            noise_scale = float(noise_scale)
            break
    values = {
        "num_steps": args.get("num_steps", 250),  # upstream BaseSampler's default
        "guidance": guidance,
        "guidance_interval_min": args.get("guidance_interval_min", 0.0),
        "guidance_interval_max": args.get("guidance_interval_max", 1.0),
        "timeshift": args.get("timeshift", 1.0),
        "order": args.get("order", 2),
    }
    for key, value in values.items():
        integer = key in ("num_steps", "order")
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            kind = "an integer" if integer else "a number"
            raise ConversionError(f"{config_name} diffusion_sampler {key} must be {kind}, got {value!r}")
    try:
        defaults = SamplingDefaults(
            sampling_method=UPSTREAM_SAMPLERS[class_name],
            num_inference_steps=values["num_steps"],
            guidance_scale=float(guidance),
            guidance_interval_min=float(values["guidance_interval_min"]),
            guidance_interval_max=float(values["guidance_interval_max"]),
            timeshift=float(values["timeshift"]),
            noise_scale=noise_scale,
            solver_order=values["order"],
        ).check()
    except ValueError as error:  # NaN, infinite or out-of-range values would make the folder draw black images
        raise ConversionError(f"{config_name} model.diffusion_sampler: {error}") from None
    return defaults, notes


def recommended_defaults(
    kind: ModelKind, preset: str | None, family: str, config: dict
) -> tuple[SamplingDefaults, str]:
    """The upstream evaluation recipe for a model converted without its YAML."""
    if kind is T2I:
        return RECOMMENDED_SETTINGS["PixelGen-XXL/16-T2I"], "recommended table: PixelGen-XXL/16-T2I"
    if family == "pixelgen" and (preset == "PixelGen-XL/16" or config.get("bottleneck_dim") is None):
        return RECOMMENDED_SETTINGS["PixelGen-XL/16"], "recommended table: PixelGen-XL/16"
    defaults = RECOMMENDED_SETTINGS["PixelGen-L/16"]
    if family == "jit":
        size = config["sample_size"]
        noise_scale = JIT_NOISE_SCALE.get(size, max(1.0, size / 256))
        return dataclasses.replace(defaults, noise_scale=noise_scale), f"recommended table: JiT at {size}px"
    return defaults, "recommended table: PixelGen-L/16"


def defaults_from_jit_args(defaults: SamplingDefaults, jit_args: dict) -> tuple[SamplingDefaults, list[str]]:
    """The sampling recipe an original JiT checkpoint carries in its saved arguments (the one its own evaluation
    used), over `defaults`; JiT's time grid is unshifted. Returns the recipe and the arguments it took."""
    changes, taken = {}, []
    for argument, field in JIT_SAMPLING_ARGS.items():
        value = jit_args.get(argument)
        if value is None:
            continue
        if field == "sampling_method":
            value = str(value).lower()
            if value not in ("heun", "euler"):
                raise ConversionError(
                    f"the checkpoint's args.sampling_method {value!r} is not a JiT sampler (heun, euler)"
                )
        else:
            value = int(value) if field == "num_inference_steps" else float(value)
        changes[field] = value
        taken.append(argument)
    if taken:
        changes["timeshift"] = 1.0
    return dataclasses.replace(defaults, **changes), taken


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
    check_output_dir(output_dir, overwrite, source)
    upstream_config = read_upstream_config(config) if config is not None else None
    config_name = f"--config {Path(config).name}" if config is not None else "--config"

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
            "size_bytes": source.stat().st_size,
            "sha256": file_sha256(source),
            "format": selected.source_format,
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


def _class_names(num_classes: int, labels: str | Path | None) -> dict[int, str]:
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
