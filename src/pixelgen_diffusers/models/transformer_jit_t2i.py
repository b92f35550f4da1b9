# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""PixelGen-XXL/16-T2I text-to-image transformer (x-prediction, pixel space).

This module imports only torch, diffusers and its shipped sibling `jit_layers.py`, so that both can be copied verbatim
into a model folder and loaded with `trust_remote_code=True` when `pixelgen_diffusers` is not installed.

Architecture (PixelGen, arXiv 2602.02493, `JiT_T2I` upstream): unfold patchify with a bottleneck linear embedding,
fixed 2D sin-cos positions, a timestep-only adaLN condition, text-refiner blocks on the projected Qwen3 features,
then blocks whose image queries attend to image keys (2D RoPE) and refined-text keys (no RoPE), and a plain
LayerNorm + linear head folded back to pixels.

Upstream checkpoint key -> this module's key (the converter owns the actual mapping code):

    pos_embed                          -> pos_embed (persistent buffer)
    y_pos_embedding                    -> text_pos_embed
    x_embedder.proj1 / .proj2          -> patch_embedder.proj_in / .proj_out
    t_embedder.mlp.0 / .mlp.2          -> time_embedder.linear_1 / .linear_2
    y_embedder.proj / .norm            -> text_embedder.proj / .norm
    blocks.N.norm1 / .norm2            -> transformer_blocks.N.norm1 / .norm2
    blocks.N.attn.qkv_x                -> transformer_blocks.N.attn.to_qkv
    blocks.N.attn.kv_y                 -> transformer_blocks.N.attn.to_added_kv
    blocks.N.attn.q_norm / .k_norm     -> transformer_blocks.N.attn.norm_q / .norm_k
    blocks.N.attn.proj                 -> transformer_blocks.N.attn.to_out
    blocks.N.mlp.w12 / .w3             -> transformer_blocks.N.ff.proj_in / .proj_out
    blocks.N.adaLN_modulation.0        -> transformer_blocks.N.adaln_modulation
    text_refine_blocks.N.attn.qkv      -> text_refiner_blocks.N.attn.to_qkv (other names as for blocks.N)
    final_layer.linear                 -> final_layer.proj_out
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
    QueryKeyRMSNormMixin,
    SaveWithoutLoraMixin,
    adapt_cache_config,
    apply_rotary_emb,
    check_number,
    follow_cache_contexts,
    get_2d_sincos_pos_embed,
    mark_dynamic_shapes,
)


class PixelGenT2IPatchEmbed(nn.Module):
    """Unfolded patches (features in (channel, row, column) order) -> bias-free bottleneck -> biased projection."""

    def __init__(self, patch_dim: int, bottleneck_dim: int, hidden_size: int):
        super().__init__()
        self.proj_in = nn.Linear(patch_dim, bottleneck_dim, bias=False)
        self.proj_out = nn.Linear(bottleneck_dim, hidden_size, bias=True)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.proj_in(patches))


class PixelGenT2ITextEmbed(nn.Module):
    """Projects text-encoder features to the model width and RMS-normalises them."""

    def __init__(self, txt_embed_dim: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(txt_embed_dim, hidden_size, bias=True)
        self.norm = nn.RMSNorm(hidden_size, eps=1e-6)

    def forward(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(encoder_hidden_states))


class PixelGenT2IRotaryPosEmbed(nn.Module):
    """2D RoPE on complex channel pairs: pair j rotates by the column position (even j) or the row position (odd j)
    with frequency theta^(-4 * (j // 2) / head_dim).

    Positions are `linspace(0, grid, grid)` on both axes, a step of grid / (grid - 1), not integers: that is what
    upstream trained with. Returns float32 (cos, sin) pairs of shape (grid**2, head_dim / 2, 2).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta

    def forward(self, grid_size: int, device: torch.device) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 4, device=device)[: self.head_dim // 4].float() / self.head_dim
        inv_freq = 1.0 / (self.theta**exponents)
        positions = torch.linspace(0, grid_size, grid_size, device=device)
        rows = positions.repeat_interleave(grid_size)  # token h * grid + w is at row h ...
        columns = positions.repeat(grid_size)  # ... and column w
        column_angles = torch.outer(columns, inv_freq)
        row_angles = torch.outer(rows, inv_freq)
        angles = torch.stack([column_angles, row_angles], dim=-1).flatten(1)  # (grid**2, head_dim / 2)
        # torch.polar, as upstream builds its complex table: its cos/sin round differently from torch.cos/sin.
        return torch.view_as_real(torch.polar(torch.ones_like(angles), angles))


class PixelGenT2IAttnProcessor:
    """Self-attention over `hidden_states`, optionally extended with keys/values of `encoder_hidden_states`.

    Queries and keys are RMS-normalised per head (the text keys through the same `norm_k`), RoPE rotates the image
    queries and keys only, and nothing is masked: padded text positions were attended to in training too.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: "PixelGenT2IAttention",
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # Heads of queries, keys and values side by side: (B, S, 3 * heads, head_dim). Queries and keys are normalised
        # and rotated together, one pass each.
        query_key, value = (
            attn.to_qkv(hidden_states).unflatten(-1, (3 * attn.heads, -1)).split([2 * attn.heads, attn.heads], dim=2)
        )
        query_key = attn.norm_query_key(query_key)
        if image_rotary_emb is not None:
            query_key = apply_rotary_emb(query_key, image_rotary_emb)
        query, key = query_key.chunk(2, dim=2)

        if encoder_hidden_states is not None:
            encoder_key_value = attn.to_added_kv(encoder_hidden_states).unflatten(-1, (2 * attn.heads, -1))
            encoder_key, encoder_value = encoder_key_value.chunk(2, dim=2)
            encoder_key = attn.norm_k(encoder_key)
            key = torch.cat([key, encoder_key], dim=1)
            value = torch.cat([value, encoder_value], dim=1)

        hidden_states = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=None,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        return attn.to_out(hidden_states.flatten(2, 3))


class PixelGenT2IAttention(QueryKeyRMSNormMixin, nn.Module, AttentionModuleMixin):
    _default_processor_cls = PixelGenT2IAttnProcessor
    _available_processors = [PixelGenT2IAttnProcessor]
    # The projections are stored fused (`to_qkv`, as upstream's `qkv`): `fuse_qkv_projections()` has nothing to do.
    _supports_qkv_fusion = False

    def __init__(self, dim: int, heads: int, added_kv_proj: bool = False, eps: float = 1e-6, processor=None):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_added_kv = nn.Linear(dim, 2 * dim, bias=False) if added_kv_proj else None
        self.norm_q = HeadRMSNorm(dim // heads, eps=eps)
        self.norm_k = HeadRMSNorm(dim // heads, eps=eps)
        self.to_out = nn.Linear(dim, dim, bias=True)
        self.set_processor(processor if processor is not None else self._default_processor_cls())

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.processor(self, hidden_states, encoder_hidden_states, image_rotary_emb)


class PixelGenT2IFeedForward(nn.Module):
    """Bias-free SwiGLU with fused input projection: silu(first half) * second half, then the output projection."""

    def __init__(self, dim: int, inner_dim: int):
        super().__init__()
        self.proj_in = nn.Linear(dim, 2 * inner_dim, bias=False)
        self.proj_out = nn.Linear(inner_dim, dim, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate, up = self.proj_in(hidden_states).chunk(2, dim=-1)
        return self.proj_out(F.silu(gate).mul_(up))  # in place: no second allocation


@maybe_allow_in_graph
class PixelGenT2ITextRefinerBlock(nn.Module):
    """adaLN block on the text tokens alone: self-attention without RoPE or mask, then SwiGLU (width 4 x dim).

    `temb` is the already-activated condition silu(t_emb): the modulation is a single linear layer.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1 = AdaRMSNorm(dim, eps=1e-6)
        self.attn = PixelGenT2IAttention(dim, num_heads)
        self.norm2 = AdaRMSNorm(dim, eps=1e-6)
        self.ff = PixelGenT2IFeedForward(dim, 4 * dim)
        self.adaln_modulation = nn.Linear(dim, 6 * dim, bias=True)

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaln_modulation(temb).chunk(6, dim=-1)
        attn_output = self.attn(self.norm1(hidden_states, shift_msa, scale_msa))
        hidden_states = torch.addcmul(hidden_states, gate_msa.unsqueeze(1), attn_output)
        ff_output = self.ff(self.norm2(hidden_states, shift_mlp, scale_mlp))
        return torch.addcmul(hidden_states, gate_mlp.unsqueeze(1), ff_output)


@maybe_allow_in_graph
class PixelGenT2ITransformerBlock(nn.Module):
    """adaLN block on the image tokens: image queries attend to image keys (with RoPE) and to the refined text
    (without RoPE). The text is read, never updated, so every block sees the same refined text."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1 = AdaRMSNorm(dim, eps=1e-6)
        self.attn = PixelGenT2IAttention(dim, num_heads, added_kv_proj=True)
        self.norm2 = AdaRMSNorm(dim, eps=1e-6)
        self.ff = PixelGenT2IFeedForward(dim, 4 * dim)
        self.adaln_modulation = nn.Linear(dim, 6 * dim, bias=True)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        image_rotary_emb: torch.Tensor,
    ) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaln_modulation(temb).chunk(6, dim=-1)
        attn_output = self.attn(
            self.norm1(hidden_states, shift_msa, scale_msa), encoder_hidden_states, image_rotary_emb
        )
        hidden_states = torch.addcmul(hidden_states, gate_msa.unsqueeze(1), attn_output)
        ff_output = self.ff(self.norm2(hidden_states, shift_mlp, scale_mlp))
        return torch.addcmul(hidden_states, gate_mlp.unsqueeze(1), ff_output)


# Lets diffusers' cache hooks (FirstBlockCache, MagCache, SeaCache) find the hidden states of a block. The text is
# an input of every block, never an output, and the text-refiner blocks are not part of the cached image stack.
TransformerBlockRegistry.register(
    PixelGenT2ITransformerBlock,
    TransformerBlockMetadata(return_hidden_states_index=0, return_encoder_hidden_states_index=None),
)


class PixelGenT2IFinalLayer(nn.Module):
    """LayerNorm without affine parameters and without adaLN, then a linear map to patch pixels."""

    def __init__(self, dim: int, patch_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.proj_out = nn.Linear(dim, patch_dim, bias=True)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.norm(hidden_states))


class PixelGenT2ITransformer2DModel(
    SaveWithoutLoraMixin, ModelMixin, ConfigMixin, PeftAdapterMixin, AttentionMixin, CacheMixin
):
    r"""
    The PixelGen text-to-image transformer. It predicts the clean image from a noisy one and text features.

    Args:
        sample_size (`int`): image height and width in pixels (the sin-cos table fixes it).
        patch_size (`int`): patch side in pixels.
        in_channels (`int`): image channels.
        hidden_size (`int`): token width.
        depth (`int`): number of image transformer blocks.
        num_heads (`int`): attention heads (image and text blocks).
        num_text_blocks (`int`): number of text-refiner blocks.
        txt_embed_dim (`int`): feature width of the text encoder's hidden states (zero-padded or cut to this).
        txt_max_length (`int`): number of text tokens; the learned text position table has this many rows.
        bottleneck_dim (`int`): width of the bottleneck patch embedding.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["PixelGenT2ITransformerBlock", "PixelGenT2ITextRefinerBlock"]
    _repeated_blocks = ["PixelGenT2ITransformerBlock", "PixelGenT2ITextRefinerBlock"]
    _skip_layerwise_casting_patterns = ["patch_embedder", "time_embedder", "text_embedder", "norm"]

    @register_to_config
    def __init__(
        self,
        sample_size: int = 512,
        patch_size: int = 16,
        in_channels: int = 3,
        hidden_size: int = 1536,
        depth: int = 16,
        num_heads: int = 24,
        num_text_blocks: int = 4,
        txt_embed_dim: int = 2048,
        txt_max_length: int = 128,
        bottleneck_dim: int = 256,
    ):
        super().__init__()
        for name, value in (
            ("sample_size", sample_size),
            ("patch_size", patch_size),
            ("in_channels", in_channels),
            ("hidden_size", hidden_size),
            ("depth", depth),
            ("num_heads", num_heads),
            ("txt_embed_dim", txt_embed_dim),
            ("txt_max_length", txt_max_length),
            ("bottleneck_dim", bottleneck_dim),
        ):
            check_number(name, value, integer=True, minimum=1)
        check_number("num_text_blocks", num_text_blocks, integer=True, minimum=0)
        if sample_size % patch_size:
            raise ValueError(f"sample_size ({sample_size}) must be a multiple of patch_size ({patch_size}).")
        if hidden_size % num_heads or (hidden_size // num_heads) % 4:
            raise ValueError(f"hidden_size ({hidden_size}) / num_heads ({num_heads}) must be a multiple of 4.")

        self.gradient_checkpointing = False
        grid_size = sample_size // patch_size
        patch_dim = in_channels * patch_size * patch_size
        self.time_embedder = TimestepEmbedding(256, hidden_size)
        self.text_embedder = PixelGenT2ITextEmbed(txt_embed_dim, hidden_size)
        self.text_pos_embed = nn.Parameter(torch.randn(1, txt_max_length, hidden_size) * 0.02)
        self.patch_embedder = PixelGenT2IPatchEmbed(patch_dim, bottleneck_dim, hidden_size)
        self.register_buffer("pos_embed", get_2d_sincos_pos_embed(hidden_size, grid_size)[None], persistent=True)
        self.rope = PixelGenT2IRotaryPosEmbed(hidden_size // num_heads)

        self.text_refiner_blocks = nn.ModuleList(
            [PixelGenT2ITextRefinerBlock(hidden_size, num_heads) for _ in range(num_text_blocks)]
        )
        self.transformer_blocks = nn.ModuleList(
            [PixelGenT2ITransformerBlock(hidden_size, num_heads) for _ in range(depth)]
        )
        self.final_layer = PixelGenT2IFinalLayer(hidden_size, patch_dim)
        self._rotary_emb_cache: torch.Tensor | None = None

    def rotary_emb(self, device: torch.device) -> torch.Tensor:
        """The image tokens' RoPE table, float32 (grid**2, head_dim / 2, 2). Built once per device and kept outside
        the state dict, so that it neither reaches the checkpoint nor follows the model to bf16."""
        cache = self._rotary_emb_cache
        if cache is None or cache.device != device or torch.compiler.is_compiling():
            cache = self.rope(self.config.sample_size // self.config.patch_size, device)
            if not torch.compiler.is_compiling():
                self._rotary_emb_cache = cache
        return cache

    def enable_cache(self, config) -> None:
        """diffusers' `CacheMixin.enable_cache` (FirstBlockCache, MagCache, TaylorSeer, FasterCache, Pyramid Attention
        Broadcast, SeaCache). Pipelines run the conditional and unconditional passes in their own cache contexts.

        Raises:
            ValueError: for a config that cannot work on this model, naming why.
        """
        if isinstance(config, TextKVCacheConfig):
            raise ValueError(
                "TextKVCacheConfig reuses text keys and values computed once per prompt, but"
                " PixelGenT2ITransformer2DModel refines the text with the timestep in every evaluation"
                " (text_refiner_blocks), so its text keys and values change at every step."
            )
        super().enable_cache(adapt_cache_config(config, batched_inputs=()))
        follow_cache_contexts(self)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """
        Args:
            hidden_states: noisy images (B, C, H, W) in [-1, 1] space.
            timestep: PixelGen time t in [0, 1], shape (B,) or scalar; t = 0 is pure noise.
            encoder_hidden_states: text-encoder features (B, txt_max_length, txt_embed_dim), padding included.
        Returns:
            The predicted clean image, (B, C, H, W).
        """
        batch_size, _, height, width = hidden_states.shape
        sample_size, patch_size = self.config.sample_size, self.config.patch_size
        if height != sample_size or width != sample_size:
            raise ValueError(f"Input is {height}x{width} but this model takes {sample_size}x{sample_size}.")
        text_shape = (self.config.txt_max_length, self.config.txt_embed_dim)
        if encoder_hidden_states.ndim != 3 or tuple(encoder_hidden_states.shape[1:]) != text_shape:
            raise ValueError(
                f"encoder_hidden_states must have shape (batch, {text_shape[0]}, {text_shape[1]}), got"
                f" {tuple(encoder_hidden_states.shape)}."
            )
        timestep = timestep.expand(batch_size) if timestep.ndim == 0 else timestep

        # max_period=10 (not 10000): t is in [0, 1] and upstream's T2I embedder uses this period.
        time_features = get_timestep_embedding(
            timestep, 256, flip_sin_to_cos=True, downscale_freq_shift=0, max_period=10
        )
        text = self.text_embedder(encoder_hidden_states)
        # silu(t_emb) is the only condition: there is no pooled text vector.
        temb = F.silu(self.time_embedder(time_features.to(text.dtype)))

        text = text + self.text_pos_embed.to(text.dtype)
        # A compiled block keeps one graph for any row count (guided steps run 2B rows, unguided ones B).
        mark_dynamic_shapes(text)
        mark_dynamic_shapes(temb)
        for block in self.text_refiner_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                text = self._gradient_checkpointing_func(block, text, temb)
            else:
                text = block(text, temb)

        # Patch features in (channel, row, column) order, as F.unfold lays them out.
        patches = F.unfold(hidden_states, kernel_size=patch_size, stride=patch_size).transpose(1, 2)
        hidden_states = self.patch_embedder(patches.to(text.dtype)) + self.pos_embed.to(text.dtype)
        image_rotary_emb = self.rotary_emb(hidden_states.device)
        mark_dynamic_shapes(hidden_states)
        mark_dynamic_shapes(text)  # a new tensor: the refiners' output
        for block in self.transformer_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(block, hidden_states, text, temb, image_rotary_emb)
            else:
                hidden_states = block(hidden_states, text, temb, image_rotary_emb)

        patches = self.final_layer(hidden_states)
        output = F.fold(
            patches.transpose(1, 2), output_size=(height, width), kernel_size=patch_size, stride=patch_size
        )
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)
