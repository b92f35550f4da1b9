# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""What every conversion module shares about model folders: their error type and reading `model_index.json`."""

import json
from pathlib import Path

from ..utils import one_line


class ModelFolderError(ValueError):
    """A problem with the user's input or output folder; the CLI prints it as one line."""


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
