# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""PixelGen / JiT class-to-image transformer (x-prediction, pixel space).

This module imports only torch, diffusers and its shipped sibling `jit_layers.py`, so that both can be copied verbatim
into a model folder and loaded with `trust_remote_code=True` when `pixelgen_diffusers` is not installed.

Architecture: "Back to Basics: Let Denoising Generative Models Denoise" (JiT, Li & He) as used by PixelGen
(arXiv 2602.02493): patch embedding (plain or bottleneck), fixed 2D sin-cos positions, 2D RoPE on RMS-normed
queries and keys, adaLN-Zero blocks with SwiGLU, and in-context class tokens inserted part-way through the stack.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.hooks import TextKVCacheConfig
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin, AttentionModuleMixin
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.torch_utils import maybe_allow_in_graph

from .jit_layers import (
    AdaRMSNorm,
    HeadRMSNorm,
    PatchLinear,
    QueryKeyRMSNormMixin,
    SaveWithoutLoraMixin,
    adapt_cache_config,
    apply_rotary_emb,
    check_number,
    follow_cache_contexts,
    get_2d_sincos_pos_embed,
    mark_dynamic_shapes,
)


# Constructor arguments of the published architectures. PixelGen-XL/16 is not a JiT preset: it is built from its
# YAML and uses the plain (non-bottleneck) patch embedding.
PIXELGEN_PRESETS = {
    "PixelGen-XL/16": dict(patch_size=16, hidden_size=1152, depth=28, num_heads=16, bottleneck_dim=None,
                           in_context_len=32, in_context_start=8, dropout=0.1),
    "PixelGen-L/16": dict(patch_size=16, hidden_size=1024, depth=24, num_heads=16, bottleneck_dim=128,
                          in_context_len=32, in_context_start=8),
    "JiT-B/16": dict(patch_size=16, hidden_size=768, depth=12, num_heads=12, bottleneck_dim=128,
                     in_context_len=32, in_context_start=4),
    "JiT-B/32": dict(patch_size=32, hidden_size=768, depth=12, num_heads=12, bottleneck_dim=128,
                     in_context_len=32, in_context_start=4),
    "JiT-L/16": dict(patch_size=16, hidden_size=1024, depth=24, num_heads=16, bottleneck_dim=128,
                     in_context_len=32, in_context_start=8),
    "JiT-L/32": dict(patch_size=32, hidden_size=1024, depth=24, num_heads=16, bottleneck_dim=128,
                     in_context_len=32, in_context_start=8),
    "JiT-H/16": dict(patch_size=16, hidden_size=1280, depth=32, num_heads=16, bottleneck_dim=256,
                     in_context_len=32, in_context_start=10),
    "JiT-H/32": dict(patch_size=32, hidden_size=1280, depth=32, num_heads=16, bottleneck_dim=256,
                     in_context_len=32, in_context_start=10),
}  # fmt: skip


class PixelGenRotaryPosEmbed(nn.Module):
    """2D RoPE (EVA style): channels [0, D/2) rotate by the row, [D/2, D) by the column, frequencies interleaved.

    Returns float32 (cos, sin) tables of shape (num_prefix + grid**2, head_dim); `num_prefix` leading rows are the
    identity rotation, used for the in-context tokens.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.axis_dim = head_dim // 2
        self.theta = theta

    def forward(self, grid_size: int, num_prefix: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        exponents = torch.arange(0, self.axis_dim, 2, device=device)[: self.axis_dim // 2].float() / self.axis_dim
        inv_freq = 1.0 / (self.theta**exponents)
        # Written as upstream computes it (arange / n * n), which is not always an exact integer in float32.
        positions = torch.arange(grid_size, device=device) / grid_size * grid_size
        axis_angles = (positions[:, None] * inv_freq[None, :]).repeat_interleave(2, dim=-1)  # (grid, axis_dim)
        row_angles = axis_angles[:, None, :].expand(grid_size, grid_size, self.axis_dim)
        column_angles = axis_angles[None, :, :].expand(grid_size, grid_size, self.axis_dim)
        angles = torch.cat([row_angles, column_angles], dim=-1).reshape(grid_size * grid_size, 2 * self.axis_dim)
        cos, sin = angles.cos(), angles.sin()
        if num_prefix > 0:
            cos = torch.cat([cos.new_ones(num_prefix, cos.shape[1]), cos])
            sin = torch.cat([sin.new_zeros(num_prefix, sin.shape[1]), sin])
        return cos, sin


class PixelGenPatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: one biased conv (PixelGen-XL), or a bias-free conv to `bottleneck_dim`
    followed by a biased 1x1 conv (JiT). Tokens come out row-major over the patch grid."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int, bottleneck_dim: int | None):
        super().__init__()
        if bottleneck_dim is None:
            self.proj_in = PatchLinear(in_channels, hidden_size, patch_size, stride=patch_size, bias=True)
            self.proj_out = None
        else:
            self.proj_in = PatchLinear(in_channels, bottleneck_dim, patch_size, stride=patch_size, bias=False)
            self.proj_out = PatchLinear(bottleneck_dim, hidden_size, kernel_size=1, bias=True)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patch_size = self.proj_in.kernel_size
        patches = F.unfold(pixels, kernel_size=patch_size, stride=patch_size).transpose(1, 2)  # (B, h*w, C*p*p)
        hidden_states = self.proj_in(patches)
        if self.proj_out is not None:
            hidden_states = self.proj_out(hidden_states)
        return hidden_states


class PixelGenAttnProcessor:
    """Fused QKV projection, per-head RMSNorm on queries and keys, 2D RoPE, then any diffusers attention backend."""

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: "PixelGenAttention",
        hidden_states: torch.Tensor,
        image_rotary_emb: torch.Tensor,
    ) -> torch.Tensor:
        # Heads of queries, keys and values side by side: (B, S, 3 * heads, head_dim). Queries and keys are normalised
        # and rotated together, one pass each.
        query_key, value = (
            attn.to_qkv(hidden_states).unflatten(-1, (3 * attn.heads, -1)).split([2 * attn.heads, attn.heads], dim=2)
        )
        query_key = apply_rotary_emb(attn.norm_query_key(query_key), image_rotary_emb)
        query, key = query_key.chunk(2, dim=2)

        hidden_states = dispatch_attention_fn(
            query,
            key,
            value,
            dropout_p=attn.dropout if attn.training else 0.0,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        return attn.out_dropout(attn.to_out(hidden_states.flatten(2, 3)))


class PixelGenAttention(QueryKeyRMSNormMixin, nn.Module, AttentionModuleMixin):
    _default_processor_cls = PixelGenAttnProcessor
    _available_processors = [PixelGenAttnProcessor]
    # The projections are stored fused (`to_qkv`, as upstream's `qkv`): `fuse_qkv_projections()` has nothing to do.
    _supports_qkv_fusion = False

    def __init__(
        self, dim: int, heads: int, dropout: float = 0.0, out_dropout: float = 0.0, eps: float = 1e-6, processor=None
    ):
        super().__init__()
        self.heads = heads
        self.dropout = dropout  # on the attention weights
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.norm_q = HeadRMSNorm(dim // heads, eps=eps)
        self.norm_k = HeadRMSNorm(dim // heads, eps=eps)
        self.to_out = nn.Linear(dim, dim, bias=True)
        self.out_dropout = nn.Dropout(out_dropout)
        self.set_processor(processor if processor is not None else self._default_processor_cls())

    def forward(self, hidden_states: torch.Tensor, image_rotary_emb: torch.Tensor) -> torch.Tensor:
        return self.processor(self, hidden_states, image_rotary_emb)


class PixelGenSwiGLU(nn.Module):
    """SwiGLU with fused input projection: silu(first half) * second half, then the output projection."""

    def __init__(self, dim: int, inner_dim: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.proj_in = nn.Linear(dim, 2 * inner_dim, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(inner_dim, dim, bias=bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate, up = self.proj_in(hidden_states).chunk(2, dim=-1)
        return self.proj_out(self.dropout(F.silu(gate).mul_(up)))  # in place: no second allocation


@maybe_allow_in_graph
class PixelGenTransformerBlock(nn.Module):
    """adaLN-Zero block: x += gate * Attn(modulate(RMSNorm(x))); x += gate * SwiGLU(modulate(RMSNorm(x))).

    Tokens ahead of those `image_rotary_emb` covers pass through untouched: the in-context tokens ride along from the
    first block and join the attention only at `in_context_start`, where the model switches to the table that covers
    them. So every block maps (B, S, D) to (B, S, D), which the block-skipping caches of diffusers (first-block, Mag,
    Sea) rely on, and the number of passive tokens is a tensor size, not an argument that a compiled block would
    specialise on.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, attention_dropout: float, dropout: float):
        super().__init__()
        self.norm1 = AdaRMSNorm(dim, eps=1e-6)
        self.attn = PixelGenAttention(dim, num_heads, dropout=attention_dropout, out_dropout=dropout)
        self.norm2 = AdaRMSNorm(dim, eps=1e-6)
        # JiT's SwiGLU keeps the parameter count of a 4x GELU MLP: inner width int(int(dim * ratio) * 2 / 3).
        self.ff = PixelGenSwiGLU(dim, int(int(dim * mlp_ratio) * 2 / 3), dropout=dropout)
        self.adaln_modulation = nn.Linear(dim, 6 * dim, bias=True)

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor, image_rotary_emb: torch.Tensor) -> torch.Tensor:
        num_active_tokens = image_rotary_emb.shape[0]
        num_passive_tokens = hidden_states.shape[1] - num_active_tokens
        torch._check(num_active_tokens >= 1)  # facts a compiled block cannot see in the (symbolic) table length
        torch._check(num_passive_tokens >= 0)
        # Compiled, the split is unconditional, so that one graph serves the blocks with passive tokens and those
        # without; eagerly it is skipped when there are none.
        split = torch.compiler.is_compiling() or num_passive_tokens > 0
        if split:
            passive_tokens, hidden_states = hidden_states.split([num_passive_tokens, num_active_tokens], dim=1)
            if torch.compiler.is_compiling():  # contiguous whatever the split, or shape checks guard on the length
                hidden_states = hidden_states.clone(memory_format=torch.contiguous_format)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaln_modulation(F.silu(temb)).chunk(
            6, dim=-1
        )
        attn_output = self.attn(self.norm1(hidden_states, shift_msa, scale_msa), image_rotary_emb)
        hidden_states = torch.addcmul(hidden_states, gate_msa.unsqueeze(1), attn_output)
        ff_output = self.ff(self.norm2(hidden_states, shift_mlp, scale_mlp))
        hidden_states = torch.addcmul(hidden_states, gate_mlp.unsqueeze(1), ff_output)
        if split:
            hidden_states = torch.cat([passive_tokens, hidden_states], dim=1)
        return hidden_states


# Lets diffusers' cache hooks (FirstBlockCache, MagCache, SeaCache) find the hidden states of a block.
TransformerBlockRegistry.register(
    PixelGenTransformerBlock,
    TransformerBlockMetadata(return_hidden_states_index=0, return_encoder_hidden_states_index=None),
)


class PixelGenFinalLayer(nn.Module):
    """RMSNorm, adaLN (shift, scale) modulation, and a linear map to patch pixels in (row, column, channel) order."""

    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm = AdaRMSNorm(dim, eps=1e-6)
        self.adaln_modulation = nn.Linear(dim, 2 * dim, bias=True)
        self.proj_out = nn.Linear(dim, patch_size * patch_size * out_channels, bias=True)

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaln_modulation(F.silu(temb)).chunk(2, dim=-1)
        return self.proj_out(self.norm(hidden_states, shift, scale))


class PixelGenTransformer2DModel(
    SaveWithoutLoraMixin, ModelMixin, ConfigMixin, PeftAdapterMixin, AttentionMixin, CacheMixin
):
    r"""
    The PixelGen / JiT class-conditional transformer. It predicts the clean image from a noisy one.

    Args:
        sample_size (`int`): image height and width in pixels.
        patch_size (`int`): patch side in pixels.
        in_channels (`int`): image channels.
        hidden_size (`int`): token width.
        depth (`int`): number of transformer blocks.
        num_heads (`int`): attention heads.
        mlp_ratio (`float`): SwiGLU width is `int(int(hidden_size * mlp_ratio) * 2 / 3)`.
        num_classes (`int`): number of classes; id `num_classes` is the null class used for guidance.
        in_context_len (`int`): number of in-context class tokens.
        in_context_start (`int`): index of the block before which the in-context tokens are prepended.
        bottleneck_dim (`int`, *optional*): width of the bottleneck patch embedding; `None` for a plain conv.
        attention_dropout (`float`), dropout (`float`): training-only dropout, active in the middle half of blocks.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["PixelGenTransformerBlock"]
    _repeated_blocks = ["PixelGenTransformerBlock"]
    _skip_layerwise_casting_patterns = ["patch_embedder", "time_embedder", "class_embedder", "norm"]

    @register_to_config
    def __init__(
        self,
        sample_size: int = 256,
        patch_size: int = 16,
        in_channels: int = 3,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        in_context_len: int = 32,
        in_context_start: int = 8,
        bottleneck_dim: int | None = None,
        attention_dropout: float = 0.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        for name, value in (
            ("sample_size", sample_size),
            ("patch_size", patch_size),
            ("in_channels", in_channels),
            ("hidden_size", hidden_size),
            ("depth", depth),
            ("num_heads", num_heads),
        ):
            check_number(name, value, integer=True, minimum=1)
        check_number("num_classes", num_classes, integer=True, minimum=0)  # 0: an unconditional model
        check_number("mlp_ratio", mlp_ratio, minimum=0, exclusive_minimum=True)
        check_number("in_context_len", in_context_len, integer=True, minimum=0)
        check_number("in_context_start", in_context_start, integer=True, minimum=0)
        if bottleneck_dim is not None:
            check_number("bottleneck_dim", bottleneck_dim, integer=True, minimum=1)
        check_number("attention_dropout", attention_dropout, minimum=0, maximum=1)
        check_number("dropout", dropout, minimum=0, maximum=1)
        if sample_size % patch_size:
            raise ValueError(f"sample_size ({sample_size}) must be a multiple of patch_size ({patch_size}).")
        if hidden_size % num_heads or (hidden_size // num_heads) % 4:
            raise ValueError(f"hidden_size ({hidden_size}) / num_heads ({num_heads}) must be a multiple of 4.")
        if in_context_len > 0 and not 0 <= in_context_start < depth:
            raise ValueError(
                f"in_context_start ({in_context_start}) must be in [0, depth={depth}): set in_context_start (the"
                " presets use about depth / 3), or in_context_len=0 for no in-context tokens."
            )

        self.gradient_checkpointing = False
        grid_size = sample_size // patch_size
        self.time_embedder = TimestepEmbedding(256, hidden_size)
        self.class_embedder = nn.Embedding(num_classes + 1, hidden_size)
        self.patch_embedder = PixelGenPatchEmbed(patch_size, in_channels, hidden_size, bottleneck_dim)
        self.register_buffer("pos_embed", get_2d_sincos_pos_embed(hidden_size, grid_size)[None], persistent=True)
        self.in_context_pos_embed = nn.Parameter(torch.zeros(1, in_context_len, hidden_size))
        self.rope = PixelGenRotaryPosEmbed(hidden_size // num_heads)

        # Dropout is active only in blocks depth//4 <= i < 3*depth//4, as in JiT.
        middle = range(depth // 4, depth // 4 * 3)
        self.transformer_blocks = nn.ModuleList(
            [
                PixelGenTransformerBlock(
                    hidden_size,
                    num_heads,
                    mlp_ratio,
                    attention_dropout=attention_dropout if i in middle else 0.0,
                    dropout=dropout if i in middle else 0.0,
                )
                for i in range(depth)
            ]
        )
        self.final_layer = PixelGenFinalLayer(hidden_size, patch_size, in_channels)
        self._rotary_emb_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "PixelGenTransformer2DModel":
        """A randomly initialised model of a published architecture, e.g. `from_preset("PixelGen-XL/16")`."""
        if name not in PIXELGEN_PRESETS:
            raise ValueError(f"Unknown preset {name!r}; available: {', '.join(PIXELGEN_PRESETS)}.")
        return cls(**{**PIXELGEN_PRESETS[name], **overrides})

    def enable_cache(self, config) -> None:
        """diffusers' `CacheMixin.enable_cache` (FirstBlockCache, MagCache, TaylorSeer, FasterCache, Pyramid Attention
        Broadcast, SeaCache). Pipelines run the conditional and unconditional passes in their own cache contexts.

        Raises:
            ValueError: for a config that cannot work on this model, naming why.
        """
        if isinstance(config, TextKVCacheConfig):
            raise ValueError(
                "TextKVCacheConfig caches the text keys and values of a text-conditioned model;"
                " PixelGenTransformer2DModel is conditioned on class labels and has no text to cache."
            )
        super().enable_cache(adapt_cache_config(config, batched_inputs=("class_labels",)))
        follow_cache_contexts(self)

    @property
    def null_class_id(self) -> int:
        return self.config.num_classes

    def rotary_emb(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin) pairs, float32 (S, head_dim / 2, 2), for the image tokens alone (S = grid**2) and for
        [in-context tokens, image tokens] (the former unrotated). Built once per device, each in its own storage, and
        kept outside the state dict, so that they neither reach the checkpoint nor follow the model to bf16."""
        cache = self._rotary_emb_cache
        if cache is None or cache[0].device != device or torch.compiler.is_compiling():
            grid_size, in_context_len = self.config.sample_size // self.config.patch_size, self.config.in_context_len
            cos, sin = self.rope(grid_size, in_context_len, device)
            with_in_context = torch.stack([cos[:, 0::2], sin[:, 0::2]], dim=-1)  # each angle is repeated for its pair
            cache = (with_in_context[in_context_len:].clone(), with_in_context)
            if not torch.compiler.is_compiling():
                # Their lengths tell a block how many leading tokens are passive: symbolic for a compiled block.
                for table in cache:
                    mark_dynamic_shapes(table)
                self._rotary_emb_cache = cache
        return cache

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, h*w, p*p*C) with channels fastest -> (B, C, h*p, w*p)."""
        p, channels = self.config.patch_size, self.config.in_channels
        grid = self.config.sample_size // p
        patches = patches.reshape(patches.shape[0], grid, grid, p, p, channels)
        return patches.permute(0, 5, 1, 3, 2, 4).reshape(patches.shape[0], channels, grid * p, grid * p)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        class_labels: torch.LongTensor,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """
        Args:
            hidden_states: noisy images (B, C, H, W) in [-1, 1] space.
            timestep: PixelGen time t in [0, 1], shape (B,) or scalar; t = 0 is pure noise.
            class_labels: (B,) class ids; `num_classes` is the null (unconditional) class.
        Returns:
            The predicted clean image, (B, C, H, W).
        """
        batch_size, _, height, width = hidden_states.shape
        if height != self.config.sample_size or width != self.config.sample_size:
            raise ValueError(
                f"Input is {height}x{width} but this model takes {self.config.sample_size}x{self.config.sample_size}."
            )
        timestep = timestep.expand(batch_size) if timestep.ndim == 0 else timestep
        time_features = get_timestep_embedding(timestep, 256, flip_sin_to_cos=True, downscale_freq_shift=0)
        class_emb = self.class_embedder(class_labels)
        temb = self.time_embedder(time_features.to(class_emb.dtype)) + class_emb

        hidden_states = self.patch_embedder(hidden_states) + self.pos_embed.to(class_emb.dtype)
        in_context_len = self.config.in_context_len
        # In-context tokens: the class embedding (no time) plus learned positions; no sin-cos, no rotation. They are
        # prepended here but stay passive (untouched, unseen) until block `in_context_start`.
        in_context_tokens = class_emb[:, None, :] + self.in_context_pos_embed
        hidden_states = torch.cat([in_context_tokens, hidden_states], dim=1)
        image_rotary_emb, in_context_rotary_emb = self.rotary_emb(hidden_states.device)
        # A compiled block keeps one graph for any row count (guided 2B rows, unguided B).
        mark_dynamic_shapes(hidden_states)
        mark_dynamic_shapes(temb)
        for index, block in enumerate(self.transformer_blocks):
            if in_context_len > 0 and index == self.config.in_context_start:
                image_rotary_emb = in_context_rotary_emb  # the in-context tokens join the attention
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(block, hidden_states, temb, image_rotary_emb)
            else:
                hidden_states = block(hidden_states, temb, image_rotary_emb)

        hidden_states = hidden_states[:, in_context_len:]
        output = self.unpatchify(self.final_layer(hidden_states, temb))
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)
