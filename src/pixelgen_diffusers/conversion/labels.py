"""Class-name tables shipped with the package, and `pixelgen labels` to search them (or a model's own)."""

import json
from functools import cache
from importlib import resources


@cache
def imagenet_id2label() -> dict[int, str]:
    """ImageNet-1k class id -> comma-separated English synonyms (the standard lemma lists)."""
    text = resources.files("pixelgen_diffusers").joinpath("data/imagenet_id2label.json").read_text()
    return {int(k): v for k, v in json.loads(text).items()}


def search_labels(id2label: dict[int, str], query: str | None) -> dict[int, str]:
    """The classes with a name containing `query` (case-insensitive), or all of them without one."""
    if not query:
        return dict(sorted(id2label.items()))
    query = query.strip().lower()
    return {class_id: names for class_id, names in sorted(id2label.items()) if query in names.lower()}
