"""Class-name tables shipped with the package."""

import json
from functools import cache
from importlib import resources


@cache
def imagenet_id2label() -> dict[int, str]:
    """ImageNet-1k class id -> comma-separated English synonyms (the standard lemma lists)."""
    text = resources.files("pixelgen_diffusers").joinpath("data/imagenet_id2label.json").read_text()
    return {int(k): v for k, v in json.loads(text).items()}
