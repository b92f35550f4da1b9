"""A full disk while weights are written (safetensors raises its own error type) is a one-line error that names the
file or folder being written, for every writer: convert, export, train (full and LoRA) and the caption cache."""

import errno

import pytest
import safetensors.torch
import torch
from components import (
    tiny_c2i_pipeline,
    tiny_t2i_pipeline,
    upstream_c2i_state_dict,
    upstream_c2i_yaml,
    upstream_lightning_checkpoint,
    write_tiny_image_folder,
)
from safetensors import SafetensorError
from test_faults import TRAIN, assert_one_line, run_cli

from pixelgen_diffusers.training import captions as captions_module
from pixelgen_diffusers.training import trainer as trainer_module
from pixelgen_diffusers.training.captions import CaptionEmbeddingCache


def _disk_full(*args, **kwargs):
    # What safetensors raises when the disk fills up during a write.
    raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space" })')


@pytest.fixture
def full_disk(monkeypatch):
    for module in (safetensors.torch, trainer_module, captions_module):  # diffusers calls safetensors.torch's
        monkeypatch.setattr(module, "save_file", _disk_full)


def _assert_names(code, err, command, path):
    assert_one_line(code, err, command, f"cannot write {path}: No space left on device", status=1)
    assert "free some disk space" in err and "--debug" not in err


def test_export_and_convert_name_the_folder_on_a_full_disk(tmp_path, capsys, full_disk):
    tiny_c2i_pipeline().save_pretrained(tmp_path / "saved", safe_serialization=False)
    code, _, err = run_cli(capsys, "export", tmp_path / "saved", tmp_path / "exported")
    _assert_names(code, err, "export", tmp_path / "exported")

    ema = upstream_c2i_state_dict(seed=1, bottleneck_dim=16)
    torch.save(upstream_lightning_checkpoint(ema, ema), tmp_path / "a.ckpt")
    config = upstream_c2i_yaml(tmp_path / "a.yaml", bottleneck_dim=16)
    code, _, err = run_cli(capsys, "convert", tmp_path / "a.ckpt", tmp_path / "converted", "--config", config)
    _assert_names(code, err, "convert", tmp_path / "converted")
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


@pytest.mark.parametrize("lora", [False, True])
def test_train_names_the_checkpoint_on_a_full_disk(tmp_path, capsys, full_disk, lora):
    data, out = tmp_path / "data", tmp_path / "run"
    arguments = ["train", "--data-dir", data, "--output-dir", out, "--max-steps", "2", "--checkpoint-every", "2"]
    arguments += ["--batch-size", "2", "--num-workers", "0", "--sample-every", "100", "--num-inference-steps", "2"]
    if lora:  # a LoRA of the tiny 10-class model: only the adapter is saved
        write_tiny_image_folder(data, num_classes=10, per_class=1, size=32)
        tiny_c2i_pipeline().save_pretrained(tmp_path / "base", safe_serialization=False)
        arguments += ["--pretrained", tmp_path / "base", "--lora-rank", "2"]
    else:
        write_tiny_image_folder(data, num_classes=2, per_class=2, size=36)
        arguments += TRAIN
    code, _, err = run_cli(capsys, *arguments)
    _assert_names(code, err, "train", out / "checkpoint-2")


def test_the_caption_cache_names_the_file_on_a_full_disk(tmp_path, full_disk):
    cache = CaptionEmbeddingCache(tmp_path, tiny_t2i_pipeline())
    with pytest.raises(OSError) as error:
        cache.encode(["a red square"])
    assert error.value.errno == errno.ENOSPC and str(cache.path("a red square")) in str(error.value)
