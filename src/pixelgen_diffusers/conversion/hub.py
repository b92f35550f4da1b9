# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Loading PixelGen pipelines from local folders and Hub ids, including a model folder inside a Hub repo.

diffusers' `from_pretrained` takes a repo id or a local folder, but model repos such as
`BiliSakura/PixelGen-diffusers` keep one model per subfolder. `load_pipeline("owner/repo/subfolder")` downloads only
that subfolder (`snapshot_download(..., allow_patterns=["subfolder/*"])`) and loads it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..utils import one_line
from .model_folder import ModelFolderError, pipeline_class_name, read_model_index


if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download")
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")
_REPO_PART = re.compile(r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?")


def check_repo_id(repo_id: str, option: str = "repo id") -> str:
    """`owner/name` with Hub-valid parts (letters, digits, `-`, `_`, `.`; no `--` or `..`), else a ModelFolderError."""
    text = repo_id if isinstance(repo_id, str) else ""
    parts = text.split("/")
    valid = len(parts) == 2 and all(_REPO_PART.fullmatch(part) for part in parts)
    if not valid or "--" in text or ".." in text:
        raise ModelFolderError(
            f"{option} must be owner/name (letters, digits, '-', '_', '.'), got {repo_id!r}; e.g. my-user/pixelgen-xl"
        )
    return text


def package_pipeline_class(class_name: str) -> type | None:
    """The installed pipeline class of that name (one of the package's public names), or None if it is not ours."""
    package = importlib.import_module(__name__.partition(".")[0])
    if not class_name.endswith("Pipeline") or class_name not in package.__all__:
        return None
    try:
        return getattr(package, class_name)
    except ImportError:
        return None


def looks_like_a_local_path(id_or_path: str | Path) -> bool:
    """Absolute, home-relative (`~`) or explicitly relative (`./`, `../`) paths name folders, never Hub repos."""
    text = str(id_or_path)
    return isinstance(id_or_path, Path) or Path(text).is_absolute() or text.startswith(("~", "./", "../", ".\\"))


def resolve_model_folder(id_or_path: str | Path, **hub_kwargs) -> Path:
    """A local folder as is; `owner/repo/subfolder` or `owner/repo` downloaded with huggingface_hub."""
    if not isinstance(id_or_path, (str, Path)) or not str(id_or_path).strip():
        raise ModelFolderError(
            f"the model must be a folder, owner/repo or owner/repo/subfolder, got {type(id_or_path).__name__}:"
            f" {id_or_path!r}"
        )
    path = Path(id_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelFolderError(f"{id_or_path} is a file, not a model folder")
        return path
    if looks_like_a_local_path(id_or_path):
        raise ModelFolderError(f"model folder {id_or_path} does not exist")
    parts = str(id_or_path).strip("/").split("/")
    if len(parts) < 2 or not all(_HUB_NAME.fullmatch(part) for part in parts):
        raise ModelFolderError(
            f"{id_or_path} is neither a local folder nor a Hub id (owner/repo or owner/repo/subfolder)"
        )
    import huggingface_hub

    repo_id, subfolder = "/".join(parts[:2]), "/".join(parts[2:])
    # Only what is asked for (`allow_patterns`, default everything), inside the subfolder when there is one.
    patterns = hub_kwargs.pop("allow_patterns", None)
    if subfolder:
        patterns = [f"{subfolder}/{pattern}" for pattern in patterns or ["*"]]
    download_kwargs = {"repo_id": repo_id, **hub_kwargs}
    if patterns is not None:
        download_kwargs["allow_patterns"] = patterns
    try:
        snapshot = Path(huggingface_hub.snapshot_download(**download_kwargs))
    except Exception as error:  # network, authentication, missing repo or revision: one message for all
        raise ModelFolderError(
            f"{id_or_path} is not a local folder, and downloading {repo_id} failed: {one_line(error)}"
        ) from None
    folder = snapshot / subfolder if subfolder else snapshot
    if not (folder / "model_index.json").is_file():
        where = f"subfolder {subfolder}" if subfolder else "its root"
        raise ModelFolderError(f"{id_or_path}: the downloaded repo has no model_index.json in {where}")
    return folder


def _differing_code_files(folder: Path, model_index: dict, pipeline_class: type) -> list[str]:
    """The code files of a self-contained folder that are not byte-identical to the installed package's: the
    pipeline's and components' modules and the sibling modules each imports relatively (missing ones count)."""
    from ..pipelines.pipeline_utils_pixelgen import shipped_code_files

    package = importlib.import_module("pixelgen_diffusers")
    stem = model_index["_class_name"][0]
    pairs = []

    def add(shipped: Path, ours: type | None) -> None:
        if ours is None:
            pairs.append((shipped, shipped.with_suffix("")))  # no such class installed: differs
            return
        code_file, *siblings = shipped_code_files(inspect.getsourcefile(ours))
        pairs.append((shipped, code_file))
        pairs.extend((shipped.parent / sibling.name, sibling) for sibling in siblings)

    add(folder / f"{stem}.py", pipeline_class)
    for name, entry in model_index.items():
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str):
            shipped = folder / name / f"{entry[0]}.py"
            if shipped.is_file():
                add(shipped, getattr(package, entry[1]) if entry[1] in package.__all__ else None)
    return [
        shipped.relative_to(folder).as_posix()
        for shipped, installed in pairs
        if not (shipped.is_file() and installed.is_file() and shipped.read_bytes() == installed.read_bytes())
    ]


def load_package_pipeline(folder: str | Path, **kwargs) -> DiffusionPipeline:
    """Loads a folder holding one of our pipelines with the installed classes, whatever its `model_index.json`
    entries say (package modules from `save_pretrained`, copied modules of a self-contained folder, or modules that
    were loaded as remote code)."""
    folder = Path(folder)
    class_name = pipeline_class_name(read_model_index(folder))
    pipeline_class = package_pipeline_class(class_name)
    if pipeline_class is None:
        raise ModelFolderError(f"{folder} holds a {class_name}, which is not a pixelgen-diffusers pipeline")
    load = functools.partial(pipeline_class.from_pretrained, folder, **kwargs)
    return checked_load(folder, load, check_weights="device_map" not in kwargs)


def load_pipeline(id_or_path: str | Path, *, trust_remote_code: bool = False, **kwargs) -> DiffusionPipeline:
    """Loads a PixelGen pipeline from a local folder, a Hub repo (`owner/repo`) or a Hub subfolder
    (`owner/repo/subfolder`, downloading only that subfolder).

    Folders whose code is this package's (saved pipelines, and self-contained folders shipping the installed code)
    load with the installed classes. A self-contained folder with other code runs that code, so, as in diffusers, it
    loads only with `trust_remote_code=True` (as `DiffusionPipeline.from_pretrained(folder, custom_pipeline=...,
    trust_remote_code=True)` would).

    Args:
        id_or_path: folder, `owner/repo` or `owner/repo/subfolder`.
        trust_remote_code: run the code a folder ships when it differs from the installed package's.
        kwargs: `revision`, `cache_dir`, `token`, `local_files_only`, `force_download` go to the download; the rest
            (e.g. `torch_dtype`) to `from_pretrained`.
    """
    hub_kwargs = {key: kwargs.pop(key) for key in HUB_KWARGS if key in kwargs}
    folder = resolve_model_folder(id_or_path, **hub_kwargs)
    load = functools.partial(_load_folder, id_or_path, folder, trust_remote_code, **kwargs)
    return checked_load(id_or_path, load, check_weights="device_map" not in kwargs)


def checked_load(name, load, check_weights: bool = True) -> DiffusionPipeline:
    """Runs `load()`; a config or weights file that does not load, or weights that leave a tensor unset (diffusers
    then keeps it on the `meta` device, which fails much later), become one ModelFolderError naming the folder.
    `check_weights=False` skips the second check (a `device_map` may legitimately leave offloaded tensors on meta)."""
    try:
        pipeline = load()
    except (ModelFolderError, MemoryError):
        raise
    except Exception as error:
        raise ModelFolderError(
            f"cannot load {name}: {type(error).__name__}: {one_line(error)} (its configs or weights are invalid,"
            " incomplete or corrupt; re-download, re-convert or re-export it)"
        ) from error
    import torch

    for component_name, component in pipeline.components.items() if check_weights else ():
        if isinstance(component, torch.nn.Module):
            unset = [key for key, tensor in component.state_dict().items() if tensor.device.type == "meta"]
            if unset:
                shown = ", ".join(unset[:3]) + (", ..." if len(unset) > 3 else "")
                raise ModelFolderError(
                    f"cannot load {name}: its {component_name} weights lack {len(unset)} tensor(s) ({shown}); the"
                    " weights file is incomplete: re-download or re-convert it"
                )
    return pipeline


def _load_folder(id_or_path, folder: Path, trust_remote_code: bool, **kwargs) -> DiffusionPipeline:
    from diffusers import DiffusionPipeline

    model_index = read_model_index(folder)
    class_entry = model_index.get("_class_name")
    pipeline_class = package_pipeline_class(pipeline_class_name(model_index))
    code_file = folder / f"{class_entry[0]}.py" if isinstance(class_entry, list) else None
    self_contained = code_file is not None and code_file.is_file()

    if pipeline_class is not None and not self_contained:
        return pipeline_class.from_pretrained(folder, **kwargs)
    if self_contained:
        differing = _differing_code_files(folder, model_index, pipeline_class) if pipeline_class else [code_file.name]
        if not differing:
            return pipeline_class.from_pretrained(folder, **kwargs)
        if not trust_remote_code:
            raise ModelFolderError(
                f"{id_or_path} ships its own code, which differs from the installed package ({', '.join(differing)});"
                " to run it, pass --trust-remote-code (trust_remote_code=True in Python)"
            )
        return DiffusionPipeline.from_pretrained(
            folder, custom_pipeline=str(code_file), trust_remote_code=True, **kwargs
        )
    return DiffusionPipeline.from_pretrained(folder, **kwargs)
