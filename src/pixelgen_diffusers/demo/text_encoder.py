# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The text path of the text-to-image demo: a real `Qwen2Tokenizer` (byte-level BPE, Qwen's pre-tokenizer and
`<|endoftext|>` padding) trained on the caption grammar, and a real `Qwen3Model` at a tiny size.

The encoder is kept frozen at its random initialisation, as PixelGen-XXL/16-T2I keeps Qwen3-1.7B frozen: the
trainer encodes every caption once and caches the features, so the encoder never sees a gradient. A frozen random
Qwen3 still gives every token (and, through RoPE and causal attention, its position and left context) its own
feature vector; the transformer's text-refiner blocks learn to read them. Pre-training the encoder on this grammar
would teach it nothing the refiner cannot learn, and would take a second training loop.
"""

import itertools

import tokenizers
import torch
from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3Model

from .captions import COLOR_NAMES, FULL_TEMPLATES, caption
from .shapes import CLASS_NAMES


# Vocabulary size the BPE trainer may reach: 256 byte tokens, <|endoftext|>, and at most this many merges; the
# grammar needs about 100, so every word of it ends up as one token.
MAX_VOCAB_SIZE = 1024
TEXT_ENCODER_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    max_position_embeddings=64,
)


def grammar_corpus() -> list[str]:
    """Every caption the grammar can produce (each once)."""
    corpus = []
    for shape in CLASS_NAMES:
        corpus.append(caption(shape))
        for color, background in itertools.permutations(COLOR_NAMES, 2):
            corpus += [caption(shape, color, background, template) for template in FULL_TEMPLATES]
        for color in COLOR_NAMES:
            corpus += [caption(shape, color), caption(shape, background=color)]
    return corpus


def build_tokenizer() -> Qwen2Tokenizer:
    """A `Qwen2Tokenizer` whose BPE merges are trained on `grammar_corpus()`: grammar words are single tokens, any
    other text falls back to byte tokens (as in Qwen's own vocabulary, nothing is out of vocabulary)."""
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    byte_vocab = {character: index for index, character in enumerate(alphabet)} | {"<|endoftext|>": len(alphabet)}
    byte_level = Qwen2Tokenizer(vocab=byte_vocab, merges=[])
    return byte_level.train_new_from_iterator(grammar_corpus(), vocab_size=MAX_VOCAB_SIZE)


def build_text_encoder(vocab_size: int, seed: int = 0) -> Qwen3Model:
    """A 2-layer, 32-wide `Qwen3Model` with transformers' random initialisation under `seed`, in eval mode."""
    torch.manual_seed(seed)
    return Qwen3Model(Qwen3Config(vocab_size=vocab_size, **TEXT_ENCODER_CONFIG)).eval()
