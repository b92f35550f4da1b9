# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Quantized loading (`--quantize`): diffusers' `PipelineQuantizationConfig` for the transformer and, in text-to-image
folders, the Qwen3 text encoder.

Each choice is a diffusers / transformers quantization backend: torchao int8 weight-only (CPU and GPU), torchao
float8 weight-only (CUDA GPUs of compute capability 8.9+) and bitsandbytes 8-bit / 4-bit NF4 (CUDA). Only linear
layers are quantized; the modules a transformer lists in `_keep_in_fp32_modules` stay as they are. A backend that is
not installed, or that needs a GPU this machine lacks, is refused before anything loads.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from .model_folder import ModelFolderError


if TYPE_CHECKING:
    import torch
    from diffusers import PipelineQuantizationConfig


# `--quantize` name -> (the package it needs, whether it needs a CUDA GPU, what it is).
QUANTIZATION_CHOICES = {
    "int8wo": ("torchao", False, "torchao int8 weight-only"),
    "float8wo": ("torchao", True, "torchao float8 weight-only (CUDA, compute capability 8.9+)"),
    "bnb8": ("bitsandbytes", True, "bitsandbytes LLM.int8 8-bit (CUDA)"),
    "bnb4": ("bitsandbytes", True, "bitsandbytes 4-bit NF4 (CUDA)"),
}
# The components a `--quantize` choice applies to (those a folder does not hold are skipped).
QUANTIZED_COMPONENTS = ("transformer", "text_encoder")


def check_quantization(name: str, device: torch.device | str) -> None:
    """Refuses (ValueError) an unknown choice, a backend that is not installed, or a GPU backend on another device."""
    import torch

    if name not in QUANTIZATION_CHOICES:
        raise ModelFolderError(f"--quantize must be one of {', '.join(QUANTIZATION_CHOICES)}, got {name!r}")
    package, needs_gpu, description = QUANTIZATION_CHOICES[name]
    if importlib.util.find_spec(package) is None:
        raise ModelFolderError(
            f"--quantize {name} ({description}) needs {package}: pip install 'pixelgen-diffusers[quantization]'"
            + (" bitsandbytes" if package == "bitsandbytes" else "")
        )
    device = torch.device(device)
    if needs_gpu and device.type != "cuda":
        raise ModelFolderError(f"--quantize {name} ({description}) needs a CUDA GPU, got device {device}; use int8wo")
    if name == "float8wo" and torch.cuda.get_device_capability(device) < (8, 9):
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
        raise ModelFolderError(f"--quantize float8wo needs compute capability 8.9+ (Ada, Hopper), got {capability}")


def quantization_config(name: str, components: tuple[str, ...] = QUANTIZED_COMPONENTS) -> PipelineQuantizationConfig:
    """The `quantization_config` for `from_pretrained` of a `--quantize` choice, for `components` (diffusers models
    get diffusers' config class, the text encoder transformers')."""
    import diffusers
    import transformers

    if name not in QUANTIZATION_CHOICES:
        raise ModelFolderError(f"--quantize must be one of {', '.join(QUANTIZATION_CHOICES)}, got {name!r}")
    libraries = {"transformer": diffusers, "text_encoder": transformers}
    mapping = {}
    for component in components:
        library = libraries[component]
        if name in ("int8wo", "float8wo"):
            from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

            quant_type = Int8WeightOnlyConfig() if name == "int8wo" else Float8WeightOnlyConfig()
            mapping[component] = library.TorchAoConfig(quant_type)
        elif name == "bnb8":
            mapping[component] = library.BitsAndBytesConfig(load_in_8bit=True)
        else:
            import torch

            mapping[component] = library.BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
            )
    return diffusers.PipelineQuantizationConfig(quant_mapping=mapping)


def stored_bytes(module: torch.nn.Module) -> int:
    """Bytes the module's parameters and buffers occupy. A quantized weight (a torchao tensor subclass) reports its
    logical dtype, so `ModelMixin.get_memory_footprint` counts it at full size; here its inner tensors (int8 data,
    scales) are counted instead."""

    def size(tensor) -> int:
        if hasattr(tensor, "__tensor_flatten__"):
            names, _ = tensor.__tensor_flatten__()
            return sum(size(getattr(tensor, name)) for name in names)
        return tensor.numel() * tensor.element_size()

    return sum(size(tensor) for tensor in [*module.parameters(), *module.buffers()])


def load_quantized(model, name: str, device, **kwargs):
    """`load_pipeline(model, quantization_config=...)` for a `--quantize` choice, checked first (see
    `check_quantization`); only the components the folder holds are quantized."""
    from .hub import load_pipeline, resolve_model_folder

    check_quantization(name, device)
    folder = resolve_model_folder(model, **{key: kwargs[key] for key in ("revision", "token") if key in kwargs})
    components = tuple(component for component in QUANTIZED_COMPONENTS if (folder / component).is_dir())
    return load_pipeline(folder, quantization_config=quantization_config(name, components), **kwargs)
