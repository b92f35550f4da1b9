# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Caption embeddings for text-to-image training, encoded once and cached on disk.

Captions go through the pipeline's own `encode_prompt` (upstream's Qwen3 conditioning: right padding to
`txt_max_length`, every position's last hidden state, zero-padded or cut to `txt_embed_dim`, rounded to bfloat16),
so training sees exactly what sampling feeds the transformer. Each caption is stored as one safetensors file under a
folder named by a key of the encoder's weights, its tokenizer and the settings; a changed encoder, tokenizer, dtype,
`txt_max_length` or `txt_embed_dim` gives another folder, hence a cache miss. Training steps only read these files.
"""

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..utils import naming_write_errors


logger = logging.getLogger(__name__)

CACHE_FORMAT = "pixelgen-caption-embeddings-v1"  # bump when the encoding path changes


def load_text_encoder(source: str | os.PathLike, dtype: torch.dtype = torch.bfloat16):
    """A Qwen3 encoder and its tokenizer from a folder holding both, a pipeline folder with `text_encoder/` and
    `tokenizer/`, or a Hub id (e.g. `Qwen/Qwen3-1.7B`)."""
    from transformers import AutoTokenizer, Qwen3Model

    path = Path(source)
    encoder_args, tokenizer_args = {}, {}
    if (path / "text_encoder").is_dir() and (path / "tokenizer").is_dir():
        encoder_args, tokenizer_args = {"subfolder": "text_encoder"}, {"subfolder": "tokenizer"}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), **tokenizer_args)
        text_encoder = Qwen3Model.from_pretrained(str(source), dtype=dtype, **encoder_args)
    except Exception as error:
        raise ValueError(
            f"Could not load the text encoder and tokenizer from text_encoder={str(source)!r}"
            f" ({type(error).__name__}: {error}). Pass a folder or Hub id of a Qwen3 model with its tokenizer."
        ) from error
    return text_encoder.eval().requires_grad_(False), tokenizer


def _hash_module(module: torch.nn.Module, digest) -> None:
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())


def _tokenizer_fingerprint(tokenizer) -> str:
    """The tokenization rules, without the per-call padding and truncation state that the fast backend records, and
    the special tokens (the pad token fills every position after the caption, so it changes the embedding)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        rules = json.loads(backend.to_str())
        rules.pop("padding", None), rules.pop("truncation", None)
    else:
        rules = tokenizer.get_vocab()
    special = {
        "special_tokens": {name: str(value) for name, value in tokenizer.special_tokens_map.items()},
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": getattr(tokenizer, "bos_token_id", None),
        "eos_token_id": getattr(tokenizer, "eos_token_id", None),
        "add_bos_token": getattr(tokenizer, "add_bos_token", None),
        "add_eos_token": getattr(tokenizer, "add_eos_token", None),
    }
    text = json.dumps({"rules": rules, "special": special}, sort_keys=True, default=str)
    return type(tokenizer).__name__ + hashlib.sha256(text.encode()).hexdigest()


def encoder_key(text_encoder, tokenizer, txt_max_length: int, txt_embed_dim: int) -> str:
    """A hash of everything an embedding depends on besides the caption: the encoder's weights, dtype, config and
    attention implementation (eager, sdpa and flash kernels round differently), the tokenizer and its special tokens,
    the transformer's text settings (`txt_max_length`, `txt_embed_dim`) and the cache format, which stands for the
    encoding path of `encode_prompt` (upstream's: no chat template, right padding, every position's last hidden
    state)."""
    digest = hashlib.sha256()
    settings = {
        "format": CACHE_FORMAT,
        "encoder_class": type(text_encoder).__name__,
        "encoder_config": text_encoder.config.to_json_string(use_diff=False),
        "encoder_dtype": str(text_encoder.dtype),
        "attention": str(getattr(text_encoder.config, "_attn_implementation", None)),
        "tokenizer": _tokenizer_fingerprint(tokenizer),
        "txt_max_length": txt_max_length,
        "txt_embed_dim": txt_embed_dim,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    _hash_module(text_encoder, digest)
    return digest.hexdigest()


def caption_key(caption: str) -> str:
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()


class CaptionEmbeddingCache:
    r"""
    On-disk caption embeddings of one encoder setup: `root/<encoder key[:16]>/<caption hash[:2]>/<hash>.safetensors`,
    each a (txt_max_length, txt_embed_dim) bfloat16 tensor with its caption in the file's metadata.

    Args:
        root: the cache folder (shared by runs; several encoders can live side by side).
        pipeline ([`PixelGenT2IPipeline`]): with the transformer being trained, the Qwen3 `text_encoder` and its
            `tokenizer`; its `encode_prompt` does the encoding.
    """

    def __init__(self, root: str | os.PathLike, pipeline):
        if pipeline.text_encoder is None or pipeline.tokenizer is None:
            raise ValueError("Caching caption embeddings needs a pipeline with a text_encoder and a tokenizer.")
        self.pipeline = pipeline
        self.text_encoder, self.tokenizer = pipeline.text_encoder, pipeline.tokenizer
        self.txt_max_length = pipeline.transformer.config.txt_max_length
        self.txt_embed_dim = pipeline.transformer.config.txt_embed_dim
        self.key = encoder_key(self.text_encoder, self.tokenizer, self.txt_max_length, self.txt_embed_dim)
        self.folder = Path(root) / self.key[:16]
        self.hits, self.misses = 0, 0

    def path(self, caption: str) -> Path:
        key = caption_key(caption)
        return self.folder / key[:2] / f"{key}.safetensors"

    def _is_cached(self, caption: str) -> bool:
        path = self.path(caption)
        if not path.is_file():
            return False
        try:
            with safe_open(path, framework="pt") as file:
                metadata = file.metadata() or {}
        except Exception:  # a foreign or damaged file: encode again (the write replaces it atomically)
            return False
        return metadata.get("caption") == caption and metadata.get("encoder_key") == self.key

    @torch.no_grad()
    def encode(self, captions: list[str], batch_size: int = 32, device: torch.device | str | None = None) -> None:
        """Encodes the captions not cached yet (each distinct caption once), with the pipeline's `encode_prompt`."""
        unique = list(dict.fromkeys(captions))
        missing = [caption for caption in unique if not self._is_cached(caption)]
        self.hits += len(unique) - len(missing)
        self.misses += len(missing)
        if not missing:
            return
        from tqdm.auto import tqdm

        device = device or self.text_encoder.device
        self.folder.mkdir(parents=True, exist_ok=True)
        settings = {"format": CACHE_FORMAT, "encoder_key": self.key, "txt_max_length": self.txt_max_length,
                    "txt_embed_dim": self.txt_embed_dim}  # fmt: skip
        self._atomic_write(self.folder / "settings.json", lambda path: Path(path).write_text(json.dumps(settings)))
        batches = range(0, len(missing), batch_size)
        for start in tqdm(batches, desc="encode captions", unit="batch", disable=len(batches) < 2):
            batch = missing[start : start + batch_size]
            embeds, _ = self.pipeline.encode_prompt(batch, device=device, do_classifier_free_guidance=False)
            for caption, embed in zip(batch, embeds):
                self._write(caption, embed)

    def _write(self, caption: str, embed: torch.Tensor) -> None:
        path = self.path(caption)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"embeds": embed.detach().cpu().contiguous()}
        metadata = {"caption": caption, "encoder_key": self.key}
        with naming_write_errors(path):
            self._atomic_write(path, lambda temporary: save_file(tensors, temporary, metadata=metadata))

    @staticmethod
    def _atomic_write(path: Path, write) -> None:
        """`write(temporary)` to a unique new file in the destination folder, then a rename: never a half file."""
        descriptor, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
        os.close(descriptor)
        try:
            write(temporary)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def load(self, caption: str) -> torch.Tensor:
        """The cached (txt_max_length, txt_embed_dim) embedding; a clear error if `encode` did not cache it."""
        path = self.path(caption)
        if not path.is_file():
            raise ValueError(f"The caption {caption[:80]!r} is not in the embedding cache {self.folder}: encode it.")
        return load_embedding(path)


def load_embedding(path: str | os.PathLike) -> torch.Tensor:
    """One cached (txt_max_length, txt_embed_dim) caption embedding."""
    with safe_open(path, framework="pt") as file:
        return file.get_tensor("embeds")


class EmbeddedCaptionDataset(torch.utils.data.Dataset):
    """Items `(image, caption embedding)` of an [`ImageCaptionDataset`], the embedding read from its cache file."""

    def __init__(self, images, embedding_files: list[Path]):
        self.images, self.embedding_files = images, embedding_files

    @property
    def num_skipped(self) -> int:
        return self.images.num_skipped

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, index = self.images[index]  # an undecodable image is replaced by the next one, with its caption
        return image, load_embedding(self.embedding_files[index])
