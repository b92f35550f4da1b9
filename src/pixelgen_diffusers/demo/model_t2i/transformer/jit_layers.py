# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Layers and helpers both PixelGen transformers share (class-to-image `transformer_jit.py`, text-to-image
`transformer_jit_t2i.py`): RoPE, RMS norms, adaLN modulation, fixed positions, cache adaptation, input checks.

Ships in model folders next to the transformer module that imports it (`transformer/jit_layers.py`): diffusers copies
a remote-code module's single-dot relative imports along with it. Imports only torch and diffusers.
"""

import dataclasses
import functools
import math
import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.hooks import FasterCacheConfig, SeaCacheConfig, TaylorSeerCacheConfig
from diffusers.hooks.hooks import CacheContext, StateManager
from diffusers.hooks.mag_cache import MagCacheHeadHook
from diffusers.hooks.pyramid_attention_broadcast import PyramidAttentionBroadcastHook, PyramidAttentionBroadcastState


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


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> torch.Tensor:
    """MAE/DiT fixed table, (grid_size**2, embed_dim): first half encodes the column, second half the row."""
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    positions = torch.arange(grid_size, dtype=torch.float64)
    columns = positions.repeat(grid_size)  # token h * grid + w has column w ...
    rows = positions.repeat_interleave(grid_size)  # ... and row h
    halves = []
    for coordinate in (columns, rows):
        angles = coordinate[:, None] * omega[None, :]
        halves.append(torch.cat([angles.sin(), angles.cos()], dim=1))
    return torch.cat(halves, dim=1).float()


def apply_rotary_emb(hidden_states: torch.Tensor, rotary_emb: torch.Tensor) -> torch.Tensor:
    """Rotates adjacent channel pairs (x0, x1) by their angle a: (x0 cos a - x1 sin a, x1 cos a + x0 sin a).

    hidden_states: (B, S, heads, head_dim); rotary_emb: float32 (S, head_dim / 2, 2), the (cos a, sin a) of each pair.
    The rotation runs in float32 whatever the activation dtype. Eagerly it is one complex multiplication
    (x0 + i x1) * e^(ia); under torch.compile it is written in real arithmetic, which Inductor fuses (it has no
    complex kernels).
    """
    pairs = hidden_states.float().unflatten(-1, (-1, 2))
    if torch.compiler.is_compiling():
        x0, x1 = pairs.unbind(-1)
        cos, sin = rotary_emb[:, None].unbind(-1)
        rotated = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1)
    else:
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * torch.view_as_complex(rotary_emb)[:, None])
    return rotated.flatten(-2).type_as(hidden_states)


def mark_dynamic_shapes(tensor: torch.Tensor, dim: int = 0) -> None:
    """Marks a size that changes between calls so that torch.compile traces it symbolically once instead of
    recompiling: the batch (guided steps run 2B rows, unguided ones B) or the length of a RoPE table (a block attends
    over as many tokens as its table covers, fewer before the in-context tokens enter). "Unbacked", so that compile
    does not specialise sizes 0 and 1 (B = 1, or no passive tokens left). Costs nothing eagerly; a no-op inside a
    compiled region."""
    if not torch.compiler.is_compiling():
        torch._dynamo.decorators.mark_unbacked(tensor, dim)


def rms_normalize(hidden_states: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x**2, last dim) + eps) in float32, cast back to the input dtype: `F.rms_norm` without weight.

    On CUDA that is `F.rms_norm` (one fused kernel). On CPU PyTorch runs `F.rms_norm` as separate `pow`, `mean` and
    `mul` passes over the activations; one `vector_norm` reduction and one multiply save a full read-write pass
    (about 35% of the norm's time). Compiled, the same formula keeps compiled samples close to eager ones.
    """
    if hidden_states.device.type != "cpu":
        return F.rms_norm(hidden_states, hidden_states.shape[-1:], eps=eps)
    norm = torch.linalg.vector_norm(hidden_states, dim=-1, keepdim=True, dtype=torch.float32)
    inverse_rms = torch.rsqrt(norm.square() / hidden_states.shape[-1] + eps)
    return (hidden_states * inverse_rms).type_as(hidden_states)


class AdaRMSNorm(nn.RMSNorm):
    """RMSNorm with adaLN modulation: forward(x, shift, scale) = norm(x) * (1 + scale) + shift, for x of shape
    (B, S, D) and shift, scale of shape (B, D).

    The norm's weight is folded into the (B, D) scale, so the full-size activations go through one normalisation and
    one fused multiply-add. It is read in `forward`, so offloading hooks that load a module's weights when it is
    called (diffusers' group offloading, accelerate's sequential offload) load it.
    """

    def forward(self, hidden_states: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        scale = (1 + scale) * self.weight
        return torch.addcmul(shift.unsqueeze(1), rms_normalize(hidden_states, self.eps), scale.unsqueeze(1))


class HeadRMSNorm(nn.RMSNorm):
    """Per-head RMSNorm of queries or keys (B, S, heads, head_dim). `norm_query_key` normalises queries and keys in one
    pass and then calls each norm with `normalized=True`, which applies the weight in place: the weight is still read
    in `forward`, where offloading hooks load it."""

    def forward(self, hidden_states: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        if normalized:
            return hidden_states.mul_(self.weight)
        return super().forward(hidden_states)


def adapt_cache_config(config, batched_inputs: tuple[str, ...]):
    """Completes a diffusers cache config for a PixelGen transformer, or raises a ValueError naming why it cannot
    work. FasterCache must split every batched input between its unconditional and conditional halves
    (`batched_inputs`); SeaCache reads the noisy image as a one-frame video (C, 1, H, W)."""
    if isinstance(config, TaylorSeerCacheConfig) and config.use_lite_mode:
        raise ValueError(
            "TaylorSeerCacheConfig(use_lite_mode=True) cannot work here: lite mode returns zeros from every block and"
            " forecasts a top-level `proj_out`, which PixelGen does not have (its output layer is"
            " `final_layer.proj_out`). Use the default mode, which forecasts the attention outputs."
        )
    if isinstance(config, FasterCacheConfig):
        if config.tensor_format != "BCHW":
            raise ValueError(
                f"FasterCacheConfig(tensor_format={config.tensor_format!r}) does not match PixelGen's output, a"
                " batch of images: pass tensor_format='BCHW'."
            )
        identifiers = [*config._unconditional_conditional_input_kwargs_identifiers, *batched_inputs]
        config = dataclasses.replace(
            config, _unconditional_conditional_input_kwargs_identifiers=list(dict.fromkeys(identifiers))
        )
    if isinstance(config, SeaCacheConfig) and config.raw_vision_callback is None:
        config = dataclasses.replace(config, raw_vision_callback=noisy_image_as_video)
    return config


def check_no_lora_layers(model: nn.Module) -> None:
    """Raises a ValueError if peft LoRA layers are injected into `model`: its state dict would hold peft's
    `base_layer` / `lora_` names, which no PixelGen model loads."""
    if any(".lora_A." in name or ".base_layer." in name for name, _ in model.named_parameters()):
        raise ValueError(
            f"This {type(model).__name__} has LoRA layers loaded: saving it would write peft's base_layer/lora_ keys,"
            " a folder nothing can load. To save the adapted weights, call pipe.fuse_lora() then"
            " pipe.unload_lora_weights() (bakes the LoRA in) and save; to save the LoRA alone, use"
            " save_lora_weights; or unload_lora_weights() to save the base model."
        )


class SaveWithoutLoraMixin:
    """`ModelMixin.save_pretrained`, refusing while LoRA layers are loaded (see `check_no_lora_layers`); put before
    `ModelMixin`. The options a pipeline passes only when the signature names them are named here."""

    def save_pretrained(
        self, save_directory, *args, safe_serialization=True, variant=None, max_shard_size="10GB", **kwargs
    ) -> None:
        check_no_lora_layers(self)
        super().save_pretrained(
            save_directory,
            *args,
            safe_serialization=safe_serialization,
            variant=variant,
            max_shard_size=max_shard_size,
            **kwargs,
        )


def follow_cache_contexts(model: nn.Module) -> None:
    """Makes the cache hooks that diffusers' `enable_cache` put on `model` keep to the cache context, so that cached
    state never mixes conditions: Pyramid Attention Broadcast gets one state per context (diffusers keeps one per
    attention module, so an unconditional pass would reuse the conditional attention output), and MagCache reads its
    ratio at the context's `step_index` (diffusers counts calls per context, which lag behind when the unconditional
    pass skips the unguided evaluations)."""
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        for hook in registry.hooks.values() if registry is not None else ():
            if isinstance(hook, PyramidAttentionBroadcastHook) and not isinstance(hook.state, StatePerContext):
                hook.state_manager = StateManager(PyramidAttentionBroadcastState)  # found by `cache_context`
                hook.state = StatePerContext(hook.state_manager)
            elif type(hook) is MagCacheHeadHook:
                hook.__class__ = StepIndexedMagCacheHeadHook
                hook.fn_ref.forward = functools.partial(hook.new_forward, registry._module_ref)  # bound at register


class StatePerContext:
    """Stands in for a hook's single state object: attributes read and written go to the state of the current cache
    context (a `StateManager`'s), "inference" outside any context as diffusers' own stateful hooks do; `reset`
    resets them all."""

    def __init__(self, state_manager: StateManager):
        object.__setattr__(self, "_state_manager", state_manager)

    def _state(self):
        if self._state_manager._context is None:
            self._state_manager.set_context(CacheContext(name="inference"))
        return self._state_manager.get_state()

    def __getattr__(self, name):
        return getattr(self._state(), name)

    def __setattr__(self, name, value):
        setattr(self._state(), name, value)

    def reset(self) -> None:
        self._state_manager.reset()


class StepIndexedMagCacheHeadHook(MagCacheHeadHook):
    """MagCache's head hook, reading its ratio at the evaluation's `step_index` from the cache context when the
    loop passes one (PixelGen's pipelines do), instead of at its count of this context's calls."""

    @torch.compiler.disable
    def new_forward(self, module: nn.Module, *args, **kwargs):
        context = self.state_manager._context
        if context is not None and context.step_index is not None:
            self.state_manager.get_state().step_index = int(context.step_index)
        return super().new_forward(module, *args, **kwargs)


def noisy_image_as_video(module, args, kwargs) -> list[torch.Tensor]:
    """SeaCache's view of the model input: each noisy image (C, H, W) as a one-frame video (C, 1, H, W)."""
    hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    return list(hidden_states.unsqueeze(2))


class QueryKeyRMSNormMixin:
    """Per-head RMSNorm of queries and keys for an attention module with `heads`, `norm_q` and `norm_k`
    (`HeadRMSNorm`s)."""

    def norm_query_key(self, query_key: torch.Tensor) -> torch.Tensor:
        """Per-head RMSNorm of queries (`norm_q`) and keys (`norm_k`) side by side: (B, S, 2 * heads, head_dim)."""
        query_key = rms_normalize(query_key, self.norm_q.eps)
        self.norm_q(query_key[:, :, : self.heads], normalized=True)  # in place, on views: no second allocation
        self.norm_k(query_key[:, :, self.heads :], normalized=True)
        return query_key


class PatchLinear(nn.Conv2d):
    """A conv whose stride is its kernel, applied as the linear map it is to unfolded patches (B, N, C * p * p):
    forward(patches) = patches @ weight.flatten(1).T + bias. A linear map keeps tokens token-major (not a strided
    transpose of channel-major maps) and gives torch.compile a plain matmul (Inductor mispredicts a convolution's
    output layout when the batch size is symbolic). The weight keeps the conv's shape and name, and is read in
    `forward`, where offloading hooks load it."""

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return F.linear(patches, self.weight.flatten(1), self.bias)
