"""Quantized loading (`--quantize`): torchao int8 weight-only on CPU through diffusers' PipelineQuantizationConfig;
GPU-only backends refused with one line on a CPU machine."""

import copy

import pytest
import torch
from components import FORWARD_TOLERANCE, tiny_c2i_pipeline, tiny_t2i_pipeline
from test_cli import assert_one_line_error, run_cli

from pixelgen_diffusers import export_pipeline, load_pipeline
from pixelgen_diffusers.conversion.model_folder import ModelFolderError
from pixelgen_diffusers.conversion.quantization import check_quantization, load_quantized, stored_bytes


pytest.importorskip("torchao")


def quantized_linears(module: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {name: layer for name, layer in module.named_modules() if isinstance(layer, torch.nn.Linear)}


def dequantized_copy(quantized: torch.nn.Module, float_model: torch.nn.Module) -> torch.nn.Module:
    """`float_model` with each linear weight replaced by the dequantized int8 weight of `quantized`: what int8
    weight-only quantization computes, in float32."""
    reference = copy.deepcopy(float_model)
    float_linears = quantized_linears(reference)
    for name, layer in quantized_linears(quantized).items():
        weight = layer.weight
        float_linears[name].weight.data = weight.dequantize().float() if hasattr(weight, "dequantize") else weight
    return reference


@pytest.fixture(scope="module")
def c2i_folder(tmp_path_factory):
    return export_pipeline(tiny_c2i_pipeline(), tmp_path_factory.mktemp("quantize") / "tiny-c2i")


def test_int8_weight_only_quantizes_every_linear_and_computes_with_the_dequantized_weights(c2i_folder):
    full = load_pipeline(c2i_folder, dtype=torch.float32)
    quantized = load_quantized(c2i_folder, "int8wo", "cpu", dtype=torch.float32)
    linears = quantized_linears(quantized.transformer)
    kept = tuple(quantized.transformer._keep_in_fp32_modules or ())
    for name, layer in linears.items():
        is_kept = any(part in name.split(".") for part in kept)
        assert (type(layer.weight).__name__ == "Int8Tensor") is not is_kept, name
    assert quantized.transformer.pos_embed.dtype == torch.float32  # only linear weights are quantized

    # int8 weights take a quarter of the float32 bytes: the footprint drops by 3/4 of the quantized weights' size.
    quantized_bytes = sum(
        layer.weight.numel() * 4
        for name, layer in quantized_linears(full.transformer).items()
        if name in linears and type(linears[name].weight).__name__ == "Int8Tensor"
    )
    saved = stored_bytes(full.transformer) - stored_bytes(quantized.transformer)
    assert 0.7 * quantized_bytes < saved <= 0.75 * quantized_bytes

    reference = dequantized_copy(quantized.transformer, full.transformer)
    sample = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    inputs = dict(hidden_states=sample, timestep=torch.tensor([0.3, 0.7]), class_labels=torch.tensor([1, 10]))
    with torch.no_grad():
        expected = reference(**inputs).sample
        torch.testing.assert_close(quantized.transformer(**inputs).sample, expected, **FORWARD_TOLERANCE)
        assert (full.transformer(**inputs).sample - expected).abs().max() > 1e-4  # the quantization is real


def test_int8_weight_only_quantizes_a_shipped_text_encoder_too(tmp_path):
    folder = export_pipeline(tiny_t2i_pipeline(), tmp_path / "tiny-t2i")
    pipe = load_quantized(folder, "int8wo", "cpu", dtype=torch.float32)
    assert type(pipe.text_encoder.layers[0].mlp.up_proj.weight).__name__ == "Int8Tensor"
    assert type(pipe.transformer.transformer_blocks[0].attn.to_qkv.weight).__name__ == "Int8Tensor"
    images = pipe(prompt=["a red circle"], num_inference_steps=2, output_type="pt").images
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()


def test_generate_quantize_int8wo_writes_images_and_gpu_backends_are_refused_on_cpu(c2i_folder, tmp_path, capsys):
    code, out, err = run_cli(
        capsys,
        "generate",
        "--model",
        c2i_folder,
        "--class",
        "1",
        "--steps",
        "2",
        "--quantize",
        "int8wo",
        "--out",
        tmp_path / "images",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert len(list((tmp_path / "images").glob("*.png"))) == 1
    for choice in ("float8wo", "bnb8", "bnb4"):
        code, _, err = run_cli(
            capsys, "generate", "--model", c2i_folder, "--quantize", choice, "--device", "cpu", "--out", tmp_path / "x"
        )
        assert_one_line_error(code, err, "generate", f"--quantize {choice}")
        assert "needs a CUDA GPU" in err or "pip install" in err
    assert not (tmp_path / "x").exists()


def test_unknown_or_uninstalled_backends_are_refused_before_loading(monkeypatch):
    with pytest.raises(ModelFolderError, match="--quantize must be one of int8wo, float8wo, bnb8, bnb4, got 'int4'"):
        check_quantization("int4", "cpu")
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "torchao" else find_spec(name))
    with pytest.raises(ModelFolderError, match=r"needs torchao: pip install 'pixelgen-diffusers\[quantization\]'"):
        check_quantization("int8wo", "cpu")


def test_sample_quantize_int8wo_writes_the_set(c2i_folder, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "sample", "--model", c2i_folder, "--num-samples", "3", "--batch-size", "2", "--steps", "2",
        "--quantize", "int8wo", "--out", tmp_path / "set",
    )  # fmt: skip
    assert code == 0, err
    assert len(list((tmp_path / "set").glob("*.png"))) == 3
