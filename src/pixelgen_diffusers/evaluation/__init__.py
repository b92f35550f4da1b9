# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Sample quality measured as the paper measures it: OpenAI's ADM evaluation suite (FID, sFID, Inception Score,
precision/recall) on the 2015-12-05 TensorFlow Inception graph, in torch. See docs/evaluation.md.

Names are imported on first use, so that `pixelgen evaluate --help` (which imports `cli/evaluate.py`) needs no torch.
"""

import importlib


_EXPORTS = {
    "evaluator": ("METRICS", "evaluate", "load_feature_file", "save_features"),
    "features": ("ImageSet", "compute_features", "extract_features", "open_image_set"),
    "inception": ("InceptionV3", "tf1_resize_bilinear"),
    "metrics": ("feature_statistics", "frechet_distance", "inception_score", "precision_recall"),
    "reference": ("Reference", "load_reference", "save_reference"),
    "weights": ("KNOWN_WEIGHTS", "cache_dir", "download_inception_weights", "load_inception", "resolve_weights"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
