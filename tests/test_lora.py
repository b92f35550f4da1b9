"""LoRA for both models: training through the trainer (peft), diffusers-format files, the pipelines' diffusers LoRA
interface (load, fuse/unfuse, unload, set_adapters), wrong-model errors, model folders and `pixelgen generate`."""

import json
import re
import warnings

import pytest
import torch
from components import (
    run_python,
    tiny_c2i_pipeline,
    tiny_qwen3,
    tiny_qwen_tokenizer,
    tiny_t2i_pipeline,
    tiny_transformer,
    write_tiny_caption_folder,
    write_tiny_image_folder,
)
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file

from pixelgen_diffusers import PixelGenC2IPipeline
from pixelgen_diffusers.conversion.export import export_pipeline
from pixelgen_diffusers.pipelines.pipeline_pixelgen_t2i import PixelGenT2IPipeline
from pixelgen_diffusers.training import TrainingConfig, train
from pixelgen_diffusers.training.trainer import Trainer


def _sample(pipeline, condition, **kwargs):
    generator = [torch.Generator().manual_seed(seed) for seed in range(len(condition))]
    key = "prompt" if isinstance(pipeline, PixelGenT2IPipeline) else "class_labels"
    return pipeline(**{key: condition}, num_inference_steps=2, generator=generator, output_type="pt", **kwargs).images


def _random_lora(pipeline, seed: int, rank: int = 2, targets=("attn.to_qkv", "attn.to_out", "ff.proj_in")):
    """A peft LoRA with random A and B on `pipeline`'s transformer, as a diffusers-format state dict + metadata."""
    transformer = pipeline.transformer
    torch.manual_seed(seed)
    transformer.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights="gaussian"),
        adapter_name="scratch",
    )
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.3)
    state_dict = get_peft_model_state_dict(transformer, adapter_name="scratch")
    metadata = transformer.peft_config["scratch"].to_dict()
    transformer.delete_adapters("scratch")
    return state_dict, metadata


def _save_random_lora(pipeline, folder, seed: int):
    state_dict, metadata = _random_lora(pipeline, seed)
    type(pipeline).save_lora_weights(
        folder, transformer_lora_layers=state_dict, transformer_lora_adapter_metadata=metadata
    )
    return folder


# ------------------------------------------------------------------------------------------------------ training
def _lora_config(tmp_path, kind: str, output: str, **overrides) -> TrainingConfig:
    base = tmp_path / f"base-{kind}"
    data = tmp_path / f"data-{kind}"
    if not base.exists():
        if kind == "c2i":
            tiny_c2i_pipeline().save_pretrained(base)  # random weights: every layer matters
            write_tiny_image_folder(data, num_classes=10, per_class=1, size=32)
        else:
            tiny_t2i_pipeline(with_text_encoder=False).save_pretrained(base)
            write_tiny_caption_folder(data, per_caption=2)
    values = dict(
        data_dir=str(data), output_dir=str(tmp_path / output), pretrained=str(base), lora_rank=4, batch_size=2,
        max_steps=4, learning_rate=1e-2, num_workers=0, log_every=1, sample_every=100, checkpoint_every=2,
        num_inference_steps=2,
    )  # fmt: skip
    if kind == "t2i":
        values.update(
            text_encoder=tiny_qwen3(), tokenizer=tiny_qwen_tokenizer(), caption_cache_dir=str(tmp_path / "c")
        )
        values.update(gradient_checkpointing=True)  # LoRA gradients flow through checkpointed blocks
    return TrainingConfig(**{**values, **overrides})


@pytest.mark.parametrize("kind", ["c2i", "t2i"])
def test_lora_training_saves_only_the_adapter_and_a_fresh_pipeline_reproduces_it(tmp_path, kind):
    trainer = Trainer(_lora_config(tmp_path, kind, "run"))
    trainable = {
        name for name, parameter in trainer.unwrapped.transformer.named_parameters() if parameter.requires_grad
    }
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    checkpoint = trainer.train()

    assert sorted(path.name for path in checkpoint.iterdir()) == ["pytorch_lora_weights.safetensors", "training_state"]
    lora_file = checkpoint / "pytorch_lora_weights.safetensors"
    with safe_open(lora_file, framework="pt") as file:
        keys, metadata = list(file.keys()), file.metadata()
    assert all(key.startswith("transformer.") and ".lora_" in key for key in keys)
    adapter_config = json.loads(metadata["lora_adapter_metadata"])  # the key and layout diffusers writes
    assert adapter_config["transformer.r"] == 4 and "transformer.target_modules" in adapter_config
    online = load_file(checkpoint / "training_state" / "model.safetensors")
    assert all("lora_" in name for name in online if name.startswith("transformer."))  # no frozen weights

    pipeline_class = PixelGenT2IPipeline if kind == "t2i" else PixelGenC2IPipeline
    base = pipeline_class.from_pretrained(tmp_path / f"base-{kind}")
    base_weights = base.transformer.state_dict()
    trained_state = trainer.unwrapped.transformer.state_dict()
    trained_base = {
        name.replace(".base_layer", ""): value for name, value in trained_state.items() if "lora_" not in name
    }
    assert all(torch.equal(base_weights[name], tensor) for name, tensor in trained_base.items())  # base frozen

    if kind == "t2i":
        base.register_modules(text_encoder=tiny_qwen3(), tokenizer=tiny_qwen_tokenizer())
    condition = ["a red square", "a blue square"] if kind == "t2i" else [0, 3]
    in_memory = trainer.make_pipeline(trainer.ema.model)
    if kind == "t2i":
        in_memory.register_modules(text_encoder=tiny_qwen3(), tokenizer=tiny_qwen_tokenizer())
    before = _sample(base, condition)
    base.load_lora_weights(checkpoint)
    adapted = _sample(base, condition)
    assert torch.equal(adapted, _sample(in_memory, condition))
    assert (adapted - before).abs().max() > 1e-3


def test_lora_resume_continues_bit_for_bit(tmp_path):
    straight = train(_lora_config(tmp_path, "c2i", "straight"))
    train(_lora_config(tmp_path, "c2i", "halves", max_steps=2))
    resumed = train(_lora_config(tmp_path, "c2i", "halves", resume="latest"))
    for name in ("pytorch_lora_weights.safetensors", "training_state/model.safetensors"):
        expected, actual = load_file(straight / name), load_file(resumed / name)
        assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected), name


def test_lora_training_validates_its_settings(tmp_path):
    with pytest.raises(ValueError, match="a LoRA adapts a pretrained model"):
        TrainingConfig(data_dir="x", output_dir="y", lora_rank=4)
    with pytest.raises(ValueError, match="need lora_rank"):
        TrainingConfig(data_dir="x", output_dir="y", lora_alpha=8.0)
    with pytest.raises(ValueError, match=r"'attn.to_qvk', which names no linear layer.*did you mean 'attn.to_qkv'"):
        Trainer(_lora_config(tmp_path, "c2i", "run", lora_target_modules=["attn.to_qvk"]))


# ------------------------------------------------------------------------------------------ pipeline interface
def test_fuse_unfuse_unload_and_set_adapters_round_trips(tmp_path):
    pipeline = tiny_c2i_pipeline()
    first = _save_random_lora(pipeline, tmp_path / "first", seed=1)
    second = _save_random_lora(pipeline, tmp_path / "second", seed=2)
    labels = [0, 3]
    base = _sample(pipeline, labels)

    pipeline.load_lora_weights(first / "pytorch_lora_weights.safetensors", adapter_name="first")  # a file
    only_first = _sample(pipeline, labels)
    assert (only_first - base).abs().max() > 1e-2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # peft's "Already found a `peft_config`" on the second adapter is filtered
        pipeline.load_lora_weights(second, adapter_name="second")  # a folder
    assert pipeline.get_list_adapters() == {"transformer": ["first", "second"]}
    pipeline.set_adapters(["first", "second"], [1.0, 0.0])
    assert torch.equal(_sample(pipeline, labels), only_first)
    pipeline.set_adapters(["first", "second"], [0.5, 0.8])
    mixed = _sample(pipeline, labels)
    pipeline.set_adapters(["second"], [0.8])
    assert (mixed - only_first).abs().max() > 1e-3 and (mixed - _sample(pipeline, labels)).abs().max() > 1e-3
    pipeline.unload_lora_weights()
    assert torch.equal(_sample(pipeline, labels), base)  # bit for bit
    assert not any("lora_" in name for name, _ in pipeline.transformer.named_parameters())

    # Fusing adds the LoRA product to the weights, unfusing subtracts it again: equal up to float rounding.
    pipeline.load_lora_weights(first)
    pipeline.fuse_lora()
    torch.testing.assert_close(_sample(pipeline, labels), only_first, rtol=0, atol=1e-5)
    pipeline.unfuse_lora()
    torch.testing.assert_close(_sample(pipeline, labels), only_first, rtol=0, atol=1e-5)
    pipeline.unload_lora_weights()
    torch.testing.assert_close(_sample(pipeline, labels), base, rtol=0, atol=1e-5)


def test_a_lora_for_another_model_is_a_clear_error(tmp_path):
    c2i_lora = _save_random_lora(tiny_c2i_pipeline(), tmp_path / "c2i", seed=0)
    t2i_lora = _save_random_lora(tiny_t2i_pipeline(), tmp_path / "t2i", seed=0)
    with pytest.raises(
        ValueError,
        match=r"layer 'transformer_blocks.0.attn.to_\w+' maps 32 -> \d+ features but .* maps 48 -> .*hidden_size 48",
    ):
        wide = PixelGenC2IPipeline(tiny_transformer(hidden_size=48, num_heads=2), tiny_c2i_pipeline().scheduler)
        wide.load_lora_weights(c2i_lora)
    with pytest.raises(
        ValueError, match=r"layer\(s\) that this PixelGenTransformer2DModel does not have.*text_refiner"
    ):
        tiny_c2i_pipeline().load_lora_weights(t2i_lora)
    with pytest.raises(
        ValueError, match=r"'transformer_blocks.0.ff.proj_in' maps 32 -> 170 .* 32 -> 256.*another kind"
    ):
        tiny_t2i_pipeline().load_lora_weights(c2i_lora)
    with pytest.raises(ValueError, match="not a LoRA of a PixelGenTransformer2DModel"):
        tiny_c2i_pipeline().load_lora_weights({"unet.down.lora_A.weight": torch.zeros(2, 2)})


LOAD_LORA_IN_PLAIN_DIFFUSERS = """
import sys, torch
from diffusers import DiffusionPipeline

folder, lora, output = sys.argv[1:4]
pipe = DiffusionPipeline.from_pretrained(
    folder, custom_pipeline=folder + "/pipeline.py", trust_remote_code=True, local_files_only=True
)
pipe.set_progress_bar_config(disable=True)
pipe.load_lora_weights(lora)
generator = [torch.Generator().manual_seed(seed) for seed in range(2)]
adapted = pipe(class_labels=[0, 3], num_inference_steps=2, generator=generator, output_type="pt").images
pipe.unload_lora_weights()
generator = [torch.Generator().manual_seed(seed) for seed in range(2)]
base = pipe(class_labels=[0, 3], num_inference_steps=2, generator=generator, output_type="pt").images
torch.save({"adapted": adapted, "base": base}, output)
"""


def test_lora_loads_in_an_exported_folder_without_the_package(tmp_path):
    pipeline = tiny_c2i_pipeline()
    folder = export_pipeline(pipeline, tmp_path / "model")
    lora = _save_random_lora(pipeline, tmp_path / "lora", seed=3)
    run_python(LOAD_LORA_IN_PLAIN_DIFFUSERS, folder, lora, tmp_path / "out.pt", cwd=tmp_path)
    result = torch.load(tmp_path / "out.pt")
    base = _sample(pipeline, [0, 3])
    pipeline.load_lora_weights(lora)
    assert torch.equal(result["adapted"], _sample(pipeline, [0, 3]))
    assert torch.equal(result["base"], base)


def test_generate_cli_applies_loras_with_scales(tmp_path):
    import numpy as np
    import PIL.Image

    from pixelgen_diffusers.cli import main

    pipeline = tiny_c2i_pipeline()
    folder = export_pipeline(pipeline, tmp_path / "model")
    lora = _save_random_lora(pipeline, tmp_path / "lora", seed=4) / "pytorch_lora_weights.safetensors"
    outputs = {}
    for name, extra in {"base": [], "zero": ["--lora", f"{lora}:0"], "full": ["--lora", str(lora)]}.items():
        arguments = ["generate", "--model", str(folder), "--class", "0", "--steps", "2", "--out", str(tmp_path / name)]
        assert main(arguments + extra) == 0
        (image,) = (tmp_path / name).glob("*.png")
        outputs[name] = np.asarray(PIL.Image.open(image))
    assert np.array_equal(outputs["zero"], outputs["base"])  # scale 0 switches the LoRA off
    assert not np.array_equal(outputs["full"], outputs["base"])
    arguments = ["generate", "--model", str(folder), "--class", "0", "--out", str(tmp_path / "bad")]
    assert main(arguments + ["--lora", f"{lora}:nan"]) == 2
    assert main(arguments + ["--lora", str(tmp_path / "missing.safetensors")]) == 2


def test_load_lora_weights_from_a_hub_id_downloads_the_file(tmp_path):
    from unittest import mock

    pipeline = tiny_c2i_pipeline()
    lora = _save_random_lora(pipeline, tmp_path / "lora", seed=5) / "pytorch_lora_weights.safetensors"
    with mock.patch("diffusers.utils.hub_utils.hf_hub_download", return_value=str(lora)) as download:
        pipeline.load_lora_weights("owner/a-lora", weight_name="pytorch_lora_weights.safetensors")
    assert download.call_args.args[0] == "owner/a-lora"
    assert download.call_args.kwargs["filename"] == "pytorch_lora_weights.safetensors"
    assert pipeline.get_list_adapters() == {"transformer": ["default_0"]}


@pytest.mark.parametrize("kind", ["c2i", "t2i"])
@pytest.mark.parametrize("path", ["/nonexistent/lora", "./no-such-lora", "~/no-such-lora.safetensors"])
def test_a_missing_local_lora_path_is_named_not_sent_to_the_hub(kind, path):
    pipe = tiny_c2i_pipeline() if kind == "c2i" else tiny_t2i_pipeline()
    with pytest.raises(ValueError, match=f"LoRA file or folder not found: {re.escape(path)}"):
        pipe.load_lora_weights(path)


def test_generate_cli_names_a_missing_lora_and_a_non_numeric_scale(tmp_path, capsys):
    from pixelgen_diffusers.cli import main
    from pixelgen_diffusers.cli.generate import parse_lora

    folder = export_pipeline(tiny_c2i_pipeline(), tmp_path / "model")
    arguments = ["generate", "--model", str(folder), "--class", "0", "--steps", "1", "--out", str(tmp_path / "out")]
    assert main(arguments + ["--lora", "/nonexistent"]) == 2
    assert "LoRA file or folder not found: /nonexistent" in capsys.readouterr().err
    assert main(arguments + ["--lora", "path:abc"]) == 2
    assert "the scale after ':' must be a number" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert parse_lora("owner/repo:0.5") == ("owner/repo", 0.5)
    assert parse_lora(r"C:\loras\style") == (r"C:\loras\style", 1.0)  # a drive letter is part of the path
