# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen labels`: search class names (ImageNet's, or a model's) for --class."""

import argparse
from pathlib import Path

from ..conversion.labels import imagenet_id2label, search_labels


def model_id2label(model: str) -> dict[int, str]:
    """A class-to-image model's class names, read from its `model_index.json` (from the Hub, only that file)."""
    from ..conversion.hub import read_model_index, resolve_model_folder

    if Path(model).expanduser().exists():
        model_index = read_model_index(resolve_model_folder(model))
    else:
        model_index = read_model_index(resolve_model_folder(model, allow_patterns=["model_index.json"]))
    if "id2label" not in model_index:
        raise ValueError(f"{model} has no class names: it is not a class-to-image model (text-to-image takes prompts)")
    id2label = model_index["id2label"]
    malformed = f'{model}: model_index.json\'s id2label must map class ids to names, e.g. {{"0": "tench"}}'
    if not isinstance(id2label, dict):
        raise ValueError(f"{malformed}; it holds a JSON {type(id2label).__name__}")
    labels = {}
    for key, name in id2label.items():
        if not (isinstance(key, str) and key.strip().lstrip("-").isdigit()) or not isinstance(name, str):
            raise ValueError(f"{malformed}; it has {key!r}: {name!r}")
        labels[int(key)] = name
    return labels


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "labels",
        help="search class names (ImageNet's, or a model's) for --class",
        description="List the classes whose names contain QUERY (case-insensitive), with their ids. A name shared by "
        "several classes (ImageNet's 'crane': 134 the bird, 517 the machine) must be given as an id.",
    )
    parser.add_argument("query", nargs="?", help="part of a class name (default: list every class)")
    parser.add_argument("--model", help="a class-to-image model folder or Hub id (default: the ImageNet-1k names)")
    parser.set_defaults(func=run, standard_library_only=True)  # answers at once: no torch, no diffusers


def run(args: argparse.Namespace) -> int:
    id2label = imagenet_id2label() if args.model is None else model_id2label(args.model)
    matches = search_labels(id2label, args.query)
    if not matches:
        source = "ImageNet-1k" if args.model is None else Path(args.model).name
        raise ValueError(f"no {source} class name contains {args.query!r}")
    for class_id, names in matches.items():
        print(f"{class_id:>5}  {names}")
    return 0
