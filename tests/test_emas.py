"""Several EMA decays in one run (JiT keeps two): each tracked in float32, checkpointed, resumed bit for bit; the
saved pipeline holds the first and `pixelgen export --ema INDEX` exports another."""

import json

import pytest
import torch
from components import TINY_TRAIN_MODEL, write_tiny_image_folder
from safetensors.torch import load_file

from pixelgen_diffusers import PixelGenC2IPipeline
from pixelgen_diffusers.training import TrainingConfig, train


def _config(tmp_path, output: str, **overrides) -> TrainingConfig:
    data_dir = tmp_path / "data"
    if not data_dir.exists():
        write_tiny_image_folder(data_dir, num_classes=2, per_class=4, size=36)
    values = dict(
        data_dir=str(data_dir), output_dir=str(tmp_path / output), sample_size=32, model_config=TINY_TRAIN_MODEL,
        batch_size=2, max_steps=4, learning_rate=1e-3, ema_decay=[0.5, 0.9], num_workers=0, log_every=1,
        sample_every=100, checkpoint_every=2, num_inference_steps=2,
    )  # fmt: skip
    return TrainingConfig(**{**values, **overrides})


def test_two_emas_are_float32_checkpointed_and_resume_bit_for_bit(tmp_path):
    straight = train(_config(tmp_path, "straight"))
    train(_config(tmp_path, "halves", max_steps=2))
    resumed = train(_config(tmp_path, "halves", resume="latest"))
    names = ("transformer/diffusion_pytorch_model.safetensors", "training_state/ema_1.safetensors")
    for name in names:
        expected, actual = load_file(straight / name), load_file(resumed / name)
        assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected), name
    first, second = (load_file(straight / name) for name in names)
    assert all(tensor.dtype == torch.float32 for tensor in second.values())
    assert not torch.equal(first["final_layer.proj_out.weight"], second["final_layer.proj_out.weight"])
    state = json.loads((straight / "training_state" / "state.json").read_text())
    assert state["ema_decays"] == [0.5, 0.9]
    with pytest.raises(ValueError, match=r"tracks EMA decays \[0.5, 0.9\], this run \[0.5\]"):
        train(_config(tmp_path, "halves", ema_decay=0.5, max_steps=6, resume="latest"))


def test_export_ema_index_picks_another_ema(tmp_path):
    from pixelgen_diffusers.cli import main

    checkpoint = train(_config(tmp_path, "run", max_steps=2))
    assert main(["export", str(checkpoint), str(tmp_path / "ema1"), "--ema", "1"]) == 0
    exported = PixelGenC2IPipeline.from_pretrained(tmp_path / "ema1").transformer.state_dict()
    ema_1 = load_file(checkpoint / "training_state" / "ema_1.safetensors")
    assert all(torch.equal(exported[name], tensor) for name, tensor in ema_1.items())
    metadata = json.loads((tmp_path / "ema1" / "conversion_metadata.json").read_text())
    assert metadata["ema_decay"] == 0.9
    assert main(["export", str(checkpoint), str(tmp_path / "ema2"), "--ema", "2"]) == 2
    assert not (tmp_path / "ema2").exists()


def test_ema_decay_values_are_checked(tmp_path):
    for bad in ([], [0.9, 1.0], float("nan")):
        with pytest.raises(ValueError, match="ema_decay"):
            _config(tmp_path, "run", ema_decay=bad)
