# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Model folders on disk, shared by every conversion module: the error types, reading `model_index.json`, and
writing a folder so that it appears complete or not at all (checked output, temporary folder beside it, every tensor
re-read and verified, atomic rename). torch, safetensors and diffusers are imported where they are used."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..utils import apply_umask, naming_write_errors, one_line, recover_directory, replace_directory


if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline


class ModelFolderError(ValueError):
    """A problem with the user's input or output folder; the CLI prints it as one line."""


class ConversionError(ModelFolderError):
    """A problem with the user's input to a conversion; the CLI prints it as one line."""


def read_model_index(folder: Path) -> dict:
    path = Path(folder) / "model_index.json"
    if not path.is_file():
        raise ModelFolderError(f"{folder} is not a diffusers model folder (no model_index.json)")
    try:
        model_index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFolderError(f"cannot read {path}: {one_line(error)}") from None
    if not isinstance(model_index, dict):
        raise ModelFolderError(f"{path} must hold a JSON object, got a {type(model_index).__name__}")
    return model_index


def pipeline_class_name(model_index: dict) -> str | None:
    """The pipeline class a `model_index.json` names: `"Name"`, or `["module", "Name"]` for a folder shipping code."""
    class_entry = model_index.get("_class_name")
    return class_entry[-1] if isinstance(class_entry, list) else class_entry


# -------------------------------------------------------------------------------------------------- output folders
def check_output_dir(output_dir: Path, overwrite: bool, source: Path | None = None, recover: bool = True) -> None:
    """Fails early (before any work) on an output that exists and may not be replaced, or that lies inside the source
    folder. What a killed run left next to the output (a temporary folder, the old folder under a hidden name) is
    cleaned up or recovered first (`recover`; not while this run's own temporary folder is there)."""
    output_dir = Path(output_dir)
    for line in recover_directory(output_dir) if recover else ():
        print(line, file=sys.stderr)
    if source is not None and Path(source).is_dir() and _is_within(output_dir, Path(source)):
        raise ModelFolderError(
            f"output folder {output_dir} is inside the source folder {source}; choose another output"
        )
    if output_dir.is_symlink() or (output_dir.exists() and not output_dir.is_dir()):
        raise ModelFolderError(f"output {output_dir} exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not overwrite:
            raise ModelFolderError(
                f"output folder {output_dir} exists and is not empty; pass --overwrite to replace it"
            )
        if source is not None and _is_within(Path(source), output_dir):
            raise ModelFolderError(f"output folder {output_dir} contains the source {source}; choose another output")


def _is_within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _commit(temporary: Path, output_dir: Path, overwrite: bool) -> None:
    """Moves the finished folder into place; an existing folder is replaced only now, and only with `overwrite`."""
    if output_dir.is_dir() and not any(output_dir.iterdir()):
        output_dir.rmdir()
    if output_dir.exists() or output_dir.is_symlink():
        check_output_dir(output_dir, overwrite, recover=False)  # `temporary` is ours: nothing to clean up now
    replace_directory(temporary, output_dir)


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def format_size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024


@contextlib.contextmanager
def staged_folder(output_dir: str | Path, *, overwrite: bool = False, source: Path | None = None):
    """Yields a new temporary folder beside `output_dir` to write the model folder into; once the `with` body
    finishes, the folder gets normal permissions and is renamed into place (an existing `output_dir` is replaced only
    now, and only with `overwrite`). On failure the temporary folder and any parent folders this call created are
    removed, and `output_dir` is left as it was.

    Args:
        source: a path that must not be inside `output_dir` (it would be replaced).
    """
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite, source)
    created = [parent for parent in [output_dir.parent, *output_dir.parent.parents] if not parent.exists()]
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        with naming_write_errors(output_dir):  # a full disk names the folder being written
            yield temporary
        apply_umask(temporary)
        _commit(temporary, output_dir, overwrite)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        for parent in created:  # innermost first; only folders this call created, and only if still empty
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        raise


# ------------------------------------------------------------------------------------------------- folder contents
def drop_local_paths(folder: Path) -> None:
    """Removes the `_name_or_path` that diffusers and transformers record in saved configs when it is a path on this
    machine (where a component was loaded from): meaningless elsewhere, and it makes exports differ per machine."""
    for path in sorted(Path(folder).rglob("*.json")):
        config = json.loads(path.read_text())
        if not isinstance(config, dict):
            continue
        local = [key for key in ("_name_or_path", "name_or_path") if is_local_path(config.get(key))]
        if local:
            for key in local:
                del config[key]
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


# Settings of a tokenizer call (and of its loading) that transformers 5 writes into tokenizer_config.json once the
# tokenizer has been called; they are not the tokenizer's own and would make an export depend on what ran before.
TOKENIZER_CALL_SETTINGS = (
    "is_local",
    "local_files_only",
    "max_length",
    "stride",
    "truncation_strategy",
    "pad_to_multiple_of",
    "pad_token_type_id",
)


def drop_tokenizer_call_settings(folder: Path, pipeline: DiffusionPipeline) -> None:
    """Removes `TOKENIZER_CALL_SETTINGS` from the saved tokenizer configs, and `padding_side` / `truncation_side` where
    they equal the tokenizer class's default (written only after a call): the config is the same however the
    pipeline was used."""
    for name, component in pipeline.components.items():
        path = Path(folder) / name / "tokenizer_config.json"
        if component is None or not path.is_file():
            continue
        config = json.loads(path.read_text())
        drop = [key for key in TOKENIZER_CALL_SETTINGS if key in config]
        drop += [
            key
            for key in ("padding_side", "truncation_side")
            if key in config and config[key] == getattr(type(component), key, None)
        ]
        if drop:
            for key in drop:
                del config[key]
            path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def is_local_path(value) -> bool:
    """An absolute path (POSIX, Windows drive or UNC), as opposed to a Hub id or a relative name."""
    if not isinstance(value, str) or not value:
        return False
    return os.path.isabs(value) or value.startswith(("/", "\\")) or (len(value) > 2 and value[1:3] in (":\\", ":/"))


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


def copy_transformers_folder(source: Path, target: Path, tokenizer: bool) -> None:
    """Copies a transformers model or tokenizer folder: only the files loading needs, weights only as safetensors."""
    if tokenizer:
        files = [source / name for name in TOKENIZER_FILES if (source / name).is_file()]
        if not any(path.name in ("tokenizer.json", "vocab.json", "tokenizer_config.json") for path in files):
            raise ModelFolderError(f"tokenizer folder {source} has no tokenizer.json / vocab.json")
    else:
        weights = sorted(source.glob("*.safetensors"))
        if not (source / "config.json").is_file() or not weights:
            raise ModelFolderError(f"text encoder folder {source} needs config.json and *.safetensors weights")
        files = [source / "config.json", *weights, *source.glob("*.safetensors.index.json")]
        files += [path for path in [source / "generation_config.json"] if path.is_file()]
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, target / path.name)


# ----------------------------------------------------------------------------------------------------- verification
def read_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor in the safetensors files of one component folder (sharded or not)."""
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def stored_dtype(folder: Path) -> torch.dtype | None:
    """The dtype of the first floating-point tensor stored in a component folder."""
    import torch
    from safetensors import safe_open

    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(path, framework="pt") as file:
            for key in file.keys():
                tensor = file.get_slice(key)
                dtype = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}.get(tensor.get_dtype())
                if dtype is not None:
                    return dtype
    return None


def _same_bits(first: torch.Tensor, second: torch.Tensor) -> bool:
    import torch

    if first.dtype != second.dtype or first.shape != second.shape:
        return False
    return torch.equal(
        first.contiguous().reshape(-1).view(torch.uint8), second.contiguous().reshape(-1).view(torch.uint8)
    )


def verify_folder(folder: Path, pipeline: DiffusionPipeline) -> None:
    """Re-reads every model component from disk and checks that each tensor is bit-identical to the one in memory."""
    from diffusers import ModelMixin

    for name, component in pipeline.components.items():
        if not isinstance(component, ModelMixin):
            continue
        expected = {key: tensor.detach().cpu() for key, tensor in component.state_dict().items()}
        on_disk = read_safetensors_folder(folder / name)
        if set(on_disk) != set(expected):
            difference = sorted(set(on_disk) ^ set(expected))
            raise ModelFolderError(f"verification failed: {name} tensors on disk differ in names: {difference[:5]}")
        for key, tensor in expected.items():
            if not _same_bits(on_disk[key], tensor):
                raise ModelFolderError(f"verification failed: {name}.{key} did not round-trip through safetensors")
