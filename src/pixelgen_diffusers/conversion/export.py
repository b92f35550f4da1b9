# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Self-contained model folders: a PixelGen pipeline plus copies of its code, loadable with plain diffusers.

Our pipelines' `save_pretrained` ships their code already (see their `save_config`). `write_model_folder` also makes
folders self-contained for any pipeline (the pipeline module as `pipeline.py`, each component module inside its own
folder, `transformer/transformer_jit.py`, with `model_index.json` pointing at them: `["transformer_jit", ...]`), so
`DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder / "pipeline.py", trust_remote_code=True)` works
anywhere; it adds shipped text encoders, metadata and the model card, and writes through `model_folder` (verified
tensors, atomic rename). Both `pixelgen convert` and `pixelgen export` write through it. torch and diffusers are
imported where they are used, so that `pixelgen export --help` is instant.
"""

from __future__ import annotations

import ast
import copy
import datetime
import inspect
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..utils import (
    DTYPE_NAMES,
    atomic_write_bytes,
    check_shard_size,
    is_text_to_image,
    one_line,
    torch_dtype,
)
from .model_card import card_fields, render_model_card
from .model_folder import (
    ModelFolderError,
    check_output_dir,
    copy_transformers_folder,
    drop_local_paths,
    drop_tokenizer_call_settings,
    folder_size,
    format_size,
    is_local_path,
    staged_folder,
    stored_dtype,
    verify_folder,
)


if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


# Modules that hold the code of a component we ship: the package's own, or a copy loaded as remote code.
CODE_PACKAGES = ("pixelgen_diffusers.", "diffusers_modules.")


def write_model_folder(
    pipeline: DiffusionPipeline,
    output_dir: str | Path,
    *,
    overwrite: bool = False,
    max_shard_size: str | int = "10GB",
    metadata: dict | None = None,
    readme: str | None = None,
    extra_folders: dict[str, tuple[Path, list[str]]] | None = None,
    source: Path | None = None,
) -> Path:
    """Writes `pipeline` as a self-contained folder, verifies every tensor on disk, then renames it into place.

    Args:
        extra_folders: component name -> (a local transformers folder to copy in, its `model_index.json` entry),
            for components that are shipped but not loaded in memory (a text encoder and its tokenizer).
        source: a path that must not be inside `output_dir` (it would be replaced).
    """
    with staged_folder(output_dir, overwrite=overwrite, source=source) as temporary:
        pipeline.save_pretrained(temporary, safe_serialization=True, max_shard_size=max_shard_size)
        for name, (folder, _) in (extra_folders or {}).items():
            copy_transformers_folder(Path(folder), temporary / name, tokenizer=name.startswith("tokenizer"))
        entries = {name: entry for name, (_, entry) in (extra_folders or {}).items()}
        make_self_contained(temporary, pipeline, extra_entries=entries)
        drop_local_paths(temporary)
        drop_tokenizer_call_settings(temporary, pipeline)
        if metadata is not None:
            (temporary / "conversion_metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
        if readme is not None:
            (temporary / "README.md").write_text(readme)
        verify_folder(temporary, pipeline)
    return Path(output_dir)


def make_self_contained(folder: Path, pipeline: DiffusionPipeline, extra_entries: dict | None = None) -> None:
    """Copies the pipeline's and components' code into `folder`, each module with the sibling modules it imports
    relatively (the shared `pipeline_utils_pixelgen.py`, `jit_layers.py`) beside it, and points `model_index.json`
    at the copies."""
    index_path = folder / "model_index.json"
    model_index = json.loads(index_path.read_text())

    shipped = {"pipeline": (type(pipeline), folder / "pipeline.py")}
    for name, component in pipeline.components.items():
        module = type(component).__module__ if component is not None else ""
        if module.startswith(CODE_PACKAGES):
            shipped[name] = (type(component), folder / name / f"{module.rpartition('.')[2]}.py")
    copies = {}  # target -> source
    for cls, target in shipped.values():
        code_file, *siblings = shipped_code_files(inspect.getsourcefile(cls))
        copies[target] = code_file
        copies.update((target.parent / sibling.name, sibling) for sibling in siblings)
    _check_flat_namespace(copies)

    for name, (cls, target) in shipped.items():
        if name == "pipeline":
            model_index["_class_name"] = [target.stem, cls.__name__]
        else:
            model_index[name] = [target.stem, cls.__name__]
    for target, code_file in copies.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(code_file, target)

    model_index.update(extra_entries or {})
    index_path.write_text(json.dumps(model_index, indent=2, sort_keys=True) + "\n")


def shipped_code_files(code_file: str | Path) -> list[Path]:
    """`code_file` and the sibling modules it imports relatively (recursively), each checked by `_check_standalone`:
    what a model folder ships for one class."""
    from ..pipelines.pipeline_utils_pixelgen import shipped_code_files as relative_import_closure

    files = relative_import_closure(code_file)
    for file in files:
        _check_standalone(file)
    return files


def _check_flat_namespace(copies: dict[Path, Path]) -> None:
    """diffusers imports every remote module of a folder into one flat namespace (`diffusers_modules.local.<stem>`,
    whatever its subfolder), so two different files must not share a stem; the same file in two places is fine."""
    by_stem = {}
    for target, code_file in copies.items():
        other = by_stem.setdefault(target.stem, (target, code_file))
        if other[1].read_bytes() != code_file.read_bytes():
            raise ModelFolderError(
                f"module file names must be unique across the folder: {other[0].name} and {target.name} would both be"
                f" imported as diffusers_modules.local.{target.stem}"
            )


def refresh_code(folder: str | Path) -> list[Path]:
    """Replaces the code a self-contained model folder ships (`pipeline.py` and each component's module, as its
    `model_index.json` names them, each with the sibling modules it imports relatively, added where missing) with
    this package's current modules; configs, weights and the tokenizer are not
    touched. Each file is written to a unique temporary name beside it and renamed into place.

    Returns:
        The code files written (those whose content changed).

    Raises:
        ModelFolderError: `folder` has no `model_index.json`, or names code this package does not have.
    """
    import importlib

    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelFolderError(f"{folder} is not a model folder (no model_index.json)")
    model_index = json.loads(index_path.read_text())
    package = __name__.partition(".")[0]
    written = []
    copies = {}  # target -> source
    for name, entry in model_index.items():
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            continue
        stem, class_name = entry
        target = folder / f"{stem}.py" if name == "_class_name" else folder / name / f"{stem}.py"
        if not target.is_file():
            continue  # a library's component (transformers, diffusers): no shipped code
        cls = getattr(importlib.import_module(package), class_name, None)
        if cls is None:
            raise ModelFolderError(f"{target} holds {class_name}, which {package} does not define")
        code_file, *siblings = shipped_code_files(inspect.getsourcefile(cls))
        copies[target] = code_file
        copies.update((target.parent / sibling.name, sibling) for sibling in siblings)
    _check_flat_namespace(copies)
    written = []
    for target, source in copies.items():
        code = source.read_bytes()
        if target.is_file() and target.read_bytes() == code:
            continue
        if not target.is_file():  # a shared module the folder did not ship yet
            atomic_write_bytes(target, code)
            written.append(target)
            continue
        descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(code)
            os.chmod(temporary, target.stat().st_mode & 0o777)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


def _check_standalone(code_file: Path) -> None:
    """A shipped module may import installed libraries and, with single-dot relative imports (`from .name import
    ...`, the form diffusers copies along with remote code), sibling modules beside it; not this package."""
    tree = ast.parse(code_file.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["." * node.level + (node.module or "")]
            if node.level == 1 and node.module and "." not in node.module:
                if not (code_file.parent / f"{node.module}.py").is_file():
                    raise ModelFolderError(
                        f"{code_file.name} imports .{node.module}, which is not beside it; a module shipped in a"
                        " model folder must be self-contained"
                    )
                continue
        for name in names:
            if name.startswith(".") or name.split(".")[0] == "pixelgen_diffusers":
                raise ModelFolderError(
                    f"{code_file.name} imports {name}; a module shipped in a model folder must be self-contained:"
                    " libraries, and its siblings as `from .sibling import ...`"
                )


# ------------------------------------------------------------------------------------------------------------ export
def encoder_folders(folder: Path) -> dict[str, tuple[Path, list[str]]]:
    """The `extra_folders` (see `write_model_folder`) that ship the Qwen3 encoder and tokenizer of a local folder:
    a pipeline folder with `text_encoder/` and `tokenizer/`, or one folder holding both."""
    folder = Path(folder).expanduser()
    encoder, tokenizer = folder, folder
    if (folder / "text_encoder").is_dir() and (folder / "tokenizer").is_dir():
        encoder, tokenizer = folder / "text_encoder", folder / "tokenizer"
    try:
        tokenizer_config = json.loads((tokenizer / "tokenizer_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        tokenizer_config = {}
    tokenizer_class = tokenizer_config.get("tokenizer_class") or "Qwen2Tokenizer"
    return {
        "text_encoder": (encoder, ["transformers", "Qwen3Model"]),
        "tokenizer": (tokenizer, ["transformers", tokenizer_class]),
    }


def _place_text_encoder(pipeline, text_encoder: str | Path | None, metadata: dict):
    """(pipeline, extra_folders) of a text-to-image export: the encoder a shared folder can reach, never a path of
    this machine. `text_encoder` (a Hub id or a local folder) wins; else a local `text_encoder_id` is shipped."""
    if not is_text_to_image(pipeline):
        if text_encoder is not None:
            raise ModelFolderError("--text-encoder is for text-to-image models; this is a class-to-image model")
        return pipeline, {}
    recorded = pipeline.config.get("text_encoder_id")
    shipped = getattr(pipeline, "text_encoder", None) is not None
    source = text_encoder if text_encoder is not None else (recorded if is_local_path(recorded) else None)
    if source is None:
        return pipeline, {}
    pipeline = copy.copy(pipeline)  # the caller's pipeline keeps its config
    if not Path(source).expanduser().is_dir():
        if text_encoder is not None and not is_local_path(str(text_encoder)):  # a Hub id: recorded, not shipped
            pipeline.register_to_config(text_encoder_id=str(text_encoder))
            metadata["text_encoder"] = str(text_encoder)
            return pipeline, {}
        raise ModelFolderError(
            f"the pipeline's text encoder is a path on this machine ({source}) that no longer exists, and a shared"
            " folder cannot name it: pass --text-encoder with the encoder's Hub id or a folder to ship"
        )
    pipeline.register_to_config(text_encoder_id=None)
    metadata["text_encoder"] = None
    metadata["text_encoder_included"] = metadata["tokenizer_included"] = True
    if shipped and text_encoder is None:
        return pipeline, {}  # already a component: saved with the pipeline
    if shipped:
        pipeline.text_encoder = pipeline.tokenizer = None  # the given folder's replace them
        pipeline.register_to_config(text_encoder=(None, None), tokenizer=(None, None))
    folders = encoder_folders(Path(source))
    for name, (folder, _) in folders.items():
        if not folder.is_dir():
            raise ModelFolderError(f"--text-encoder {source}: no {name} folder at {folder}")
    return pipeline, folders


def export_pipeline(
    source: str | Path | DiffusionPipeline,
    output_dir: str | Path,
    *,
    dtype: str | None = None,
    max_shard_size: str | int = "10GB",
    overwrite: bool = False,
    verbose: bool = False,
    ema_index: int = 0,
    license: str | None = None,
    base_model: str | None = None,
    text_encoder: str | Path | None = None,
) -> Path:
    """Turns a saved PixelGen pipeline (e.g. `save_pretrained` output after fine-tuning) or a pipeline object into a
    self-contained model folder.

    Args:
        source: a folder holding a saved pipeline of ours, or a pipeline object (left as it is).
        dtype: storage dtype of the transformer (`float32`, `bfloat16`, `float16`); by default the source's. A
            text encoder keeps its own dtype.
        ema_index: for a training checkpoint that tracked several EMAs (`--ema-decay A B ...`), which one the
            exported transformer holds; 0, the first, is the one the checkpoint's pipeline holds already.
        text_encoder: (text-to-image) a Hub id to record as the folder's `text_encoder_id`, or a local folder (a
            Qwen3 folder with its tokenizer, or a pipeline folder with `text_encoder/` and `tokenizer/`) to ship in
            it. By default a `text_encoder_id` that is a path on this machine (a fine-tune of the bundled demo
            records one) is shipped from there: a shared folder never names a path of this machine.
        license, base_model: the weights' license (Hub license id) and origin (Hub id) for the card; by default what
            the source folder's `conversion_metadata.json` records.
    """
    import torch
    from diffusers import DiffusionPipeline

    from .hub import load_package_pipeline

    if not isinstance(source, (str, Path, DiffusionPipeline)):
        raise ModelFolderError(f"source must be a folder or a pipeline, got {type(source).__name__}: {source!r}")
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise ModelFolderError(f"--dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    try:
        check_shard_size(max_shard_size)
    except ValueError as error:
        raise ModelFolderError(str(error)) from None
    stated_card_fields = card_fields(license, base_model)
    if ema_index and isinstance(source, DiffusionPipeline):
        raise ModelFolderError("--ema picks an EMA of a training checkpoint folder, not of a pipeline object")
    metadata = {}
    source_path = None
    if isinstance(source, DiffusionPipeline):
        pipeline = source
        if dtype is not None and source.transformer.dtype != torch_dtype(dtype):
            # A cast copy of the transformer in a shallow copy of the pipeline: the caller's pipeline keeps its
            # weights bit for bit (casting there and back would round them).
            pipeline = copy.copy(source)
            pipeline.transformer = copy.deepcopy(source.transformer).to(torch_dtype(dtype))
    else:
        source_path = Path(source)
        if not source_path.exists():
            raise ModelFolderError(f"source folder {source_path} does not exist")
        if not (source_path / "model_index.json").is_file():
            raise ModelFolderError(f"{source_path} is not a saved pipeline folder (no model_index.json)")
        check_output_dir(Path(output_dir), overwrite, source_path)
        if ema_index:
            ema_file, metadata["ema_decay"] = checkpoint_ema_file(source_path, ema_index)
        # Each component loads in the dtype it is stored in (diffusers would load all of them in one), except the
        # transformer when `dtype` is given.
        try:
            component_dtypes = {
                name: stored_dtype(source_path / name) or torch.float32
                for name in ("transformer", "text_encoder")
                if (source_path / name).is_dir()
            }
        except Exception as error:  # safetensors reports a damaged file with its own exception type
            raise ModelFolderError(
                f"cannot read the weights in {source_path}: {type(error).__name__}: {one_line(error)} (the folder is"
                " incomplete or corrupt)"
            ) from None
        if dtype is not None:
            component_dtypes["transformer"] = torch_dtype(dtype)
        pipeline = load_package_pipeline(source_path, dtype={**component_dtypes, "default": torch.float32})
        if ema_index:
            load_ema_weights(pipeline, ema_file)
        if (source_path / "conversion_metadata.json").is_file():
            try:
                recorded = json.loads((source_path / "conversion_metadata.json").read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ModelFolderError(f"cannot read {source_path / 'conversion_metadata.json'}: {error}") from None
            if not isinstance(recorded, dict):
                raise ModelFolderError(f"{source_path / 'conversion_metadata.json'} must hold a JSON object")
            metadata = {**recorded, **metadata}
    metadata = {
        **metadata,
        **stated_card_fields,
        "exported_with": f"pixelgen-diffusers {_version()}",
        "export_date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # The source folder's name only: its path is this machine's, and the folder is for sharing.
        "exported_from": source_path.resolve().name if source_path is not None else None,
        "storage_dtype": str(pipeline.transformer.dtype).removeprefix("torch."),
    }
    pipeline, extra_folders = _place_text_encoder(pipeline, text_encoder, metadata)
    model_name = Path(output_dir).name  # the folder's name, as users will know the model
    write_model_folder(
        pipeline,
        output_dir,
        overwrite=overwrite,
        max_shard_size=max_shard_size,
        metadata=metadata,
        readme=render_model_card(pipeline, model_name, metadata),
        extra_folders=extra_folders,
        source=source_path,
    )
    if verbose:
        parameters = sum(parameter.numel() for parameter in pipeline.transformer.parameters())
        print(
            f"Exported {type(pipeline).__name__} ({parameters:,} parameters, {metadata['storage_dtype']}) -> "
            f"{output_dir} ({format_size(folder_size(Path(output_dir)))}); every tensor re-read and verified"
        )
    return Path(output_dir)


def checkpoint_ema_file(checkpoint: Path, index: int) -> tuple[Path, float]:
    """EMA `index` of a training checkpoint (`training_state/ema_<index>.safetensors`, float32) and its decay."""
    state_file = checkpoint / "training_state" / "state.json"
    decays = json.loads(state_file.read_text()).get("ema_decays", []) if state_file.is_file() else []
    path = checkpoint / "training_state" / f"ema_{index}.safetensors"
    if not 0 <= index < len(decays) or not path.is_file():
        available = ", ".join(f"{i} (decay {decay})" for i, decay in enumerate(decays)) or "none: not a checkpoint"
        raise ModelFolderError(f"--ema {index}: {checkpoint} has no EMA {index}; EMAs tracked: {available}")
    return path, decays[index]


def load_ema_weights(pipeline: DiffusionPipeline, path: Path) -> None:
    from safetensors.torch import load_file

    missing, unexpected = pipeline.transformer.load_state_dict(load_file(path), strict=False)
    if unexpected or set(missing) - {name for name, _ in pipeline.transformer.named_buffers()}:
        raise ModelFolderError(f"{path}: the EMA weights do not match the checkpoint's transformer")


def _version() -> str:
    return sys.modules["pixelgen_diffusers"].__version__
