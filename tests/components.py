"""Tiny real components shared by the tests (real classes at tiny sizes; nothing is mocked)."""

import tokenizers
import torch
from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3Model

from pixelgen_diffusers import PixelGenC2IPipeline, PixelGenScheduler, PixelGenTransformer2DModel
from pixelgen_diffusers.pipeline_pixelgen_t2i import PixelGenT2IPipeline
from pixelgen_diffusers.transformer_jit_t2i import PixelGenT2ITransformer2DModel


TINY_C2I = dict(
    sample_size=32,
    patch_size=8,
    hidden_size=32,
    depth=2,
    num_heads=2,
    num_classes=10,
    in_context_len=4,
    in_context_start=1,
)
TINY_ID2LABEL = {i: f"shape {i}, synonym {i}" for i in range(10)} | {3: "golden retriever, retriever"}


def tiny_transformer(seed: int = 0, bottleneck_dim: int | None = None, randomize: bool = True, **overrides):
    """A 2-block class-to-image transformer. With `randomize`, zero-initialised adaLN/output layers get random
    weights too, so that every path of the network affects the output."""
    torch.manual_seed(seed)
    model = PixelGenTransformer2DModel(**{**TINY_C2I, "bottleneck_dim": bottleneck_dim, **overrides})
    if randomize:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(torch.randn_like(parameter) * 0.2)
    return model.eval()


def tiny_c2i_pipeline(sampling_method: str = "heun", timeshift: float = 2.0, **pipeline_config):
    transformer = tiny_transformer()
    scheduler = PixelGenScheduler(sampling_method=sampling_method, timeshift=timeshift)
    pipe = PixelGenC2IPipeline(transformer, scheduler, id2label=TINY_ID2LABEL, **pipeline_config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------------------------
# Text-to-image (PixelGenT2ITransformer2DModel, PixelGenT2IPipeline, tiny Qwen3 encoder and byte-level tokenizer)
# ---------------------------------------------------------------------------------------------------------------------

# 4x4 patch grid, 8 text tokens; txt_embed_dim 24 > the tiny Qwen width 16, so encoding zero-pads the features.
TINY_T2I = dict(
    sample_size=32,
    patch_size=8,
    hidden_size=32,
    depth=2,
    num_heads=2,
    num_text_blocks=2,
    txt_embed_dim=24,
    txt_max_length=8,
    bottleneck_dim=16,
)


def tiny_t2i_transformer(seed: int = 0, randomize: bool = True, **overrides):
    """A 2+2-block text-to-image transformer; with `randomize`, every parameter gets random weights."""
    torch.manual_seed(seed)
    model = PixelGenT2ITransformer2DModel(**{**TINY_T2I, **overrides})
    if randomize:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(torch.randn_like(parameter) * 0.2)
    return model.eval()


def tiny_qwen3(seed: int = 0):
    """A 2-layer Qwen3Model over the 257-token byte vocabulary of `tiny_qwen_tokenizer`."""
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=257,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=64,
    )
    return Qwen3Model(config).eval()


def tiny_qwen_tokenizer():
    """Byte-level BPE without merges (one token per byte) plus "<|endoftext|>" as the pad token, built offline."""
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab = {character: index for index, character in enumerate(alphabet)} | {"<|endoftext|>": len(alphabet)}
    return Qwen2Tokenizer(vocab=vocab, merges=[])


def tiny_t2i_pipeline(
    sampling_method: str = "adam_lm", timeshift: float = 3.0, with_text_encoder: bool = True, **pipeline_config
):
    transformer = tiny_t2i_transformer(**pipeline_config.pop("transformer_overrides", {}))
    scheduler = PixelGenScheduler(sampling_method=sampling_method, timeshift=timeshift, solver_order=2)
    text_encoder, tokenizer = (tiny_qwen3(), tiny_qwen_tokenizer()) if with_text_encoder else (None, None)
    pipe = PixelGenT2IPipeline(transformer, scheduler, text_encoder, tokenizer, **pipeline_config)
    pipe.set_progress_bar_config(disable=True)
    return pipe
