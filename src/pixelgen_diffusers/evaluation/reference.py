# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Reference batches: ADM's files (`VIRTUAL_imagenet256_labeled.npz`: `arr_0` uint8 NHWC images plus the
precomputed `mu`, `sigma` of pool_3 and `mu_s`, `sigma_s` of the spatial features), any npz or folder of images (the
statistics are then computed), and writing such a file.
"""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils import atomic_write
from .features import ImageSet, npz_members, open_image_set
from .inception import POOL_FEATURES, SPATIAL_FEATURES


STATISTICS = {"mu": (POOL_FEATURES,), "sigma": (POOL_FEATURES,) * 2}
SPATIAL_STATISTICS = {"mu_s": (SPATIAL_FEATURES,), "sigma_s": (SPATIAL_FEATURES,) * 2}


@dataclass
class Reference:
    """A reference set: its images (None for a statistics-only file) and the statistics stored with it (a dict with
    `mu`, `sigma` and, if stored, `mu_s`, `sigma_s`; None when they must be computed from the images)."""

    path: Path
    images: ImageSet | None
    statistics: dict[str, np.ndarray] | None

    @property
    def num_images(self) -> int | None:
        return len(self.images) if self.images is not None else None


def _read_statistics(path: Path, members: list[str]) -> dict[str, np.ndarray] | None:
    present = [name for name in (*STATISTICS, *SPATIAL_STATISTICS) if name in members]
    if not present:
        return None
    for group in (STATISTICS, SPATIAL_STATISTICS):
        found = [name for name in group if name in members]
        if found and len(found) != len(group):
            missing = [name for name in group if name not in members]
            raise ValueError(f"{path}: has {', '.join(found)} but not {', '.join(missing)}")
    if "mu" not in members:
        raise ValueError(f"{path}: has mu_s/sigma_s but no mu/sigma (the pool_3 statistics FID needs)")
    statistics = {}
    with np.load(path) as archive:
        for name, shape in (STATISTICS | SPATIAL_STATISTICS).items():
            if name not in members:
                continue
            value = archive[name]
            if value.shape != shape:
                raise ValueError(f"{path}: {name} has shape {value.shape}, expected {shape} (pool_3 / spatial)")
            if not np.issubdtype(value.dtype, np.floating) or not np.isfinite(value).all():
                raise ValueError(f"{path}: {name} contains NaN or infinite values (or is not floating point)")
            statistics[name] = value.astype(np.float64)
    return statistics


def load_reference(path: str | Path) -> Reference:
    """The reference at `path`, checked without computing anything: an npz with `arr_0` images and/or the statistics
    `mu`, `sigma` (optionally `mu_s`, `sigma_s`), or a folder of images / shards. A ValueError names the file and
    what is wrong (neither images nor statistics, half a statistics pair, wrong shapes, NaN)."""
    path = Path(path).expanduser()
    if path.is_file():
        members = npz_members(path)
        statistics = _read_statistics(path, members)
        images = open_image_set(path, "REF") if "arr_0" in members else None
        if images is None and statistics is None:
            raise ValueError(
                f"REF {path}: neither arr_0 images nor mu/sigma statistics "
                f"(it has {', '.join(members) or 'no arrays'})"
            )
        return Reference(path, images, statistics)
    return Reference(path, open_image_set(path, "REF"), None)


def save_reference(path: str | Path, images: ImageSet, features: dict[str, np.ndarray]) -> Path:
    """Writes an ADM-style reference file (atomically): `arr_0` (the images, uint8 NHWC) and the float64 statistics
    `mu`, `sigma` of `pool_3` and `mu_s`, `sigma_s` of the spatial features."""
    from .metrics import feature_statistics

    path = Path(path).expanduser()
    mu, sigma = feature_statistics(features["pool_3"])
    mu_s, sigma_s = feature_statistics(features["spatial"])
    array = np.empty((len(images), *images.size, 3), dtype=np.uint8)
    start = 0
    for batch in images.batches(256):
        array[start : start + len(batch)] = batch
        start += len(batch)
    with atomic_write(path) as file:
        np.savez(file, arr_0=array, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    return path


def is_feature_file(path: Path) -> bool:
    """Whether `path` is a features file written by `--save-features` (pool_3 without images)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return "pool_3.npy" in names and "arr_0.npy" not in names
