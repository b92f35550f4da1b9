# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The metrics of OpenAI's ADM evaluation suite (openai/guided-diffusion, `evaluations/evaluator.py`), on features.

- FID / sFID: the Fréchet distance between Gaussians fitted to `pool_3` / `spatial` features (`np.mean`, `np.cov`),
  with `scipy.linalg.sqrtm` in float64; when the square root is not finite, ADM's retry adds 1e-6 to both diagonals.
- Inception Score: `exp(E[KL(p(y|x) || p(y))])` from the softmax of the bias-free logits, averaged over splits of
  5000 samples (the last split may be shorter, as in ADM).
- Precision / recall (Kynkäänniemi et al. 2019) with k = 3 on `pool_3`: a sample is precise if it lies inside the
  k-nearest-neighbour ball of some reference feature, a reference feature is recalled if it lies inside the ball of
  some sample. Squared distances are computed as ADM computes them, in float16 (each operation rounded to float16,
  accumulated in float32, as TensorFlow does on a GPU), in blocks of 10,000 x 10,000, falling back to float32 for a
  block where float16 overflows.
"""

import warnings

import numpy as np


FID_EPSILON = 1e-6
INCEPTION_SCORE_SPLIT = 5000
NEIGHBOURHOOD_SIZE = 3
DISTANCE_BLOCK = 10_000


def check_features(features, name: str, dimension: int | None = None, minimum: int = 1) -> np.ndarray:
    """`features` as an (N, D) float array, refusing what would give a meaningless number: another shape, fewer than
    `minimum` rows, NaN or infinite values. The ValueError names `name` (e.g. the file the features came from)."""
    features = np.asarray(features)
    if features.ndim != 2 or (dimension is not None and features.shape[1] != dimension):
        wanted = f"(N, {dimension})" if dimension is not None else "(N, D)"
        raise ValueError(f"{name}: features must be {wanted}, got shape {features.shape}")
    if len(features) < minimum:
        raise ValueError(f"{name}: {len(features)} feature rows, the metric needs at least {minimum}")
    if not np.issubdtype(features.dtype, np.floating) or not np.isfinite(features).all():
        raise ValueError(f"{name}: features contain NaN or infinite values (or are not floating point)")
    return features


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """The mean (D,) and covariance (D, D) of (N, D) features, in float64: ADM's `compute_statistics` (`np.cov` with
    N - 1 in the denominator)."""
    features = check_features(features, "features", minimum=2).astype(np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = FID_EPSILON) -> float:
    """`|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))`, the Fréchet distance of two Gaussians.

    ADM's `FIDStatistics.frechet_distance`: `scipy.linalg.sqrtm` in float64; if the product's square root is not
    finite, `eps` is added to both diagonals and the root taken again (with a warning); an imaginary part larger than
    1e-3 on the diagonal raises ValueError, a smaller one is dropped.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    for name, value in (("mu", mu1), ("sigma", sigma1), ("mu", mu2), ("sigma", sigma2)):
        if not np.isfinite(value).all():
            raise ValueError(f"statistics: {name} contains NaN or infinite values")
    difference = mu1 - mu2
    with warnings.catch_warnings():  # ADM passes disp=False: scipy's singularity warning is not shown
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covariance_mean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covariance_mean).all():
        warnings.warn(f"FID: the covariance product is singular; adding {eps} to the diagonals", stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            covariance_mean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covariance_mean):
        if not np.allclose(np.diagonal(covariance_mean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covariance_mean.imag))} in sqrtm")
        covariance_mean = covariance_mean.real
    return float(difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covariance_mean))


def inception_score(logits, split_size: int = INCEPTION_SCORE_SPLIT) -> float:
    """ADM's Inception Score of (N, C) logits: softmax, then `exp(mean_i KL(p_i || mean_j p_j))` within each split of
    `split_size` consecutive rows, averaged over splits. In float64, with `0 log 0 = 0`."""
    from scipy.special import rel_entr, softmax

    logits = check_features(logits, "logits").astype(np.float64)
    probabilities = softmax(logits, axis=1)
    scores = []
    for start in range(0, len(probabilities), split_size):
        part = probabilities[start : start + split_size]
        divergence = rel_entr(part, part.mean(axis=0, keepdims=True)).sum(axis=1).mean()
        scores.append(np.exp(divergence))
    return float(np.mean(scores))


def _float16_squared_distances(rows, columns):
    """ADM's `_batch_pairwise_distances` on float16 inputs: `max(|u|^2 - 2 u.v + |v|^2, 0)`, every TensorFlow op
    rounded to float16 and reductions accumulated in float32."""

    def half(values):
        return values.half().float()

    rows, columns = half(rows), half(columns)
    row_norms = half(half(rows * rows).sum(dim=1))
    column_norms = half(half(columns * columns).sum(dim=1))
    products = half(half(rows @ columns.T) * 2)
    return half(half(row_norms[:, None] - products) + column_norms[None, :]).clamp_min(0)


def squared_distances(rows, columns):
    """ADM's `DistanceBlock.pairwise_distances`: squared distances in float16, or in float32 if float16 overflows."""
    distances = _float16_squared_distances(rows, columns)
    if distances.isfinite().all():
        return distances
    rows, columns = rows.float(), columns.float()
    distances = (rows * rows).sum(1)[:, None] - 2 * (rows @ columns.T) + (columns * columns).sum(1)[None, :]
    return distances.clamp_min(0)


def manifold_radii(features, k: int = NEIGHBOURHOOD_SIZE, block: int = DISTANCE_BLOCK):
    """(N,) squared distance from each feature to its k-th nearest neighbour within the set (itself included at
    distance ~0, so the (k + 1)-th smallest: ADM's `manifold_radii`)."""
    import torch

    radii = []
    for start in range(0, len(features), block):
        rows = features[start : start + block]
        nearest = None
        for column_start in range(0, len(features), block):
            distances = squared_distances(rows, features[column_start : column_start + block])
            candidates = distances if nearest is None else torch.cat([nearest, distances], dim=1)
            nearest = candidates.topk(min(k + 1, candidates.shape[1]), dim=1, largest=False).values
        radii.append(nearest[:, k])
    return torch.cat(radii)


def precision_recall(
    reference, samples, k: int = NEIGHBOURHOOD_SIZE, device=None, block: int = DISTANCE_BLOCK
) -> tuple[float, float]:
    """Kynkäänniemi et al.'s improved precision and recall of (N, D) `samples` against (M, D) `reference` features
    (pool_3 in ADM, whose reference batch holds 10,000 images), as ADM's `compute_prec_recall` computes them.

    Returns (precision, recall): the fraction of samples inside some reference feature's k-NN ball, and the fraction
    of reference features inside some sample's. Both sets need more than `k` rows. `device`: where the distance
    blocks are computed (default: CPU).
    """
    import torch

    reference = check_features(reference, "reference features", minimum=k + 1)
    samples = check_features(samples, "sample features", reference.shape[1], minimum=k + 1)
    reference = torch.from_numpy(np.ascontiguousarray(reference, np.float32)).to(device or "cpu")
    samples = torch.from_numpy(np.ascontiguousarray(samples, np.float32)).to(reference.device)
    reference_radii = manifold_radii(reference, k, block)
    sample_radii = manifold_radii(samples, k, block)
    samples_inside = torch.zeros(len(samples), dtype=torch.bool, device=reference.device)
    reference_inside = torch.zeros(len(reference), dtype=torch.bool, device=reference.device)
    for start in range(0, len(reference), block):
        for column_start in range(0, len(samples), block):
            # Rows are reference features and columns samples, as in ADM (the float16 rounding is not symmetric).
            columns = samples[column_start : column_start + block]
            distances = squared_distances(reference[start : start + block], columns)
            column_radii = sample_radii[column_start : column_start + block]
            reference_inside[start : start + block] |= (distances <= column_radii[None, :]).any(dim=1)
            row_radii = reference_radii[start : start + block]
            samples_inside[column_start : column_start + block] |= (distances <= row_radii[:, None]).any(dim=0)
    return samples_inside.double().mean().item(), reference_inside.double().mean().item()
