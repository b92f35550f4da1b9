# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Self-contained model folders: a PixelGen pipeline plus copies of its code, loadable with plain diffusers.

Our pipelines' `save_pretrained` ships their code already (see their `save_config`). `write_model_folder` also makes
folders self-contained for any pipeline (the pipeline module as `pipeline.py`, each component module inside its own
folder, `transformer/transformer_jit.py`, with `model_index.json` pointing at them: `["transformer_jit", ...]`), so
`DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder / "pipeline.py", trust_remote_code=True)` works
anywhere; it adds shipped text encoders, metadata and the model card, verifies every tensor and renames the folder
into place. Both `pixelgen convert` and `pixelgen export` write through it. torch and diffusers are imported where
they are used, so that `pixelgen export --help` is instant.
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
    apply_umask,
    check_shard_size,
    is_text_to_image,
    naming_write_errors,
    one_line,
    recover_directory,
    replace_directory,
    torch_dtype,
)
from .model_folder import ModelFolderError


if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline


# Modules that hold the code of a component we ship: the package's own, or a copy loaded as remote code.
CODE_PACKAGES = ("pixelgen_diffusers.", "diffusers_modules.")
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


# ----------------------------------------------------------------------------------------------------- the writer
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
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite, source)
    created = [parent for parent in [output_dir.parent, *output_dir.parent.parents] if not parent.exists()]
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        with naming_write_errors(output_dir):  # a full disk names the folder being written
            pipeline.save_pretrained(temporary, safe_serialization=True, max_shard_size=max_shard_size)
        for name, (folder, _) in (extra_folders or {}).items():
            _copy_transformers_folder(Path(folder), temporary / name, tokenizer=name.startswith("tokenizer"))
        entries = {name: entry for name, (_, entry) in (extra_folders or {}).items()}
        make_self_contained(temporary, pipeline, extra_entries=entries)
        drop_local_paths(temporary)
        drop_tokenizer_call_settings(temporary, pipeline)
        if metadata is not None:
            (temporary / "conversion_metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
        if readme is not None:
            (temporary / "README.md").write_text(readme)
        verify_folder(temporary, pipeline)
        apply_umask(temporary)
        _commit(temporary, output_dir, overwrite)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        for parent in created:  # innermost first; only folders this call created, and only if still empty
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        raise
    return output_dir


def make_self_contained(folder: Path, pipeline: DiffusionPipeline, extra_entries: dict | None = None) -> None:
    """Copies the pipeline's and components' code into `folder` and points `model_index.json` at the copies."""
    index_path = folder / "model_index.json"
    model_index = json.loads(index_path.read_text())

    shipped = {"pipeline": (type(pipeline), folder / "pipeline.py")}
    for name, component in pipeline.components.items():
        module = type(component).__module__ if component is not None else ""
        if module.startswith(CODE_PACKAGES):
            shipped[name] = (type(component), folder / name / f"{module.rpartition('.')[2]}.py")
    stems = [target.stem for _, target in shipped.values()]
    if len(set(stems)) != len(stems):
        # Remote modules are imported into one flat namespace (diffusers_modules.local.<stem>).
        raise ModelFolderError(f"module file names must be unique across the folder, got {stems}")

    for name, (cls, target) in shipped.items():
        code_file = Path(inspect.getsourcefile(cls))
        _check_standalone(code_file)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(code_file, target)
        if name == "pipeline":
            model_index["_class_name"] = [target.stem, cls.__name__]
        else:
            model_index[name] = [target.stem, cls.__name__]

    model_index.update(extra_entries or {})
    index_path.write_text(json.dumps(model_index, indent=2, sort_keys=True) + "\n")


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


def is_local_path(value) -> bool:
    """An absolute path (POSIX, Windows drive or UNC), as opposed to a Hub id or a relative name."""
    if not isinstance(value, str) or not value:
        return False
    return os.path.isabs(value) or value.startswith(("/", "\\")) or (len(value) > 2 and value[1:3] in (":\\", ":/"))


def refresh_code(folder: str | Path) -> list[Path]:
    """Replaces the code a self-contained model folder ships (`pipeline.py` and each component's module, as its
    `model_index.json` names them) with this package's current modules; configs, weights and the tokenizer are not
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
        source = Path(inspect.getsourcefile(cls))
        _check_standalone(source)
        code = source.read_bytes()
        if target.read_bytes() == code:
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
    """A shipped module may import only installed libraries: not this package, not its siblings."""
    tree = ast.parse(code_file.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["." * node.level + (node.module or "")]
        for name in names:
            if name.startswith(".") or name.split(".")[0] == "pixelgen_diffusers":
                raise ModelFolderError(
                    f"{code_file.name} imports {name}; a module shipped in a model folder must be self-contained"
                )


def _copy_transformers_folder(source: Path, target: Path, tokenizer: bool) -> None:
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


# ------------------------------------------------------------------------------------------------------ model card
CITATION = """@article{ma2026pixelgen,
  title={PixelGen: Pixel Diffusion Beats Latent Diffusion with Perceptual Loss},
  author={Zehong Ma and Ruihan Xu and Shiliang Zhang},
  year={2026},
  eprint={2602.02493},
  archivePrefix={arXiv},
  primaryClass={cs.CV},
  url={https://arxiv.org/abs/2602.02493},
}"""


def render_model_card(pipeline: DiffusionPipeline, model_name: str, metadata: dict | None = None) -> str:
    """README.md with diffusers front matter, both ways to load the folder, the stored defaults and the citation.
    `model_name` is the folder's name (the title, and the folder in the examples); the architecture's name from the
    conversion metadata, when it differs, is given beside it."""
    text_to_image = is_text_to_image(pipeline)
    pipeline_class = type(pipeline).__name__
    transformer = pipeline.transformer.config
    scheduler = pipeline.scheduler.config
    config = pipeline.config
    folder = model_name
    if text_to_image:
        tags = ["pixelgen", "text-to-image", "pixel-space", "flow-matching", "jit"]
        call = 'pipe(prompt="a photo of a corgi wearing sunglasses", generator=torch.Generator().manual_seed(0))'
        cli = f'pixelgen generate --model {folder} --prompt "a photo of a corgi wearing sunglasses" --num-images 4'
        pipeline_tag = "text-to-image"
        text_encoder_id = config.get("text_encoder_id")
        included = (metadata or {}).get("text_encoder_included", getattr(pipeline, "text_encoder", None) is not None)
        if included:
            named = f" (`{text_encoder_id}`)" if text_encoder_id else ""
            text_note = f"The text encoder{named} and its tokenizer are included (`text_encoder/`, `tokenizer/`)."
        elif text_encoder_id:
            text_note = (
                f"The text encoder is not included: the pipeline loads `{text_encoder_id}` (its `text_encoder_id`)"
                " on the first prompt, or takes `text_encoder=` / `tokenizer=` / `prompt_embeds=`."
            )
        else:
            text_note = (
                "The text encoder is not included and the folder records none (`text_encoder_id` is null): pass"
                " `text_encoder=` and `tokenizer=`, or `prompt_embeds=`."
            )
    else:
        tags = ["pixelgen", "class-conditional", "pixel-space", "flow-matching", "jit"]
        id2label = {int(key): value for key, value in (getattr(config, "id2label", None) or {}).items()}
        example = id2label.get(207, "").split(",")[0].strip() or id2label.get(0, "0").split(",")[0].strip()
        call = f'pipe(class_labels="{example}", generator=torch.Generator().manual_seed(0))'
        cli = f'pixelgen generate --model {folder} --class "{example}" --num-images 4'
        pipeline_tag = "unconditional-image-generation"
        text_note = f"Class names: `pipe.id2label` ({len(id2label)} classes); `class_labels` takes names or ids."

    source = (metadata or {}).get("source") or {}
    architecture_name = (metadata or {}).get("model_name")
    described = f" Architecture: {architecture_name}." if architecture_name and architecture_name != model_name else ""
    origin = (
        f"Converted from `{source['file_name']}` (sha256 `{source.get('sha256', '?')[:16]}…`, "
        f"{source.get('weights', '?')} weights) with pixelgen-diffusers {metadata.get('converter_version', '?')}."
        if source.get("file_name")
        else "Exported with pixelgen-diffusers."
    ) + described
    sampling = {
        "sampling_method": scheduler.sampling_method,
        "num_inference_steps": getattr(config, "num_inference_steps", None),
        "guidance_scale": getattr(config, "guidance_scale", None),
        "guidance_interval_min": getattr(config, "guidance_interval_min", None),
        "guidance_interval_max": getattr(config, "guidance_interval_max", None),
        "timeshift": scheduler.timeshift,
        "solver_order": scheduler.solver_order,
        "noise_scale": getattr(config, "noise_scale", None),
    }
    settings_source = (metadata or {}).get("sampling_defaults_source", "the pipeline config")
    architecture = {key: value for key, value in transformer.items() if not key.startswith("_")}
    front_matter = "\n".join(
        ["---", "library_name: diffusers", "license: other", f"pipeline_tag: {pipeline_tag}", "tags:"]
        + [f"- {tag}" for tag in tags]
        + ["---"]
    )
    rows = "\n".join(f"| `{key}` | {value} |" for key, value in sampling.items())
    architecture_rows = "\n".join(f"| `{key}` | {value} |" for key, value in architecture.items())
    return f"""{front_matter}

# {model_name}

PixelGen ([arXiv 2602.02493](https://arxiv.org/abs/2602.02493), upstream code: Zehong-Ma/PixelGen) generates images
directly in pixel space with a JiT transformer that predicts the clean image. {origin}

This folder is self-contained: `pipeline.py`, `transformer/{_module_file(pipeline.transformer)}` and
`scheduler/{_module_file(pipeline.scheduler)}` hold the code, so it loads with nothing but diffusers. {text_note}

## Usage

With plain diffusers (the folder's own code runs, hence `trust_remote_code=True`):

```python
import torch
from diffusers import DiffusionPipeline

folder = "path/to/{folder}"  # a local copy of this folder
pipe = DiffusionPipeline.from_pretrained(folder, custom_pipeline=f"{{folder}}/pipeline.py", trust_remote_code=True)
image = {call}.images[0]
```

A Hub subfolder can be fetched first with
`huggingface_hub.snapshot_download("owner/repo", allow_patterns=["{folder}/*"])`.

With `pip install pixelgen-diffusers` (the installed code runs; no `trust_remote_code` needed):

```python
from pixelgen_diffusers import {pipeline_class}, load_pipeline

pipe = {pipeline_class}.from_pretrained("path/to/{folder}")  # or load_pipeline("owner/repo/{folder}")
```

```bash
{cli}
```

## Recommended settings

Stored as the pipeline's defaults ({settings_source}); every one can be overridden per call.

| setting | value |
| --- | --- |
{rows}

## Architecture

| field | value |
| --- | --- |
{architecture_rows}

## License

The code in this folder is MIT-licensed (pixelgen-diffusers). The weights come from the upstream PixelGen release;
check its terms before redistributing them.

## Citation

```bibtex
{CITATION}
```
"""


def _module_file(component) -> str:
    return type(component).__module__.rpartition(".")[2] + ".py"


# ------------------------------------------------------------------------------------------------------------ export
def export_pipeline(
    source: str | Path | DiffusionPipeline,
    output_dir: str | Path,
    *,
    dtype: str | None = None,
    max_shard_size: str | int = "10GB",
    overwrite: bool = False,
    verbose: bool = False,
    ema_index: int = 0,
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
