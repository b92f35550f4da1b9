# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The sampling core both PixelGen pipelines share: input checks, the time grid and guidance mask, guided clean-image
prediction under diffusers' caches, the velocity conversion and scheduler step, the denoising loop, saving
self-contained folders, and diffusers' LoRA interface.

Ships in model folders next to `pipeline.py`, which imports it with a single-dot relative import: diffusers copies a
remote-code module's relative imports along with it (`diffusers.utils.dynamic_modules_utils.get_relative_imports`),
for local folders and Hub repos alike. Imports only torch and diffusers.
"""

import importlib
import inspect
import json
import logging
import math
import numbers
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers.hooks import FasterCacheConfig, MagCacheConfig
from diffusers.loaders.lora_base import LoraBaseMixin, _fetch_state_dict, _func_optionally_disable_offloading
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler
from diffusers.utils.dynamic_modules_utils import get_relative_import_files
from diffusers.utils.torch_utils import randn_tensor


logger = logging.getLogger(__name__)

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
# Stock schedulers that integrate the flow-matching ODE in sigma = 1 - t (multistep solvers qualify through their
# `use_flow_sigmas` / `prediction_type="flow_prediction"` config instead).
FLOW_MATCH_SCHEDULERS = (FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler)
# Lower clamp of 1 - t when a clean-image prediction becomes a velocity (upstream's t_eps).
X_PREDICTION_T_EPS = 0.05
# Bound on scale-like numbers (guidance_scale, noise_scale, LoRA scales and weights): far beyond any useful setting,
# and far enough below float32's 3.4e38 that the products a sampling run forms (velocities up to 1 / t_eps = 20 times
# the pixel range, times the scale, through a few hundred steps) stay finite. 1e308 would turn every image black.
MAX_SCALE = 1e6


# Copied from pixelgen_diffusers.utils.check_number
def check_number(name, value, *, integer=False, minimum=None, maximum=None, exclusive_minimum=False):
    """Returns `value` if it is a finite real number (an integer, not a bool, when `integer`) in
    [`minimum`, `maximum`] (or (`minimum`, ...] with `exclusive_minimum`); otherwise raises a ValueError naming
    `name`, the value and the accepted range. NaN and infinities are never accepted: they turn images black."""
    kind = "an integer" if integer else "a finite number"
    if integer and minimum == 1 and maximum is None:
        accepted = "a positive integer"
    elif minimum is not None and maximum is not None:
        accepted = f"{kind} in {'(' if exclusive_minimum else '['}{minimum}, {maximum}]"
    elif minimum is not None:
        accepted = f"{kind} {'>' if exclusive_minimum else '>='} {minimum}"
    elif maximum is not None:
        accepted = f"{kind} <= {maximum}"
    else:
        accepted = kind
    wanted = numbers.Integral if integer else numbers.Real
    valid = isinstance(value, wanted) and not isinstance(value, bool) and math.isfinite(value)
    if valid and minimum is not None:
        valid = value > minimum if exclusive_minimum else value >= minimum
    if valid and maximum is not None:
        valid = value <= maximum
    if not valid:
        raise ValueError(f"{name} must be {accepted}, got {value!r}.")
    return value


# Copied from pixelgen_diffusers.models.jit_layers.mark_dynamic_shapes
def mark_dynamic_shapes(tensor: torch.Tensor, dim: int = 0) -> None:
    """Marks a size that changes between calls so that torch.compile traces it symbolically once instead of
    recompiling: the batch (guided steps run 2B rows, unguided ones B) or the length of a RoPE table (a block attends
    over as many tokens as its table covers, fewer before the in-context tokens enter). "Unbacked", so that compile
    does not specialise sizes 0 and 1 (B = 1, or no passive tokens left). Costs nothing eagerly; a no-op inside a
    compiled region."""
    if not torch.compiler.is_compiling():
        torch._dynamo.decorators.mark_unbacked(tensor, dim)


def _drop_empty_float32_warning(record: logging.LogRecord) -> bool:
    """A logging filter: False for diffusers' "should be kept in float32: []" warning, which names no module."""
    return "should be kept in float32: []" not in record.getMessage()


def check_lora_number(name: str, value) -> float:
    """A LoRA scale, weight or alpha: a finite number in [-MAX_SCALE, MAX_SCALE] (NaN or 1e308 would poison the
    weights, for good once fused)."""
    return check_number(name, value, minimum=-MAX_SCALE, maximum=MAX_SCALE)


# Copied from pixelgen_diffusers.conversion.hub.looks_like_a_local_path
def looks_like_a_local_path(id_or_path: str | Path) -> bool:
    """Absolute, home-relative (`~`) or explicitly relative (`./`, `../`) paths name folders, never Hub repos."""
    text = str(id_or_path)
    return isinstance(id_or_path, Path) or Path(text).is_absolute() or text.startswith(("~", "./", "../", ".\\"))


class PixelGenLoraLoaderMixin(LoraBaseMixin):
    r"""
    diffusers' LoRA interface for PixelGen pipelines, on diffusers' own machinery (`LoraBaseMixin`, the transformer's
    `PeftAdapterMixin`), as `SanaLoraLoaderMixin` does for Sana: `load_lora_weights` (a file, a folder or a Hub id),
    `save_lora_weights`, `fuse_lora` / `unfuse_lora`, `unload_lora_weights`, `set_adapters`, `delete_adapters`, ...
    Files are diffusers' format: `pytorch_lora_weights.safetensors`, keys `transformer.<module>.lora_A.weight`, the
    peft adapter config in the metadata. It ships with the pipeline, so that model folders stay self-contained.
    """

    _lora_loadable_modules = ["transformer"]
    transformer_name = "transformer"

    @classmethod
    def lora_state_dict(cls, pretrained_model_name_or_path_or_dict, **kwargs):
        """The LoRA tensors of a safetensors file, a folder holding one, a Hub id or a dict; with
        `return_lora_metadata=True`, also the adapter metadata (None for a dict). Pickle files (`.bin`, `.pt`) load
        only with `allow_pickle=True` (then with `torch.load(weights_only=True)`).

        Raises:
            ValueError: naming the file, for a file that is not a readable LoRA (truncated, empty, not safetensors,
                malformed metadata, tensors of the wrong rank or shape, non-finite alpha), a kohya-style file, or a
                training checkpoint's `training_state/` folder.
        """
        return_metadata = kwargs.pop("return_lora_metadata", False)
        allow_pickle = kwargs.pop("allow_pickle", False)
        source, weight_name = pretrained_model_name_or_path_or_dict, kwargs.pop("weight_name", None)
        local = None
        if isinstance(source, (str, os.PathLike)) and looks_like_a_local_path(source):
            source = os.path.expanduser(os.fspath(source))
            if not os.path.exists(source):
                raise ValueError(f"LoRA file or folder not found: {pretrained_model_name_or_path_or_dict}")
        if isinstance(source, (str, os.PathLike)) and os.path.exists(source):
            local = os.fspath(source)
            if os.path.isdir(local) and os.path.isfile(os.path.join(local, "state.json")):
                raise ValueError(
                    f"{local} is a training checkpoint's resume state (training_state/), not a LoRA: pass its"
                    f" checkpoint folder {os.path.dirname(os.path.abspath(local))}, which holds"
                    " pytorch_lora_weights.safetensors."
                )
        if local is not None and os.path.isfile(local):
            source, weight_name = os.path.split(local)
        name = weight_name or ""
        if local is not None and name and not name.endswith(".safetensors") and not allow_pickle:
            raise ValueError(
                f"{local} is not a safetensors file: LoRAs load from safetensors only, since unpickling a file can run"
                " code. Pass allow_pickle=True if you trust it (it is then read with torch.load(weights_only=True))."
            )
        try:
            state_dict, metadata = _fetch_state_dict(
                pretrained_model_name_or_path_or_dict=source,
                weight_name=weight_name,
                use_safetensors=not allow_pickle,
                local_files_only=kwargs.pop("local_files_only", None),
                cache_dir=kwargs.pop("cache_dir", None),
                force_download=kwargs.pop("force_download", False),
                proxies=kwargs.pop("proxies", None),
                token=kwargs.pop("token", None),
                revision=kwargs.pop("revision", None),
                subfolder=kwargs.pop("subfolder", None),
                user_agent={"file_type": "attn_procs_weights", "framework": "pytorch"},
                allow_pickle=allow_pickle,
            )
        except Exception as error:
            if local is None:
                raise
            raise ValueError(
                f"{local} is not a readable LoRA file ({type(error).__name__}: {str(error).splitlines()[0]:.200})."
            ) from error
        label = local if local is not None else "the LoRA state dict"
        cls.check_lora_state_dict(state_dict, metadata, label)
        return (state_dict, metadata) if return_metadata else state_dict

    @classmethod
    def check_lora_state_dict(cls, state_dict, metadata, label: str) -> None:
        """Raises a ValueError naming `label` unless `state_dict` is a diffusers-format LoRA whose pairs fit
        (2-D `lora_A` (r, in) and `lora_B` (out, r) of one rank r, finite) and whose scale metadata is usable."""
        if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
            raise ValueError(f"{label} does not hold a dict of tensors.")
        if any(".lora_down." in key or ".lora_up." in key or key.startswith("lora_unet_") for key in state_dict):
            raise ValueError(
                f"{label} is a kohya-style LoRA (lora_down/lora_up keys), made for another model family: PixelGen"
                " reads diffusers-format LoRAs (`transformer.<module>.lora_A/lora_B.weight`, scale in the adapter"
                " metadata or `<module>.alpha` keys), as `pixelgen train --lora-rank` and `save_lora_weights` write."
            )
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError(
                f"{label}: its `lora_adapter_metadata` must be a JSON object (the peft adapter config), got"
                f" {type(metadata).__name__}."
            )
        for key, tensor in state_dict.items():
            if tensor.is_floating_point() and tensor.device.type != "meta" and not torch.isfinite(tensor).all():
                raise ValueError(f"{label}: tensor {key!r} holds NaN or infinite values.")
            if ".lora_A." in key and key.startswith(f"{cls.transformer_name}."):  # others: "not a PixelGen LoRA"
                partner_key = key.replace(".lora_A.", ".lora_B.")
                partner = state_dict.get(partner_key)
                if tensor.ndim != 2 or partner is None or partner.ndim != 2 or partner.shape[1] != tensor.shape[0]:
                    got = tuple(partner.shape) if partner is not None else "missing"
                    raise ValueError(
                        f"{label}: {key!r} has shape {tuple(tensor.shape)} and {partner_key!r} {got}; a LoRA pair"
                        " is lora_A (rank, in_features) and lora_B (out_features, rank), both 2-D, of one rank."
                    )
            if key.endswith(".alpha"):
                check_lora_number(f"{label}: {key}", tensor.item() if tensor.numel() == 1 else math.nan)
        for key, value in (metadata or {}).items():
            if key.endswith("lora_alpha"):
                check_lora_number(f"{label}: lora_alpha", value)
            elif key.endswith("alpha_pattern") and isinstance(value, dict):
                for module, alpha in value.items():
                    check_lora_number(f"{label}: lora_alpha of {module}", alpha)

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name=None, hotswap=False, **kwargs):
        """Loads a LoRA into the transformer as adapter `adapter_name` (default: the next free `default_<i>`);
        raises a ValueError naming the mismatch when the LoRA was trained for another PixelGen model."""
        if isinstance(pretrained_model_name_or_path_or_dict, dict):
            pretrained_model_name_or_path_or_dict = pretrained_model_name_or_path_or_dict.copy()
        kwargs["return_lora_metadata"] = True
        state_dict, metadata = self.lora_state_dict(pretrained_model_name_or_path_or_dict, **kwargs)
        self.load_lora_into_transformer(
            state_dict, self.transformer, adapter_name=adapter_name, metadata=metadata, _pipeline=self, hotswap=hotswap
        )

    @classmethod
    def load_lora_into_transformer(
        cls,
        state_dict,
        transformer,
        adapter_name=None,
        _pipeline=None,
        low_cpu_mem_usage=False,
        hotswap=False,
        metadata=None,
    ):
        """Checks that every LoRA layer fits a linear layer of `transformer`, then loads it with diffusers'
        `load_lora_adapter`."""
        prefix = f"{cls.transformer_name}."
        layers = {}
        for key, tensor in state_dict.items():
            for kind in ("lora_A", "lora_B"):
                if key.startswith(prefix) and f".{kind}." in key:
                    layers.setdefault(key[len(prefix) :].split(f".{kind}.")[0], {})[kind] = tensor
        model = type(transformer).__name__
        if not layers:
            raise ValueError(
                f"The LoRA has no `{prefix}*.lora_A/lora_B` weights (its keys look like {list(state_dict)[:2]}):"
                f" it is not a LoRA of a {model}."
            )
        modules = dict(transformer.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            raise ValueError(
                f"The LoRA adapts {len(missing)} layer(s) that this {model} does not have, e.g. {missing[0]!r}: it was"
                " trained for another kind of model (class-to-image vs text-to-image) or another depth."
            )
        for name, pair in layers.items():
            module = modules[name]
            expected = (getattr(module, "in_features", None), getattr(module, "out_features", None))
            found = (
                pair["lora_A"].shape[1] if "lora_A" in pair else None,
                pair["lora_B"].shape[0] if "lora_B" in pair else None,
            )
            if None in expected or any(f is not None and f != e for f, e in zip(found, expected)):
                raise ValueError(
                    f"The LoRA layer {name!r} maps {found[0]} -> {found[1]} features but this {model}'s layer maps"
                    f" {expected[0]} -> {expected[1]}: the LoRA was trained for another model (another width; this one"
                    f" has hidden_size {transformer.config.hidden_size}), or another kind (class-to-image vs"
                    " text-to-image)."
                )
        with warnings.catch_warnings():
            # peft warns "Already found a `peft_config` attribute" whenever a second adapter is injected, which is
            # exactly what diffusers' multi-adapter API (`set_adapters`) is for: that warning only is dropped.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
            # diffusers' `<module>.alpha` keys scale their layer by alpha / rank (adapter metadata, when present,
            # holds the same in `lora_alpha` / `alpha_pattern` and takes precedence, as in diffusers).
            network_alphas = {key: float(state_dict[key]) for key in state_dict if key.endswith(".alpha")}
            state_dict = {key: tensor for key, tensor in state_dict.items() if not key.endswith(".alpha")}
            if metadata is None and not network_alphas:
                logger.warning(
                    "The LoRA has neither adapter metadata nor `<module>.alpha` keys: it is loaded with scale 1"
                    " (alpha = rank), diffusers' convention for such files."
                )
            # diffusers takes offload hooks off to inject the layers and puts them back without the user's device:
            # take them off here and restore them with it.
            offload_device = getattr(_pipeline, "_offload_device", None)
            model_offload, sequential_offload = False, False
            if _pipeline is not None:
                model_offload, sequential_offload, _ = _func_optionally_disable_offloading(_pipeline)
            try:
                transformer.load_lora_adapter(
                    state_dict,
                    network_alphas=network_alphas or None,
                    adapter_name=adapter_name,
                    metadata=metadata,
                    _pipeline=_pipeline,
                    low_cpu_mem_usage=low_cpu_mem_usage,
                    hotswap=hotswap,
                )
            finally:
                if model_offload:
                    _pipeline.enable_model_cpu_offload(device=offload_device)
                elif sequential_offload:
                    _pipeline.enable_sequential_cpu_offload(device=offload_device)

    @classmethod
    def save_lora_weights(
        cls,
        save_directory,
        transformer_lora_layers=None,
        is_main_process=True,
        weight_name=None,
        save_function=None,
        safe_serialization=True,
        transformer_lora_adapter_metadata=None,
    ):
        """Writes `transformer_lora_layers` (a state dict from peft's `get_peft_model_state_dict`) and the adapter
        config as diffusers does; the file is written under a temporary name and then renamed into place."""
        if not transformer_lora_layers:
            raise ValueError("transformer_lora_layers is empty: there is no LoRA to save.")
        os.makedirs(save_directory, exist_ok=True)
        temporary = tempfile.mkdtemp(prefix=".tmp-lora-", dir=save_directory)
        try:
            cls._save_lora_weights(
                save_directory=temporary,
                lora_layers={cls.transformer_name: transformer_lora_layers},
                lora_metadata={cls.transformer_name: transformer_lora_adapter_metadata},
                is_main_process=is_main_process,
                weight_name=weight_name,
                save_function=save_function,
                safe_serialization=safe_serialization,
            )
            for name in os.listdir(temporary):
                os.replace(os.path.join(temporary, name), os.path.join(save_directory, name))
        finally:
            for name in os.listdir(temporary):
                os.remove(os.path.join(temporary, name))
            os.rmdir(temporary)

    def _lora_is_fused(self) -> bool:
        return any(getattr(module, "merged", False) for module in self.transformer.modules())

    def fuse_lora(self, components=["transformer"], lora_scale=1.0, safe_fusing=False, adapter_names=None, **kwargs):
        """Merges the active LoRA layers (times `lora_scale`, a finite number) into the transformer's weights.
        `unfuse_lora` subtracts them again; `unload_lora_weights` after fusing keeps them in the weights for good
        (diffusers' way to bake a LoRA in)."""
        check_lora_number("lora_scale", lora_scale)
        super().fuse_lora(
            components=components,
            lora_scale=lora_scale,
            safe_fusing=safe_fusing,
            adapter_names=adapter_names,
            **kwargs,
        )
        self._lora_baked_in = False

    def unfuse_lora(self, components=["transformer"], **kwargs):
        """Subtracts fused LoRA layers from the transformer's weights again (exact up to float rounding).

        Raises:
            ValueError: when the fused LoRA was unloaded, which baked it into the weights: nothing can take it out.
        """
        if not self._lora_is_fused() and getattr(self, "_lora_baked_in", False):
            raise ValueError(
                "Nothing is fused: unload_lora_weights() after fuse_lora() baked the LoRA into the weights, and"
                " unfuse_lora() cannot take it out. Reload the base model (or unfuse before unloading)."
            )
        super().unfuse_lora(components=components, **kwargs)

    def set_adapters(self, adapter_names, adapter_weights=None):
        """diffusers' `set_adapters`, refusing non-finite weights, and refusing while a LoRA is fused: unfusing
        subtracts the weights active then, so changing them in between would leave part of the LoRA in the weights
        for good."""
        weights = adapter_weights if isinstance(adapter_weights, (list, tuple)) else [adapter_weights]
        for weight in weights:
            for value in weight.values() if isinstance(weight, dict) else [weight]:
                if value is not None and not isinstance(value, dict):
                    check_lora_number("adapter_weights", value)
        self._refuse_while_fused("set_adapters")
        super().set_adapters(adapter_names, adapter_weights)

    def _refuse_while_fused(self, method: str) -> None:
        """Changing which adapters are active, or their weights, while a LoRA is fused would not change the fused
        weights; a later unfuse would subtract other weights than were fused, leaving part of the LoRA for good."""
        if self._lora_is_fused():
            raise ValueError(
                f"A LoRA is fused into the weights: call unfuse_lora() first, then {method}() (and fuse_lora() again);"
                " changing adapters while fused would leave part of the LoRA in the weights for good."
            )

    def delete_adapters(self, adapter_names):
        """diffusers' `delete_adapters`, refused while a LoRA is fused (see `_refuse_while_fused`)."""
        self._refuse_while_fused("delete_adapters")
        super().delete_adapters(adapter_names)

    def disable_lora(self):
        """diffusers' `disable_lora`, refused while a LoRA is fused: the fused weights would keep it."""
        self._refuse_while_fused("disable_lora")
        super().disable_lora()

    def enable_lora(self):
        """diffusers' `enable_lora`, refused while a LoRA is fused (see `_refuse_while_fused`)."""
        self._refuse_while_fused("enable_lora")
        super().enable_lora()

    def unload_lora_weights(self, *args, **kwargs):
        """Removes the LoRA layers. A fused LoRA stays in the weights (baked in, diffusers' semantics); unload
        without fusing restores the base weights bit for bit."""
        baked_in = self._lora_is_fused()
        super().unload_lora_weights(*args, **kwargs)
        self._lora_baked_in = baked_in or getattr(self, "_lora_baked_in", False)


def shipped_code_files(module_file: str | os.PathLike) -> list[Path]:
    """A shipped module's file followed by the sibling files it imports with single-dot relative imports (found as
    diffusers finds them when it loads remote code, recursively): what a model folder must carry beside it."""
    module_file = Path(module_file)
    return [module_file] + [Path(path) for path in get_relative_import_files(module_file)]


def _pipeline_kind(class_name) -> str | None:
    """ "class-to-image" or "text-to-image" for the PixelGen pipelines of that kind (generation and editing alike)."""
    kinds = {"PixelGenC2I": "class-to-image", "PixelGenT2I": "text-to-image"}
    return next((kind for prefix, kind in kinds.items() if str(class_name).startswith(prefix)), None)


class PixelGenPipelineMixin:
    r"""
    What the PixelGen pipelines share; a pipeline class lists it before `DiffusionPipeline`
    (`class PixelGenC2IPipeline(PixelGenPipelineMixin, DiffusionPipeline, PixelGenLoraLoaderMixin)`) and sets
    `_condition_input_name` (the transformer input that carries the condition), `_callback_tensor_inputs` and
    `_callback_condition_names` (the callback names of the condition and negative condition tensors, or empty). It
    is not a `DiffusionPipeline` itself, so diffusers finds exactly one pipeline class in a shipped `pipeline.py`.
    """

    _callback_condition_names: tuple[str, ...] = ()

    @classmethod
    def load_config(cls, *args, **kwargs):
        """Reads `model_index.json`. A self-contained model folder names its own copies of the code (`["pipeline",
        ...]`, `["transformer_jit", ...]`); when this class is used directly from an installed package, those entries
        are pointed at the package's own modules instead, so that `from_pretrained` needs no `trust_remote_code` and
        returns the installed classes. Loading through `DiffusionPipeline` is unaffected."""
        outputs = super().load_config(*args, **kwargs)
        config = outputs[0] if isinstance(outputs, tuple) else outputs
        package = cls.__module__.partition(".")[0] if "." in cls.__module__ else ""
        class_name = config.get("_class_name")
        class_name = class_name[-1] if isinstance(class_name, (list, tuple)) else class_name
        # A folder's kind, from its pipeline's name; any pipeline of that kind (generation or editing) loads it.
        folder_kind = _pipeline_kind(class_name)
        own_kind = next((_pipeline_kind(base.__name__) for base in cls.__mro__ if _pipeline_kind(base.__name__)), None)
        if folder_kind is not None and own_kind is not None and folder_kind != own_kind:
            raise ValueError(
                f"This folder holds a {folder_kind} PixelGen model: load it with {class_name}, not"
                f" {cls.__name__} (or with DiffusionPipeline, which picks the class itself)."
            )
        if folder_kind is None or own_kind is None or not package or package.startswith("diffusers_modules"):
            return outputs
        config["_class_name"] = class_name
        for name, entry in config.items():
            if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str):
                # the package's public class of that name and module (transformer_jit, scheduling_pixelgen), if any
                installed = getattr(importlib.import_module(package), entry[1], None)
                module = getattr(installed, "__module__", "")
                if module.startswith(f"{package}.") and module.rpartition(".")[2] == entry[0].rpartition(".")[2]:
                    config[name] = [module, entry[1]]
        return outputs

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, **kwargs) -> DiffusionPipeline:
        """diffusers' `from_pipe`, reusing every component this class takes: diffusers switches a model over only
        when its class is the exact annotated one, and our components' classes may come from a model folder's code."""
        accepted = inspect.signature(cls.__init__).parameters
        components = {name: module for name, module in pipeline.components.items() if name in accepted}
        # diffusers' `from_pipe` always casts with `.to(dtype=...)`, and `ModelMixin.to` then warns about modules
        # "that should be kept in float32: []" though there are none (it tests `[] is not None`): that empty warning
        # only is dropped.
        model_logger = logging.getLogger("diffusers.models.modeling_utils")
        model_logger.addFilter(_drop_empty_float32_warning)
        try:
            return super().from_pipe(pipeline, **{**components, **kwargs})
        finally:
            model_logger.removeFilter(_drop_empty_float32_warning)

    def save_config(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """Writes `model_index.json` (the last step of `save_pretrained`), then this pipeline's code and its
        components' beside them, and points `model_index.json` at those copies: the folder is self-contained and
        loads in plain diffusers (`custom_pipeline=<folder>/pipeline.py, trust_remote_code=True`) however this
        pipeline was loaded (installed package, or remote code); each module's relatively imported siblings are copied
        beside it. Components of other libraries keep their entries."""
        super().save_config(save_directory, *args, **kwargs)
        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path, encoding="utf-8") as file:
            model_index = json.load(file)
        shipped = {"_class_name": (type(self), "pipeline.py")}
        for name, component in self.components.items():
            cls = type(getattr(component, "_orig_mod", component))  # a torch.compile'd module: the model's class
            if component is not None and cls.__module__.split(".")[0] in ("pixelgen_diffusers", "diffusers_modules"):
                shipped[name] = (cls, os.path.join(name, cls.__module__.rpartition(".")[2] + ".py"))
        for key, (cls, relative_path) in shipped.items():
            target_folder = os.path.dirname(os.path.join(save_directory, relative_path))
            os.makedirs(target_folder, exist_ok=True)
            code_file, *siblings = shipped_code_files(inspect.getsourcefile(cls))
            shutil.copyfile(code_file, os.path.join(save_directory, relative_path))
            for sibling in siblings:  # the shared modules it imports relatively, beside it
                shutil.copyfile(sibling, os.path.join(target_folder, sibling.name))
            model_index[key] = [os.path.basename(relative_path).removesuffix(".py"), cls.__name__]
        with open(index_path, "w", encoding="utf-8") as file:
            file.write(json.dumps(model_index, indent=2, sort_keys=True) + "\n")

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Guidance v_u + w (v_c - v_u) only for w > 1, as in diffusers and the model card; otherwise conditional
        samples (so a step-end callback setting `pipe._guidance_scale = 0.0` stops guiding)."""
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @staticmethod
    def check_sampling_defaults(
        num_inference_steps, guidance_scale, guidance_interval_min, guidance_interval_max, noise_scale
    ):
        """The sampling numbers, whether stored in the config (checked when the pipeline is built or loaded, and
        before `save_pretrained`) or given to a call: finite, and in range, so no setting draws black images."""
        check_number("num_inference_steps", num_inference_steps, integer=True, minimum=1)
        check_number("guidance_scale", guidance_scale, minimum=-MAX_SCALE, maximum=MAX_SCALE)
        check_number("guidance_interval_min", guidance_interval_min)
        check_number("guidance_interval_max", guidance_interval_max)
        if guidance_interval_min > guidance_interval_max:
            raise ValueError(
                f"guidance_interval_min ({guidance_interval_min}) must not exceed guidance_interval_max"
                f" ({guidance_interval_max})."
            )
        check_number("noise_scale", noise_scale, minimum=0, maximum=MAX_SCALE, exclusive_minimum=True)

    def check_sampling_inputs(
        self,
        num_conditions,
        num_images_per_prompt,
        height,
        width,
        sampling_numbers,
        scheduler_options,
        generator,
        latents,
        output_type,
        callback,
    ):
        """Checks that do not depend on the kind of condition, before any work: sizes, the sampling numbers
        (`check_sampling_defaults`' arguments, in order), the scheduler's options, generators, latents, output."""
        check_number("num_images_per_prompt", num_images_per_prompt, integer=True, minimum=1)
        self.check_sampling_defaults(*sampling_numbers)
        if hasattr(self.scheduler, "check_options"):
            self.scheduler.check_options(**scheduler_options)
        sample_size = self.transformer.config.sample_size
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value != sample_size:
                raise ValueError(f"{name} must equal the model's sample_size ({sample_size}), got {value!r}.")
        batch_size = num_conditions * num_images_per_prompt
        generators = generator if isinstance(generator, list) else [] if generator is None else [generator]
        for item in generators:
            if not isinstance(item, torch.Generator):
                raise ValueError(
                    f"generator must be a torch.Generator or a list of them, got {type(item).__name__}: {item!r}."
                )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"Got a list of {len(generator)} generators for a batch of {batch_size} images: pass one generator"
                f" or exactly {batch_size}."
            )
        if latents is not None:
            if not isinstance(latents, torch.Tensor):
                raise ValueError(
                    f"latents must be a torch.Tensor, got {type(latents).__name__} (convert with torch.as_tensor)."
                )
            if latents.device.type == "meta" or not latents.is_floating_point():
                raise ValueError(
                    f"latents must be a floating-point tensor with data, got dtype {latents.dtype} on"
                    f" {latents.device}."
                )
            shape = (batch_size, self.transformer.config.in_channels, sample_size, sample_size)
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}.")
            if not torch.isfinite(latents).all():
                raise ValueError("latents holds NaN or infinite values.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"Unknown output_type {output_type!r}; accepted: {', '.join(OUTPUT_TYPES)}.")
        if callback is not None:
            unknown = [name for name in callback if name not in self._callback_tensor_inputs]
            if unknown:
                raise ValueError(
                    f"callback_on_step_end_tensor_inputs has {unknown}; accepted: {self._callback_tensor_inputs}."
                )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`DiffusionPipeline.save_pretrained`, refusing a config that would make the saved folder unusable, or a
        transformer with LoRA layers loaded (its weights would be saved under peft's names)."""
        transformer = getattr(self, "transformer", None)
        if transformer is not None and any(".lora_A." in name for name, _ in transformer.named_parameters()):
            raise ValueError(
                "A LoRA is loaded: save_pretrained would write peft's base_layer/lora_ keys, a folder nothing can"
                " load. To save the adapted model, call fuse_lora() then unload_lora_weights() (bakes the LoRA in)"
                " and save; to save the LoRA alone, use save_lora_weights; or unload_lora_weights() first."
            )
        config = self.config
        self.check_sampling_defaults(
            config.num_inference_steps,
            config.guidance_scale,
            config.guidance_interval_min,
            config.guidance_interval_max,
            config.noise_scale,
        )
        return super().save_pretrained(save_directory, *args, **kwargs)

    def prepare_latents(self, batch_size, noise_scale, generator, device, latents=None):
        """Standard-normal noise in float32 (whatever the model dtype), times `noise_scale`."""
        size = self.transformer.config.sample_size
        shape = (batch_size, self.transformer.config.in_channels, size, size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        return latents.to(device=device, dtype=torch.float32) * noise_scale

    @staticmethod
    def postprocess(sample: torch.Tensor, output_type: str):
        """Pixels in [-1, 1] to images; PIL uses upstream's rounding, uint8 = clip((x + 1) * 127.5 + 0.5, 0, 255)."""
        if output_type == "latent":
            return sample
        if output_type == "pil":
            pixels = ((sample + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            return [PIL.Image.fromarray(image) for image in pixels]
        images = ((sample + 1) / 2).clamp(0, 1)
        return images if output_type == "pt" else images.permute(0, 2, 3, 1).cpu().numpy()

    @property
    def current_timestep(self) -> float | None:
        """Where the loop is, in diffusers' convention (1000 = pure noise, i.e. 1000 * (1 - t)): the clock that
        `PyramidAttentionBroadcastConfig` / `FasterCacheConfig` read through `current_timestep_callback`."""
        return self._current_timestep

    def check_distilled_inputs(self, num_inference_steps, guidance_scale, sampling_method, timeshift):
        """A few-step student (`pixelgen distill`, config `distillation`) samples only the schedule it was distilled
        for: one of its step counts, on the Euler grid with its timeshift, unguided (the teacher's guidance is in its
        weights, so no null-condition pass runs). Anything else is a ValueError naming what is accepted."""
        distillation = self.config.get("distillation")
        if not distillation:
            return
        accepted_steps = distillation["num_inference_steps"]
        if num_inference_steps not in accepted_steps:
            raise ValueError(
                f"num_inference_steps is {num_inference_steps}, but this student was distilled for"
                f" {' or '.join(map(str, accepted_steps))} steps; accepted: {', '.join(map(str, accepted_steps))}."
            )
        if guidance_scale != 1.0:
            raise ValueError(
                f"guidance_scale is {guidance_scale}, but this student has its teacher's guidance"
                f" ({distillation['guidance_scale']:g}) distilled in and samples without guidance; accepted: 1.0"
                " (or leave it unset)."
            )
        if not hasattr(self.scheduler, "guidance_mask") or sampling_method not in (None, "euler"):
            raise ValueError(
                f"sampling_method is {sampling_method or type(self.scheduler).__name__!r}, but this student was"
                " distilled for PixelGenScheduler's Euler grid; accepted: 'euler' (or leave it unset)."
            )
        if timeshift is not None and timeshift != self.scheduler.config.timeshift:
            raise ValueError(
                f"timeshift is {timeshift}, but this student was distilled on the time grid of timeshift"
                f" {self.scheduler.config.timeshift}; accepted: {self.scheduler.config.timeshift} (or leave it unset)."
            )

    def check_scheduler(self, sampling_method, solver_order, timeshift):
        """Accepts `PixelGenScheduler` or a stock diffusers flow-matching scheduler (FlowMatchEuler/Heun, or a
        multistep solver with `use_flow_sigmas=True` and `prediction_type="flow_prediction"`)."""
        scheduler = self.scheduler
        if hasattr(scheduler, "guidance_mask"):  # PixelGenScheduler (also a model folder's own copy)
            return
        name, config = type(scheduler).__name__, scheduler.config
        if not isinstance(scheduler, FLOW_MATCH_SCHEDULERS) and not (
            config.get("use_flow_sigmas") and config.get("prediction_type") == "flow_prediction"
        ):
            raise ValueError(
                f"{name} cannot sample PixelGen: it needs a flow-matching scheduler, i.e. PixelGenScheduler,"
                " FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler, or a multistep solver configured"
                " with use_flow_sigmas=True and prediction_type='flow_prediction' (UniPCMultistepScheduler,"
                " DPMSolverMultistepScheduler)."
            )
        if config.get("use_dynamic_shifting") or config.get("invert_sigmas"):
            raise ValueError(
                f"{name} with use_dynamic_shifting=True or invert_sigmas=True cannot sample PixelGen: its time grid is"
                " shifted by a fixed timeshift; configure the scheduler with a fixed shift instead."
            )
        if sampling_method is not None or solver_order is not None:
            raise ValueError(
                f"sampling_method and solver_order select PixelGenScheduler's solvers; {name} is its own solver."
            )
        if config.get("final_sigmas_type", "zero") != "zero":
            raise ValueError(
                f"{name}(final_sigmas_type={config.final_sigmas_type!r}) ends its grid at sigma_min, which on"
                " PixelGen's grid makes the last step zero-length and leaves the sample noisy: use"
                " final_sigmas_type='zero'."
            )
        shift_name = "shift" if "shift" in config else "flow_shift"
        if timeshift is not None and timeshift != config.get(shift_name, 1.0):
            raise ValueError(
                f"timeshift={timeshift} differs from {name}'s {shift_name}={config.get(shift_name, 1.0)}: a stock"
                f" scheduler applies its own shift, so set it there, e.g. {name}.from_config(pipe.scheduler.config,"
                f" {shift_name}={timeshift})."
            )

    def prepare_schedule(self, num_inference_steps, device, sampling_method, timeshift, solver_order, interval):
        """Sets the scheduler's grid. Returns the PixelGen time t of every model evaluation (float32; t = 0 is
        noise, t = 1 - sigma) and whether guidance applies at it (min < t <= max at the step's start, in float32;
        PixelGenScheduler applies each solver's own test)."""
        scheduler = self.scheduler
        if hasattr(scheduler, "guidance_mask"):
            scheduler.set_timesteps(
                num_inference_steps, device, sampling_method=sampling_method, timeshift=timeshift,
                solver_order=solver_order,
            )  # fmt: skip
            scheduler.set_begin_index(0)
            return scheduler.timesteps, scheduler.guidance_mask(*interval)
        # PixelGen's grid before the shift, which the scheduler applies: sigma = 1 - u, u = 0, 1/N, ..., 1 - 1/N.
        unshifted_sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
        if "sigmas" in inspect.signature(scheduler.set_timesteps).parameters:
            scheduler.set_timesteps(sigmas=unshifted_sigmas, device=device)
        elif isinstance(scheduler, FlowMatchHeunDiscreteScheduler):
            # It takes no custom sigmas, and its own grid ends at sigma_min ~ 0.001, where a corrector would read the
            # clamped (up to 50x too small) velocity. On PixelGen's grid it is PixelGen's Heun, final step Euler.
            scheduler.set_timesteps(num_inference_steps, device=device)
            shift = scheduler.config.shift
            sigmas = torch.from_numpy(shift * unshifted_sigmas / (1 + (shift - 1) * unshifted_sigmas)).float()
            timesteps = (sigmas * scheduler.config.num_train_timesteps).to(device)
            scheduler.timesteps = torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
            sigmas = torch.cat([sigmas, sigmas.new_zeros(1)]).to(device)
            scheduler.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
        else:  # the scheduler's own (shifted) grid
            scheduler.set_timesteps(num_inference_steps, device=device)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        final_sigma = float(scheduler.sigmas[-1])
        if final_sigma != 0.0:
            raise ValueError(
                f"{type(scheduler).__name__} with this config ends its grid at sigma {final_sigma:.4g}, not at the"
                " clean image (sigma 0): the sample would stay noisy. Use a setting that ends at sigma 0"
                " (final_sigmas_type='zero')."
            )
        sigmas = scheduler.sigmas.to("cpu", torch.float32)[: len(scheduler.timesteps)]
        times = 1.0 - sigmas
        # Two-stage solvers (Heun) evaluate twice per step and decide guidance at the step's start, as upstream.
        evaluations = torch.arange(len(times))
        step_start_times = times[evaluations - evaluations % 2] if scheduler.order == 2 else times
        low = torch.tensor(interval[0], dtype=torch.float32)
        high = torch.tensor(interval[1], dtype=torch.float32)
        return times.to(device), ((step_start_times > low) & (step_start_times <= high)).tolist()

    def predict_clean_image(self, latents, t, condition, negative_condition, step_index, num_evaluations):
        """The transformer's clean-image predictions (conditional, unconditional or None). Without a cache the two
        halves run as one batch, unconditional first as upstream batches them (and as FasterCache expects); under a
        cache each pass runs in its own cache context, so cached state never mixes conditions or batch sizes."""
        transformer = self.transformer
        cache_config = getattr(transformer, "_cache_config", None)

        def predict(sample, pass_condition):
            sample, timestep = sample.to(transformer.dtype), t.expand(len(sample))
            for tensor in (sample, timestep, pass_condition):  # a compiled transformer: one graph for B and 2B rows
                mark_dynamic_shapes(tensor)
            if isinstance(cache_config, FasterCacheConfig):  # it splits the batched inputs it finds by name
                inputs = {"hidden_states": sample, "timestep": timestep, self._condition_input_name: pass_condition}
                return transformer(**inputs, return_dict=False)[0]
            return transformer(sample, timestep, pass_condition, return_dict=False)[0]

        if cache_config is None or isinstance(cache_config, FasterCacheConfig):
            if negative_condition is None:
                return predict(latents, condition), None
            prediction_uncond, prediction = predict(
                torch.cat([latents, latents]), torch.cat([negative_condition, condition])
            ).chunk(2)
            return prediction, prediction_uncond
        predictions = []
        passes = [("cond", condition)] + ([("uncond", negative_condition)] if negative_condition is not None else [])
        for context, pass_condition in passes:
            with transformer.cache_context(
                context, step_index=step_index, num_inference_steps=num_evaluations, timestep=t, sigma=float(1 - t)
            ):
                predictions.append(predict(latents, pass_condition))
        return predictions[0], (predictions[1] if len(predictions) > 1 else None)

    def check_cache(self, guided: list[bool]):
        """FasterCache approximates the unconditional half of a batched [uncond, cond] call from past calls, so it
        needs every evaluation guided (or, with `is_guidance_distilled=True`, none). MagCache's ratios and counter
        are per transformer evaluation, so its `num_inference_steps` must count this run's evaluations."""
        cache_config = getattr(self.transformer, "_cache_config", None)
        if isinstance(cache_config, MagCacheConfig) and cache_config.num_inference_steps != len(guided):
            # Its ratios are per evaluation, and its counter restarts after num_inference_steps of them.
            raise ValueError(
                f"MagCacheConfig(num_inference_steps={cache_config.num_inference_steps}) does not match this run's"
                f" {len(guided)} transformer evaluations (Heun makes 2N - 1 for N steps): pass"
                f" num_inference_steps={len(guided)} and one ratio per evaluation (calibrate_mag_ratios)."
            )
        if not isinstance(cache_config, FasterCacheConfig):
            return
        if cache_config.current_timestep_callback is None:
            raise ValueError("FasterCacheConfig needs current_timestep_callback=lambda: pipe.current_timestep.")
        if cache_config.is_guidance_distilled and any(guided) and self.do_classifier_free_guidance:
            raise ValueError(
                "FasterCacheConfig(is_guidance_distilled=True) expects unguided calls, but this run uses guidance;"
                " set guidance_scale=1 or is_guidance_distilled=False."
            )
        if not cache_config.is_guidance_distilled and not (self.do_classifier_free_guidance and all(guided)):
            raise ValueError(
                f"FasterCache needs the unconditional rows in every call, but {guided.count(False)} of {len(guided)}"
                " evaluations run without them (guidance_scale == 1, or a guidance interval that excludes them)."
                " Guide every step (guidance_interval_min < first t, guidance_interval_max >= 1; on the command"
                " line `--guidance-interval -1 1`), use is_guidance_distilled=True for unguided runs, or choose"
                " another cache."
            )

    def convert_to_velocity(self, prediction: torch.Tensor, t: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """x-prediction to velocity dx/dt = (x_hat - x_t) / max(1 - t, 0.05), in float32 (PixelGen's conversion
        and clamp; PixelGenScheduler applies its own `t_eps`)."""
        if hasattr(self.scheduler, "convert_model_output") and hasattr(self.scheduler, "guidance_mask"):
            return self.scheduler.convert_model_output(prediction, t, sample)
        return (prediction.float() - sample.float()) / (1.0 - t.float()).clamp_min(X_PREDICTION_T_EPS)

    def scheduler_step(self, velocity: torch.Tensor, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """PixelGenScheduler steps the velocity dx/dt; stock flow-matching schedulers integrate in sigma = 1 - t and
        take dx/dsigma = -velocity."""
        model_output = velocity if hasattr(self.scheduler, "guidance_mask") else -velocity
        return self.scheduler.step(model_output, t, latents, return_dict=False)[0]

    def denoise(
        self,
        latents: torch.Tensor,
        condition: torch.Tensor,
        negative_condition: torch.Tensor | None,
        model_times: torch.Tensor,
        guided: list[bool],
        num_inference_steps: int,
        start_index: int = 0,
        clean_image_hook: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
    ) -> torch.Tensor:
        r"""
        The denoising loop: one guided clean-image prediction, velocity and scheduler step per model evaluation.

        Args:
            latents: float32 (B, C, H, W) sample at evaluation `start_index` (noise when it is 0).
            condition, negative_condition: the transformer's condition rows for the B samples (class ids or text
                features) and the unconditional ones (None without guidance); `_condition_input_name` names them.
            model_times, guided: `prepare_schedule`'s PixelGen time and guidance decision of every evaluation.
            num_inference_steps: the progress bar's length in steps.
            start_index: the first evaluation to run (0: the whole grid; editing pipelines start later on it).
            clean_image_hook: `fn(x_hat, t, i) -> x_hat`, applied to each clean-image prediction (conditional and
                unconditional alike) before it becomes a velocity: editing pipelines project it onto known pixels.
            callback_on_step_end, callback_on_step_end_tensor_inputs: as in `__call__`; a callback may replace
                `latents` and the condition tensors (`_callback_condition_names`).

        Returns:
            The float32 (B, C, H, W) sample after the last evaluation.
        """
        if getattr(self.transformer, "_cache_config", None) is not None:
            self.transformer._reset_stateful_cache()  # a run interrupted earlier may have left state behind
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        num_warmup_steps = len(timesteps) - num_inference_steps * self.scheduler.order
        if start_index > 0 and hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start_index)

        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i in range(start_index, len(timesteps)):
                t = timesteps[i]
                if self.interrupt:
                    continue
                model_time = model_times[i]
                self._current_timestep = 1000.0 * (1.0 - float(model_time))
                use_guidance = self.do_classifier_free_guidance and guided[i]
                prediction, prediction_uncond = self.predict_clean_image(
                    latents, model_time, condition, negative_condition if use_guidance else None, i, len(timesteps)
                )
                if clean_image_hook is not None:
                    prediction = clean_image_hook(prediction, model_time, i)
                    if prediction_uncond is not None:
                        prediction_uncond = clean_image_hook(prediction_uncond, model_time, i)
                velocity = self.convert_to_velocity(prediction, model_time, latents)
                if use_guidance:
                    velocity_uncond = self.convert_to_velocity(prediction_uncond, model_time, latents)
                    velocity = velocity_uncond + self.guidance_scale * (velocity - velocity_uncond)
                latents = self.scheduler_step(velocity, t, latents)

                if callback_on_step_end is not None:
                    tensors = {"latents": latents}
                    if "pred_original_sample" in callback_on_step_end_tensor_inputs:
                        # The clean image this evaluation predicts, guided as the velocity is (both are linear in x).
                        pred_original_sample = prediction.float()
                        if use_guidance:
                            x_uncond = prediction_uncond.float()
                            pred_original_sample = x_uncond + self.guidance_scale * (pred_original_sample - x_uncond)
                        tensors["pred_original_sample"] = pred_original_sample
                    tensors.update(zip(self._callback_condition_names, (condition, negative_condition)))
                    callback_kwargs = {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    if not isinstance(callback_outputs, dict):
                        raise ValueError(
                            "callback_on_step_end must return a dict (of the tensors it changes, or {}), got"
                            f" {type(callback_outputs).__name__}."
                        )
                    latents = self.check_callback_tensor(callback_outputs, "latents", latents)
                    if self._callback_condition_names:
                        condition_name, negative_name = self._callback_condition_names
                        condition = self.check_callback_tensor(callback_outputs, condition_name, condition)
                        negative_condition = self.check_callback_tensor(
                            callback_outputs, negative_name, negative_condition
                        )

                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()

        self._current_timestep = None
        if not torch.isfinite(latents).all():
            raise ValueError(
                "The sample holds non-finite values (NaN or infinity): the arithmetic overflowed, e.g. through a huge"
                " guidance_scale, noise_scale or LoRA scale, or latents set by a callback. No image is returned."
            )
        return latents

    @staticmethod
    def check_callback_tensor(callback_outputs: dict, name: str, current: torch.Tensor | None) -> torch.Tensor | None:
        """`callback_outputs[name]` if the callback returned it, else `current`. A returned tensor is checked as
        strictly as a call input: same shape (batch included: one row is not broadcast to all images), dtype and
        device as the tensor it replaces, and finite."""
        if name not in callback_outputs:
            return current
        value = callback_outputs.pop(name)
        if current is None:
            if value is not None:
                raise ValueError(f"callback_on_step_end returned {name}, which this run does not use.")
            return None
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"callback_on_step_end returned {name} as {type(value).__name__}, not a torch.Tensor.")
        for what, got, expected in (
            ("shape", tuple(value.shape), tuple(current.shape)),
            ("dtype", value.dtype, current.dtype),
            ("device", value.device, current.device),
        ):
            if got != expected:
                raise ValueError(
                    f"callback_on_step_end returned {name} of {what} {got}, but this run's {name} has {what}"
                    f" {expected}: return a tensor like the one it was given."
                )
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"callback_on_step_end returned {name} holds NaN or infinite values.")
        return value
