"""`pixelgen convert --to upstream`: model folders back to upstream Lightning checkpoints + YAML, and the round trip
upstream -> folder -> upstream -> folder at zero difference."""

import json

import pytest
import torch
import yaml
from components import (
    tiny_c2i_pipeline,
    upstream_c2i_state_dict,
    upstream_c2i_yaml,
    upstream_lightning_checkpoint,
    upstream_t2i_state_dict,
    upstream_t2i_yaml,
)
from peft import LoraConfig
from test_cli import assert_one_line_error, run_cli

from pixelgen_diffusers import convert_checkpoint, load_pipeline
from pixelgen_diffusers.conversion.model_folder import ConversionError, read_safetensors_folder
from pixelgen_diffusers.conversion.to_upstream import convert_to_upstream


CONFIGS = ("model_index.json", "scheduler/scheduler_config.json", "transformer/config.json")


def configs(folder):
    """The folder's configs without what records where and when it was written."""
    loaded = {}
    for name in CONFIGS:
        config = json.loads((folder / name).read_text())
        loaded[name] = {key: value for key, value in config.items() if key not in ("_name_or_path",)}
    return loaded


def assert_identical_tensors(first: dict, second: dict):
    assert sorted(first) == sorted(second)
    for key in first:
        assert first[key].dtype == second[key].dtype and torch.equal(first[key], second[key]), key


def samples(folder, condition):
    pipe = load_pipeline(folder)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    return pipe(**condition, num_inference_steps=2, generator=generator, output_type="pt").images


@pytest.mark.parametrize("kind", ["c2i", "t2i"])
def test_upstream_folder_upstream_folder_round_trip_is_exact(tmp_path, kind):
    if kind == "c2i":
        ema, online = upstream_c2i_state_dict(seed=0), upstream_c2i_state_dict(seed=1)
        config = upstream_c2i_yaml(tmp_path / "upstream.yaml")
        condition = {"class_labels": [1, 3]}
    else:
        ema, online = upstream_t2i_state_dict(seed=0), upstream_t2i_state_dict(seed=1)
        config = upstream_t2i_yaml(tmp_path / "upstream.yaml", num_steps=3)
        shape = (1, ema["y_pos_embedding"].shape[1], ema["y_embedder.proj.weight"].shape[1])
        generator = torch.Generator().manual_seed(3)
        condition = {
            "prompt_embeds": torch.randn(shape, generator=generator),
            "negative_prompt_embeds": torch.randn(shape, generator=generator),
        }
    torch.save(upstream_lightning_checkpoint(ema, online), tmp_path / "upstream.ckpt")
    labels = None
    first = convert_checkpoint(tmp_path / "upstream.ckpt", tmp_path / "first", config=config)

    checkpoint_file, config_file = convert_to_upstream(first, tmp_path / "back.ckpt")
    assert config_file == tmp_path / "back.yaml"
    checkpoint = torch.load(checkpoint_file, weights_only=True)
    written = checkpoint["state_dict"]
    assert_identical_tensors({k.removeprefix("ema_denoiser."): v for k, v in written.items() if k[0] == "e"}, ema)
    assert_identical_tensors({k.removeprefix("denoiser."): v for k, v in written.items() if k[0] == "d"}, ema)
    upstream_yaml = yaml.safe_load(config_file.read_text())
    original_yaml = yaml.safe_load(config.read_text())
    assert upstream_yaml["model"]["denoiser"]["class_path"] == original_yaml["model"]["denoiser"]["class_path"]
    assert (
        upstream_yaml["model"]["diffusion_sampler"]["class_path"]
        == (original_yaml["model"]["diffusion_sampler"]["class_path"])
    )
    if kind == "c2i":
        labels = tmp_path / "back.labels.json"  # the tiny model's classes are not ImageNet's
        assert (
            json.loads(labels.read_text())["3"]
            == json.loads((first / "model_index.json").read_text())["id2label"]["3"]
        )

    second = convert_checkpoint(checkpoint_file, tmp_path / "second", config=config_file, labels=labels)
    assert_identical_tensors(
        read_safetensors_folder(first / "transformer"), read_safetensors_folder(second / "transformer")
    )
    assert configs(first) == configs(second)
    assert torch.equal(samples(first, condition), samples(second, condition))


def test_a_lora_fused_pipeline_exports_and_an_unfused_one_is_refused(tmp_path, capsys):
    pipe = tiny_c2i_pipeline()
    pipe.transformer.add_adapter(
        LoraConfig(r=2, lora_alpha=2, target_modules=["attn.to_qkv", "ff.proj_in"], init_lora_weights="gaussian")
    )
    with torch.no_grad():
        for name, parameter in pipe.transformer.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.3)
    with pytest.raises(ConversionError, match="no upstream name: .*lora.*fuse them first"):
        convert_to_upstream(pipe, tmp_path / "unfused.ckpt")
    assert not (tmp_path / "unfused.ckpt").exists()

    pipe.fuse_lora()
    pipe.unload_lora_weights()
    fused = {key: tensor.clone() for key, tensor in pipe.transformer.state_dict().items()}
    checkpoint_file, config_file = convert_to_upstream(pipe, tmp_path / "fused.ckpt")
    back = convert_checkpoint(
        checkpoint_file, tmp_path / "back", config=config_file, labels=tmp_path / "fused.labels.json"
    )
    assert_identical_tensors(read_safetensors_folder(back / "transformer"), fused)


def test_cli_convert_to_upstream_and_its_one_line_errors(tmp_path, capsys):
    pipe = tiny_c2i_pipeline()
    pipe.save_pretrained(tmp_path / "fine-tuned")  # what training writes
    code, out, err = run_cli(capsys, "convert", "--to", "upstream", tmp_path / "fine-tuned", tmp_path / "out.ckpt")
    assert code == 0, err
    assert "ema_denoiser.* / denoiser.*" in out and (tmp_path / "out.yaml").is_file()
    for arguments, fragment in (
        ([tmp_path / "fine-tuned", tmp_path / "out.ckpt"], "exists; pass --overwrite"),
        ([tmp_path / "fine-tuned", tmp_path / "out.pth"], "must be a .ckpt file"),
        ([tmp_path / "missing", tmp_path / "new.ckpt"], "does not exist"),
        ([tmp_path / "fine-tuned", tmp_path / "new.ckpt", "--config", "x.yaml"], "--config apply to conversions"),
    ):
        code, _, err = run_cli(capsys, "convert", "--to", "upstream", *arguments)
        assert_one_line_error(code, err, "convert", fragment)
    assert not (tmp_path / "new.ckpt").exists()
