"""The LoRA lifecycle as diffusers users drive it: fuse/unfuse/unload orders, scale metadata (`network_alphas`),
saving a pipeline with a LoRA loaded, offloading, non-finite numbers and broken or wrong files."""

import json
import math
import pickle

import pytest
import torch
from components import LAYOUT_TOLERANCE, tiny_c2i_pipeline, tiny_t2i_pipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from pixelgen_diffusers.pipelines.pipeline_pixelgen_t2i import PixelGenT2IPipeline


TARGETS = ("attn.to_qkv", "attn.to_out", "ff.proj_in")


def _sample(pipeline, **kwargs):
    condition = {"prompt": ["a", "b c"]} if isinstance(pipeline, PixelGenT2IPipeline) else {"class_labels": [0, 3]}
    generator = [torch.Generator().manual_seed(seed) for seed in range(2)]
    return pipeline(**condition, num_inference_steps=2, generator=generator, output_type="pt", **kwargs).images


def _random_lora(pipeline, seed: int = 1, rank: int = 2, alpha: float | None = None):
    """A peft LoRA with random A and B, as diffusers' state dict (`transformer.` keys) + adapter metadata."""
    transformer = pipeline.transformer
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=TARGETS, init_lora_weights="gaussian")
    transformer.add_adapter(config, adapter_name="scratch")
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.3)
    state_dict = {
        f"transformer.{k}": v for k, v in get_peft_model_state_dict(transformer, adapter_name="scratch").items()
    }
    metadata = transformer.peft_config["scratch"].to_dict()
    transformer.delete_adapters("scratch")
    return state_dict, metadata


def _write_lora(pipeline, folder, state_dict, metadata=None):
    prefixed = {f"transformer.{k}": v for k, v in metadata.items()} if metadata else None
    header = {"format": "pt"}
    if prefixed is not None:
        header["lora_adapter_metadata"] = json.dumps(
            {k: sorted(v) if isinstance(v, set) else v for k, v in prefixed.items()}
        )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pytorch_lora_weights.safetensors"
    save_file({k: v.contiguous() for k, v in state_dict.items()}, path, metadata=header)
    return path


def _base_weights(pipeline):
    return {name: tensor.clone() for name, tensor in pipeline.transformer.state_dict().items()}


# ------------------------------------------------------------------------------------------------ fuse / unfuse
def test_fused_lora_cannot_be_reweighted_and_unfuse_restores_the_base(tmp_path):
    """fuse_lora -> set_adapters(0.5) -> unfuse_lora would subtract half of what was fused and leave the other half in
    the weights for good: set_adapters is refused while fused, and unfuse restores the base up to float rounding."""
    pipe = tiny_c2i_pipeline()
    base = _base_weights(pipe)
    pipe.load_lora_weights(_random_lora(pipe)[0], adapter_name="style")
    pipe.fuse_lora()
    with pytest.raises(ValueError, match=r"unfuse_lora\(\) first, then set_adapters"):
        pipe.set_adapters(["style"], [0.5])
    for method, args in (("delete_adapters", ["style"]), ("disable_lora", []), ("enable_lora", [])):
        with pytest.raises(ValueError, match=rf"unfuse_lora\(\) first, then {method}"):
            getattr(pipe, method)(*args)
    pipe.unfuse_lora()
    pipe.unload_lora_weights()
    for name, tensor in pipe.transformer.state_dict().items():
        torch.testing.assert_close(tensor, base[name], rtol=0, atol=1e-6)


def test_unfuse_after_unload_says_the_fused_lora_is_baked_in():
    """diffusers' deliberate semantics: fuse_lora + unload_lora_weights keeps the fused LoRA in the weights. A later
    unfuse_lora cannot take it out, and says so instead of silently doing nothing."""
    pipe = tiny_c2i_pipeline()
    base_sample = _sample(pipe)
    pipe.load_lora_weights(_random_lora(pipe)[0])
    lora_sample = _sample(pipe)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    torch.testing.assert_close(_sample(pipe), lora_sample, rtol=0, atol=1e-5)  # baked in
    assert (_sample(pipe) - base_sample).abs().max() > 1e-2
    with pytest.raises(ValueError, match="baked the LoRA into the weights"):
        pipe.unfuse_lora()


# --------------------------------------------------------------------------------------------- scale metadata
@pytest.mark.parametrize("make_pipeline", [tiny_c2i_pipeline, tiny_t2i_pipeline], ids=["c2i", "t2i"])
def test_alpha_keys_set_the_scale_as_the_metadata_does(tmp_path, make_pipeline):
    """diffusers' `<module>.alpha` keys (a file without adapter metadata) give the trained scale alpha / rank."""
    pipe = make_pipeline()
    state_dict, metadata = _random_lora(pipe, rank=2, alpha=8.0)
    pipe.load_lora_weights(_write_lora(pipe, tmp_path / "meta", state_dict, metadata))
    expected = _sample(pipe)
    pipe.unload_lora_weights()
    alphas = {key.split(".lora_A.")[0] + ".alpha": torch.tensor(8.0) for key in state_dict if ".lora_A." in key}
    pipe.load_lora_weights(_write_lora(pipe, tmp_path / "alpha", {**state_dict, **alphas}))
    torch.testing.assert_close(_sample(pipe), expected, rtol=0, atol=0)


def test_kohya_style_files_are_refused_with_the_reason(tmp_path):
    pipe = tiny_c2i_pipeline()
    kohya = {
        "lora_unet_transformer_blocks_0_attn_to_qkv.lora_down.weight": torch.randn(2, 32),
        "lora_unet_transformer_blocks_0_attn_to_qkv.lora_up.weight": torch.randn(96, 2),
        "lora_unet_transformer_blocks_0_attn_to_qkv.alpha": torch.tensor(4.0),
    }
    path = _write_lora(pipe, tmp_path / "kohya", kohya)
    with pytest.raises(ValueError, match="kohya") as error:
        pipe.load_lora_weights(path)
    assert str(path) in str(error.value)


# ------------------------------------------------------------------------------------ save_pretrained with a LoRA
@pytest.mark.parametrize("fused", [False, True], ids=["loaded", "fused"])
def test_save_pretrained_with_a_lora_loaded_names_the_way_out(tmp_path, fused):
    pipe = tiny_c2i_pipeline()
    pipe.load_lora_weights(_random_lora(pipe)[0])
    if fused:
        pipe.fuse_lora()
    with pytest.raises(ValueError, match=r"fuse_lora\(\).*unload_lora_weights\(\).*save_lora_weights"):
        pipe.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="unload_lora_weights"):
        pipe.transformer.save_pretrained(tmp_path / "transformer")
    if fused:  # the documented way: bake it in, then save real weights under their real names
        pipe.unload_lora_weights()
        pipe.save_pretrained(tmp_path / "baked")
        reloaded = type(pipe).from_pretrained(tmp_path / "baked")
        reloaded.set_progress_bar_config(disable=True)
        torch.testing.assert_close(_sample(reloaded), _sample(pipe), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------- offloading
@pytest.mark.skipif(not torch.cuda.is_available(), reason="diffusers' model offload needs an accelerator")
def test_loading_a_lora_keeps_the_users_model_cpu_offload_device():
    """diffusers takes the offload hooks off to load a LoRA and puts them back without the user's `device`."""
    pipe = tiny_c2i_pipeline()
    state_dict = _random_lora(pipe)[0]
    pipe.load_lora_weights(state_dict)
    expected = _sample(pipe)
    pipe.unload_lora_weights()
    pipe.enable_model_cpu_offload(device="cuda:0")
    pipe.load_lora_weights(state_dict)
    assert type(getattr(pipe.transformer, "_hf_hook", None)).__name__ == "CpuOffload"
    assert pipe._offload_device == torch.device("cuda:0")
    torch.testing.assert_close(_sample(pipe), expected, **LAYOUT_TOLERANCE)  # GPU vs CPU kernels


# -------------------------------------------------------------------------------------------- non-finite numbers
@pytest.mark.parametrize("value", [math.nan, math.inf, 1e308])
def test_the_lora_api_refuses_non_finite_and_overflowing_numbers(tmp_path, value):
    pipe = tiny_c2i_pipeline()
    base = _base_weights(pipe)
    state_dict, metadata = _random_lora(pipe)
    pipe.transformer.unload_lora()  # the scratch adapter's empty peft layers
    path = _write_lora(pipe, tmp_path / "alpha", state_dict, {**metadata, "lora_alpha": value})
    with pytest.raises(ValueError, match="lora_alpha"):
        pipe.load_lora_weights(path)
    pipe.load_lora_weights(state_dict, adapter_name="style")
    with pytest.raises(ValueError, match="adapter_weights"):
        pipe.set_adapters(["style"], [value])
    with pytest.raises(ValueError, match="lora_scale"):
        pipe.fuse_lora(lora_scale=value)
    pipe.unload_lora_weights()
    for name, tensor in pipe.transformer.state_dict().items():
        assert torch.equal(tensor, base[name]), name  # nothing was poisoned


# ------------------------------------------------------------------------------------------------ broken files
def _broken_files(pipe, folder):
    state_dict, metadata = _random_lora(pipe)
    good = _write_lora(pipe, folder / "good", state_dict, metadata).read_bytes()
    files = {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "garbage header": b"\xff" * 8 + b"not json at all",
        "pickle renamed": pickle.dumps({"transformer.x.lora_A.weight": [1.0]}),
    }
    paths = {}
    for name, content in files.items():
        path = folder / name.replace(" ", "_") / "pytorch_lora_weights.safetensors"
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
        paths[name] = path
    key_a = next(key for key in state_dict if ".lora_A." in key)
    key_b = key_a.replace(".lora_A.", ".lora_B.")
    mismatched = {**state_dict, key_a: torch.randn(3, state_dict[key_a].shape[1])}
    paths["mismatched ranks"] = _write_lora(pipe, folder / "ranks", mismatched, metadata)
    paths["1-D tensors"] = _write_lora(pipe, folder / "flat", {**state_dict, key_b: state_dict[key_b].flatten()})
    listed = folder / "listed" / "pytorch_lora_weights.safetensors"
    listed.parent.mkdir()
    save_file(state_dict, listed, metadata={"format": "pt", "lora_adapter_metadata": json.dumps([1, 2])})
    paths["list metadata"] = listed
    return paths


def test_broken_lora_files_are_value_errors_naming_the_file(tmp_path):
    pipe = tiny_c2i_pipeline()
    base = _base_weights(pipe)
    paths = _broken_files(pipe, tmp_path)
    pipe.transformer.unload_lora()  # the scratch adapter's empty peft layers
    for case, path in paths.items():
        with pytest.raises(ValueError) as error:
            pipe.load_lora_weights(path)
        assert str(path) in str(error.value), case
        assert pipe.get_list_adapters() in ({}, {"transformer": []}), case  # nothing half-loaded
    assert all(torch.equal(tensor, base[name]) for name, tensor in pipe.transformer.state_dict().items())


def test_a_checkpoints_training_state_is_not_a_lora(tmp_path):
    pipe = tiny_c2i_pipeline()
    state = tmp_path / "checkpoint-4" / "training_state"
    state.mkdir(parents=True)
    (state / "state.json").write_text(json.dumps({"step": 4}))
    zeros = {k: torch.zeros_like(v) for k, v in _random_lora(pipe)[0].items()}
    save_file(zeros, state / "model.safetensors")
    with pytest.raises(ValueError, match=r"training_state.*checkpoint-4"):
        pipe.load_lora_weights(state)


def test_a_pickle_lora_is_refused_unless_pickle_is_allowed(tmp_path):
    pipe = tiny_c2i_pipeline()
    state_dict = _random_lora(pipe)[0]
    expected_pipe = tiny_c2i_pipeline()
    expected_pipe.load_lora_weights(state_dict)
    path = tmp_path / "pytorch_lora_weights.bin"
    torch.save(state_dict, path)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        pipe.load_lora_weights(path)
    pipe.load_lora_weights(path, allow_pickle=True)
    torch.testing.assert_close(_sample(pipe), _sample(expected_pipe), rtol=0, atol=0)
