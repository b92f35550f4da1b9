# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Sample quality measured as the paper measures it: OpenAI's ADM evaluation suite (FID, sFID, Inception Score,
precision/recall) on the 2015-12-05 TensorFlow Inception graph, in torch. See docs/evaluation.md."""

from .evaluator import METRICS, evaluate, load_feature_file, save_features
from .features import ImageSet, compute_features, extract_features, open_image_set
from .inception import InceptionV3, tf1_resize_bilinear
from .metrics import feature_statistics, frechet_distance, inception_score, precision_recall
from .reference import Reference, load_reference, save_reference
from .weights import KNOWN_WEIGHTS, cache_dir, download_inception_weights, load_inception, resolve_weights


__all__ = [
    "METRICS",
    "ImageSet",
    "InceptionV3",
    "KNOWN_WEIGHTS",
    "Reference",
    "cache_dir",
    "compute_features",
    "download_inception_weights",
    "evaluate",
    "extract_features",
    "feature_statistics",
    "frechet_distance",
    "inception_score",
    "load_feature_file",
    "load_inception",
    "load_reference",
    "open_image_set",
    "precision_recall",
    "resolve_weights",
    "save_features",
    "save_reference",
    "tf1_resize_bilinear",
]
