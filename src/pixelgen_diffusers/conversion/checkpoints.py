# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Reading the user's inputs: upstream checkpoints (`torch.load` with `weights_only=True` unless pickle is allowed),
one copy of the denoiser's weights out of them, their checksum, and class-name files. torch and yaml are imported
where they are used."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..utils import one_line
from .keys import list_keys
from .model_folder import ConversionError


if TYPE_CHECKING:
    import torch


WEIGHT_CHOICES = ("ema", "online", "ema1", "ema2")


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
        raise ConversionError(f"not a PixelGen/JiT checkpoint: entries that are not tensors: {list_keys(bad)}")
    return state_dict


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
