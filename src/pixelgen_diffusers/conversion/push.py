# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Publishing a self-contained model folder to the Hugging Face Hub (`pixelgen push`).

Every check runs before anything is uploaded: the repo id, the token, the license, that the folder is self-contained
(its `model_index.json` names code files that exist and import only libraries) and that it loads (every tensor
present). The folder is then staged (hard links, or copies across file systems) with its model card brought up to
date, and `huggingface_hub` creates the repo if needed and uploads the staged folder in one commit.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..utils import one_line
from .export import _check_standalone
from .hub import check_repo_id, load_package_pipeline
from .model_card import card_data, card_fields, card_license
from .model_folder import ModelFolderError, read_model_index


if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from huggingface_hub import CommitInfo


SAMPLE_GRID_NAME = "samples.png"


def check_subfolder(subfolder: str | None) -> str | None:
    """A relative path of plain names inside the repo (no `..`, no leading `/`), or None for the repo's root."""
    if subfolder is None:
        return None
    parts = subfolder.strip("/").split("/") if isinstance(subfolder, str) else []
    if not parts or not all(re.fullmatch(r"[\w.-]+", part) and part not in (".", "..") for part in parts):
        raise ModelFolderError(
            f"--subfolder must be a relative folder name inside the repo (e.g. PixelGen-XL-16-256), got {subfolder!r}"
        )
    return "/".join(parts)


def check_self_contained(folder: Path) -> list[Path]:
    """The code files a self-contained folder ships (`pipeline.py` and each component's module, as its
    `model_index.json` names them); a missing one, a component of our package loaded by module name, or a shipped
    module that imports anything but libraries is a ModelFolderError naming the file and what to do."""
    folder = Path(folder)
    model_index = read_model_index(folder)
    fix = f"export it first: pixelgen export {folder} OUTPUT_DIR"
    class_entry = model_index.get("_class_name")
    if not isinstance(class_entry, list) or not (folder / f"{class_entry[0]}.py").is_file():
        raise ModelFolderError(f"{folder} is not self-contained (it ships no pipeline code); {fix}")
    code_files = [folder / f"{class_entry[0]}.py"]
    for name, entry in model_index.items():
        if name.startswith("_") or not (isinstance(entry, list) and len(entry) == 2):
            continue
        library = entry[0]
        if library in (None, "diffusers", "transformers"):
            continue
        if library.split(".")[0] == "pixelgen_diffusers":
            raise ModelFolderError(f"{folder} is not self-contained ({name} needs pixelgen_diffusers); {fix}")
        code_file = folder / name / f"{library}.py"
        if not code_file.is_file():
            raise ModelFolderError(f"{folder} is not self-contained ({name}/{library}.py is missing); {fix}")
        code_files.append(code_file)
    for code_file in code_files:
        _check_standalone(code_file)
    return code_files


def read_eval_rows(path: str | Path) -> list[dict]:
    """Scores to show on the card: a JSON list of rows (objects with the same keys, as `pixelgen eval-demo --json`
    writes) or one object. Non-finite numbers are refused (they would render as a score)."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFolderError(f"--eval-json {path}: cannot read it ({one_line(error)})") from None
    rows = [value] if isinstance(value, dict) else value
    if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) and row for row in rows):
        raise ModelFolderError(f"--eval-json {path}: expected a JSON object or a non-empty list of objects")
    for row in rows:
        for key, number in row.items():
            if isinstance(number, float) and not math.isfinite(number):
                raise ModelFolderError(f"--eval-json {path}: {key} is {number}; scores must be finite numbers")
    return rows


def render_scores(rows: list[dict]) -> str:
    """Markdown table of evaluation rows (the keys of the first row as columns)."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(column, "")) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def publishing_card(
    folder: Path,
    pipeline: DiffusionPipeline,
    *,
    license: str | None = None,
    base_model: str | None = None,
    eval_rows: list[dict] | None = None,
    sample_grid: str | None = None,
):
    """The folder's model card (its README.md, or a minimal one) with the Hub metadata, and the sample grid and
    scores as sections. Raises a ModelFolderError when no license can be determined (stated or on the card)."""
    from huggingface_hub import ModelCard

    readme = Path(folder) / "README.md"
    card = ModelCard(readme.read_text()) if readme.is_file() else ModelCard(f"---\n---\n\n# {Path(folder).name}\n")
    metadata_file = Path(folder) / "conversion_metadata.json"
    recorded = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
    base_model = base_model or card.data.base_model or recorded.get("base_model")
    license = license or recorded.get("license")
    card.data = card_data(pipeline, card.data, license=license, base_model=base_model)
    if card_license(card.data) is None:
        raise ModelFolderError(
            f"the license of {folder} cannot be determined (its card says {card.data.license or 'nothing'}); state the"
            " weights' license with --license (e.g. --license mit, as the upstream PixelGen release)"
        )
    text = card.text
    if sample_grid is not None and f"]({sample_grid})" not in text:
        text += f"\n## Samples\n\n![samples generated with the recommended settings]({sample_grid})\n"
    if eval_rows:
        text += f"\n## Measured scores\n\n{render_scores(eval_rows)}\n"
    card.text = text
    return card


def _stage(folder: Path, staging: Path, skip: tuple[str, ...]) -> None:
    """`folder`'s files under `staging`, as hard links (copies where linking fails), except the `skip` files (which
    the caller writes anew: writing through a hard link would change the user's folder)."""
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise ModelFolderError(f"{path} is a symbolic link; a folder to publish must hold plain files")
        if path.is_dir() or path.name.startswith(".") or "__pycache__" in path.parts:
            continue
        if path.relative_to(folder).as_posix() in skip:
            continue
        target = staging / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    subfolder: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    license: str | None = None,
    base_model: str | None = None,
    eval_json: str | Path | None = None,
    sample_grid: str | Path | None = None,
    token: str | None = None,
) -> CommitInfo:
    """Publishes a self-contained model folder to the Hub repo `repo_id` (created if needed) in one commit.

    Args:
        folder: a folder written by `pixelgen convert` / `pixelgen export`.
        repo_id: `owner/name`.
        subfolder: where in the repo the folder goes (e.g. one repo holding several models); default the root. When
            the repo has no root README.md yet, the card is also written there, so that the Hub reads its metadata.
        license: the weights' license (a Hub license id such as `mit`); default the one the folder's card or
            conversion metadata records. Never guessed: without one the push is refused.
        base_model: the Hub id of the model these weights derive from (card metadata).
        eval_json: scores to show on the card (`pixelgen eval-demo --json` output).
        sample_grid: a PNG to show on the card, uploaded as `samples.png`.
        token: a Hugging Face token; default the logged-in one (`hf auth login`) or `HF_TOKEN`.

    Returns:
        The `huggingface_hub.CommitInfo` of the commit.

    Raises:
        ModelFolderError: (before any upload) bad repo id or subfolder, no token, a folder that is not
            self-contained or does not load, no determinable license, an unreadable eval JSON or sample grid.
    """
    import huggingface_hub

    repo_id = check_repo_id(repo_id)
    subfolder = check_subfolder(subfolder)
    card_fields(license, base_model)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist (or is not a folder)")
    check_self_contained(folder)
    eval_rows = read_eval_rows(eval_json) if eval_json is not None else None
    if sample_grid is not None:
        sample_grid = Path(sample_grid).expanduser()
        if not sample_grid.is_file() or sample_grid.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
            raise ModelFolderError(f"--sample-grid {sample_grid} is not a PNG file")
    token = token or huggingface_hub.get_token()
    if not token:
        raise ModelFolderError("no Hugging Face token: run `hf auth login` or set HF_TOKEN (or pass token=)")
    pipeline = load_package_pipeline(folder)  # configs and every tensor load
    grid_name = SAMPLE_GRID_NAME if sample_grid is not None or (folder / SAMPLE_GRID_NAME).is_file() else None
    card = publishing_card(
        folder, pipeline, license=license, base_model=base_model, eval_rows=eval_rows, sample_grid=grid_name
    )
    del pipeline

    api = huggingface_hub.HfApi(token=token)
    # Beside the folder, so that hard links work (same file system); elsewhere if that is not writable.
    staging_parent = folder.parent if os.access(folder.parent, os.W_OK | os.X_OK) else None
    with tempfile.TemporaryDirectory(prefix=".pixelgen-push-", dir=staging_parent) as staging:
        staging = Path(staging)
        root = staging / subfolder if subfolder else staging
        replaced = ("README.md", SAMPLE_GRID_NAME) if sample_grid is not None else ("README.md",)
        _stage(folder, root, skip=replaced)
        if sample_grid is not None:
            shutil.copyfile(sample_grid, root / SAMPLE_GRID_NAME)
        (root / "README.md").write_text(str(card))
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if subfolder and not api.file_exists(repo_url.repo_id, "README.md"):
            card.text = card.text.replace("](samples.png)", f"]({subfolder}/samples.png)")
            (staging / "README.md").write_text(str(card))
        return api.upload_folder(
            repo_id=repo_url.repo_id,
            folder_path=staging,
            commit_message=commit_message or f"Upload {folder.name} with pixelgen push",
            repo_type="model",
        )
