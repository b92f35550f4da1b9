"""Converting upstream PixelGen / JiT checkpoints into self-contained folders (`conversion/convert.py`)."""

import argparse
import hashlib
import json

import huggingface_hub
import pytest
import torch
import yaml
from components import (
    TINY_C2I,
    TINY_T2I,
    TINY_UPSTREAM_C2I,
    reference_c2i_name,
    reference_c2i_transformer,
    reference_t2i_name,
    run_python,
    tiny_qwen3,
    tiny_qwen_tokenizer,
    upstream_c2i_state_dict,
    upstream_c2i_yaml,
    upstream_jit_checkpoint,
    upstream_lightning_checkpoint,
    upstream_t2i_state_dict,
    upstream_t2i_yaml,
)

from pixelgen_diffusers import (
    PIXELGEN_PRESETS,
    PixelGenC2IPipeline,
    PixelGenScheduler,
    convert_checkpoint,
    imagenet_id2label,
)
from pixelgen_diffusers.conversion.architecture import resolve_architecture
from pixelgen_diffusers.conversion.keys import C2I
from pixelgen_diffusers.conversion.model_folder import ConversionError, ModelFolderError, read_safetensors_folder
from pixelgen_diffusers.conversion.upstream_config import recommended_defaults, sampling_from_config
from pixelgen_diffusers.models.transformer_jit_t2i import PixelGenT2ITransformer2DModel
from pixelgen_diffusers.pipelines.pipeline_pixelgen_t2i import PixelGenT2IPipeline


def write_lightning(tmp_path, name="tiny.ckpt", bottleneck_dim=None, **overrides):
    """A Lightning checkpoint whose EMA (seed 1) and online (seed 2) weights differ; returns (path, ema, online)."""
    ema = upstream_c2i_state_dict(seed=1, bottleneck_dim=bottleneck_dim, **overrides)
    online = upstream_c2i_state_dict(seed=2, bottleneck_dim=bottleneck_dim, **overrides)
    path = tmp_path / name
    torch.save(upstream_lightning_checkpoint(ema, online), path)
    return path, ema, online


def stored_weights(folder):
    return read_safetensors_folder(folder / "transformer")


def assert_holds(folder, upstream):
    """The folder's transformer tensors are exactly `upstream`, renamed by the test's own mapping."""
    stored = stored_weights(folder)
    expected = {reference_c2i_name(key): value for key, value in upstream.items()}
    assert set(stored) == set(expected)
    for key, value in expected.items():
        assert torch.equal(stored[key], value), key


# ------------------------------------------------------------------------------------------------ faithfulness
PLAIN_DIFFUSERS_RUN = """
import json, sys, torch
from diffusers import DiffusionPipeline

for job in json.loads(sys.argv[1]):
    folder = job["folder"]
    pipe = DiffusionPipeline.from_pretrained(
        folder, custom_pipeline=folder + "/pipeline.py", trust_remote_code=True, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    inputs = torch.load(job["inputs"])
    generators = [torch.Generator().manual_seed(seed) for seed in inputs["seeds"]]
    with torch.no_grad():
        prediction = pipe.transformer(*inputs["forward"]).sample
    if "labels" in inputs:  # class-to-image; the sampling settings are the folder's stored defaults
        latents = pipe(class_labels=inputs["labels"], generator=generators, output_type="latent").images
    else:
        embeds = dict(prompt_embeds=inputs["prompt_embeds"], negative_prompt_embeds=inputs["negative_prompt_embeds"])
        latents = pipe(**embeds, generator=generators, output_type="latent").images
    modules = [type(pipe).__module__, type(pipe.transformer).__module__, type(pipe.scheduler).__module__]
    torch.save({"prediction": prediction, "latents": latents, "modules": modules}, job["output"])
"""


def _reference_outputs(pipe, inputs):
    pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(seed) for seed in inputs["seeds"]]
    with torch.no_grad():
        prediction = pipe.transformer(*inputs["forward"]).sample
    if "labels" in inputs:
        latents = pipe(class_labels=inputs["labels"], generator=generators, output_type="latent").images
    else:
        embeds = dict(prompt_embeds=inputs["prompt_embeds"], negative_prompt_embeds=inputs["negative_prompt_embeds"])
        latents = pipe(**embeds, generator=generators, output_type="latent").images
    return prediction, latents


@pytest.fixture(scope="module")
def plain_diffusers_runs(tmp_path_factory):
    """Converts tiny upstream checkpoints (c2i plain and bottleneck, t2i), runs each folder in a process where
    `pixelgen_diffusers` cannot be imported, and computes the float32 reference in this process: the model built
    directly, the EMA weights loaded by the tests' own name mapping, and the YAML's sampling recipe written by hand.
    Returns name -> (result from plain diffusers, reference prediction, reference latents)."""
    tmp_path = tmp_path_factory.mktemp("plain_diffusers")
    torch.manual_seed(0)
    c2i_inputs = {
        "forward": (torch.randn(3, 3, 32, 32), torch.tensor([0.0, 0.3, 0.95]), torch.tensor([0, 7, 10])),  # 10: null
        "labels": [1, 3],
        "seeds": [11, 12],
    }
    t2i_inputs = {
        "forward": (torch.randn(2, 3, 32, 32), torch.tensor([0.1, 0.8]), torch.randn(2, 8, 24)),
        "prompt_embeds": torch.randn(2, 8, 24),
        "negative_prompt_embeds": torch.randn(1, 8, 24),
        "seeds": [3, 4],
    }
    jobs, references = [], {}
    for name, bottleneck_dim in (("plain", None), ("bottleneck", 16)):
        checkpoint, ema, _ = write_lightning(tmp_path, f"{name}.ckpt", bottleneck_dim=bottleneck_dim)
        config = upstream_c2i_yaml(tmp_path / f"{name}.yaml", bottleneck_dim=bottleneck_dim)
        folder = convert_checkpoint(checkpoint, tmp_path / f"PixelGen-{name}", config=config)
        # Heun, 3 steps, CFG 2.25 on (0.1, 0.9], shift 2.0: the tiny YAML's diffusion_sampler.
        reference = PixelGenC2IPipeline(
            reference_c2i_transformer(ema, bottleneck_dim=bottleneck_dim),
            PixelGenScheduler(sampling_method="heun", timeshift=2.0),
            num_inference_steps=3,
            guidance_scale=2.25,
            guidance_interval_min=0.1,
            guidance_interval_max=0.9,
        )
        torch.save(c2i_inputs, tmp_path / f"{name}-inputs.pt")
        references[name] = _reference_outputs(reference, c2i_inputs)
        jobs.append({"folder": str(folder), "inputs": str(tmp_path / f"{name}-inputs.pt"), "name": name})

    ema, online = upstream_t2i_state_dict(seed=1), upstream_t2i_state_dict(seed=2)
    torch.save(upstream_lightning_checkpoint(ema, online), tmp_path / "t2i.ckpt")
    folder = convert_checkpoint(
        tmp_path / "t2i.ckpt", tmp_path / "PixelGen-t2i", config=upstream_t2i_yaml(tmp_path / "t2i.yaml")
    )
    transformer = PixelGenT2ITransformer2DModel(**TINY_T2I)
    transformer.load_state_dict({reference_t2i_name(key): value for key, value in ema.items()}, strict=True)
    # AdamLM order 2, 3 steps, CFG 4.0, shift 3.0, interval [0, 1]: the tiny T2I YAML's diffusion_sampler.
    reference = PixelGenT2IPipeline(
        transformer.eval(),
        PixelGenScheduler(sampling_method="adam_lm", timeshift=3.0, solver_order=2),
        num_inference_steps=3,
        guidance_scale=4.0,
    )
    torch.save(t2i_inputs, tmp_path / "t2i-inputs.pt")
    references["t2i"] = _reference_outputs(reference, t2i_inputs)
    jobs.append({"folder": str(folder), "inputs": str(tmp_path / "t2i-inputs.pt"), "name": "t2i"})

    for job in jobs:
        job["output"] = str(tmp_path / f"{job['name']}-output.pt")
    run_python(PLAIN_DIFFUSERS_RUN, json.dumps(jobs), cwd=tmp_path)
    return {job["name"]: (torch.load(job["output"]), *references[job["name"]]) for job in jobs}


@pytest.mark.parametrize("name", ["plain", "bottleneck", "t2i"])
def test_converted_model_loads_in_plain_diffusers_and_equals_the_float32_reference(plain_diffusers_runs, name):
    result, prediction, latents = plain_diffusers_runs[name]
    assert all(module.startswith("diffusers_modules.local.") for module in result["modules"])  # the folder's code
    torch.testing.assert_close(result["prediction"], prediction, rtol=0, atol=1e-5)
    torch.testing.assert_close(result["latents"], latents, rtol=0, atol=1e-5)


def test_folder_has_the_self_contained_layout_with_stored_defaults(tmp_path):
    checkpoint, _, _ = write_lightning(tmp_path)
    folder = convert_checkpoint(checkpoint, tmp_path / "out", config=upstream_c2i_yaml(tmp_path / "tiny.yaml"))
    files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    assert files == [
        "README.md",
        "conversion_metadata.json",
        "model_index.json",
        "pipeline.py",
        "pipeline_utils_pixelgen.py",
        "scheduler/scheduler_config.json",
        "scheduler/scheduling_pixelgen.py",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "transformer/jit_layers.py",
        "transformer/transformer_jit.py",
    ]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "PixelGenC2IPipeline"]
    assert index["transformer"] == ["transformer_jit", "PixelGenTransformer2DModel"]
    assert index["scheduler"] == ["scheduling_pixelgen", "PixelGenScheduler"]
    assert (index["num_inference_steps"], index["guidance_scale"]) == (3, 2.25)
    assert (index["guidance_interval_min"], index["guidance_interval_max"], index["noise_scale"]) == (0.1, 0.9, 1.0)
    scheduler = json.loads((folder / "scheduler/scheduler_config.json").read_text())
    assert (scheduler["sampling_method"], scheduler["timeshift"]) == ("heun", 2.0)
    import pixelgen_diffusers.models.transformer_jit as transformer_module
    import pixelgen_diffusers.pipelines.pipeline_pixelgen_c2i as pipeline_module

    assert (folder / "pipeline.py").read_bytes() == open(pipeline_module.__file__, "rb").read()
    assert (folder / "transformer/transformer_jit.py").read_bytes() == open(transformer_module.__file__, "rb").read()


def test_weights_online_converts_the_denoiser_copy_and_ema_the_ema_denoiser_copy(tmp_path):
    checkpoint, ema, online = write_lightning(tmp_path)
    config = upstream_c2i_yaml(tmp_path / "tiny.yaml")
    assert_holds(convert_checkpoint(checkpoint, tmp_path / "ema", config=config), ema)
    assert_holds(convert_checkpoint(checkpoint, tmp_path / "online", config=config, weights="online"), online)
    assert not torch.equal(ema["pos_embed"], online["pos_embed"])  # the decoy really differs


def test_jit_checkpoint_converts_the_chosen_copy_without_its_net_prefix(tmp_path):
    copies = {
        name: upstream_c2i_state_dict(seed=seed, bottleneck_dim=16) for seed, name in enumerate(["m", "e1", "e2"])
    }
    path = tmp_path / "checkpoint-last.pth"
    torch.save(upstream_jit_checkpoint(copies["m"], copies["e1"], copies["e2"]), path)
    for weights, expected in (("ema", "e1"), ("ema1", "e1"), ("ema2", "e2"), ("online", "m")):
        folder = convert_checkpoint(path, tmp_path / weights, weights=weights, in_context_start=1)
        assert_holds(folder, copies[expected])
        metadata = json.loads((folder / "conversion_metadata.json").read_text())
        assert metadata["source"]["format"] == "jit"
        assert {"model.*", "model_ema1.*", "model_ema2.*"} - set(metadata["dropped_keys"]) == {
            {"e1": "model_ema1.*", "e2": "model_ema2.*", "m": "model.*"}[expected]
        }


def test_jit_checkpoint_with_saved_args_needs_allow_pickle_and_then_uses_the_args(tmp_path):
    weights = upstream_c2i_state_dict(seed=0, bottleneck_dim=16)
    args = argparse.Namespace(model="JiT-tiny/8", img_size=32, class_num=10, noise_scale=2.0, proj_dropout=0.1)
    path = tmp_path / "checkpoint-last.pth"
    torch.save(upstream_jit_checkpoint(weights, weights, weights, args=args), path)

    with pytest.raises(ConversionError, match="needs pickle.*--allow-pickle") as error:
        convert_checkpoint(path, tmp_path / "out", in_context_start=1)
    assert "argparse.Namespace" in str(error.value)
    assert not (tmp_path / "out").exists()

    folder = convert_checkpoint(path, tmp_path / "out", in_context_start=1, allow_pickle=True)
    assert_holds(folder, weights)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["noise_scale"] == 2.0  # JiT's training noise scale, from args
    assert json.loads((folder / "transformer/config.json").read_text())["dropout"] == 0.1


# ---------------------------------------------------------------------------------------------------- architecture
def test_architecture_inferred_from_shapes_equals_the_yaml_architecture(tmp_path):
    for bottleneck_dim in (None, 16):
        checkpoint, _, _ = write_lightning(tmp_path, bottleneck_dim=bottleneck_dim)
        config = upstream_c2i_yaml(tmp_path / "tiny.yaml", bottleneck_dim=bottleneck_dim)
        with_yaml = convert_checkpoint(checkpoint, tmp_path / f"yaml-{bottleneck_dim}", config=config)
        from_shapes = convert_checkpoint(checkpoint, tmp_path / f"shapes-{bottleneck_dim}", in_context_start=1)
        configs = [json.loads((folder / "transformer/config.json").read_text()) for folder in (with_yaml, from_shapes)]
        assert configs[0] == configs[1]
        expected = {**TINY_C2I, "bottleneck_dim": bottleneck_dim, "mlp_ratio": 4.0, "in_channels": 3}
        assert {key: configs[0][key] for key in expected} == expected


def test_published_architectures_are_recognised_from_shapes_with_their_presets_and_recipes():
    xl = upstream_c2i_state_dict(
        input_size=256, patch_size=16, hidden_size=1152, depth=28, num_heads=16, num_classes=1000, in_context_len=32,
        device="meta",
    )  # fmt: skip
    config, sources, preset = resolve_architecture(C2I, xl, None, "pixelgen")
    assert preset == "PixelGen-XL/16"
    assert config == {**PIXELGEN_PRESETS["PixelGen-XL/16"], "sample_size": 256, "num_classes": 1000,
                      "in_channels": 3, "mlp_ratio": 4.0}  # fmt: skip
    assert sources["in_context_start"] == "preset PixelGen-XL/16"
    defaults, _ = recommended_defaults(C2I, preset, "pixelgen", config)
    assert (defaults.sampling_method, defaults.num_inference_steps, defaults.guidance_scale) == ("heun", 50, 2.25)
    assert (defaults.guidance_interval_min, defaults.guidance_interval_max, defaults.timeshift) == (0.1, 0.9, 2.0)

    large = dict(patch_size=16, hidden_size=1024, depth=24, num_heads=16, num_classes=1000, bottleneck_dim=128)
    large_sd = upstream_c2i_state_dict(input_size=256, in_context_len=32, device="meta", **large)
    assert resolve_architecture(C2I, large_sd, None, "pixelgen")[2] == "PixelGen-L/16"
    config, _, preset = resolve_architecture(C2I, large_sd, None, "jit")
    assert (preset, config["in_context_start"]) == ("JiT-L/16", 8)
    defaults, _ = recommended_defaults(C2I, preset, "jit", config)
    assert (defaults.sampling_method, defaults.guidance_scale, defaults.noise_scale) == ("euler", 1.0, 1.0)

    base_512 = upstream_c2i_state_dict(
        input_size=512, patch_size=32, hidden_size=768, depth=12, num_heads=12, num_classes=1000, in_context_len=32,
        bottleneck_dim=128, device="meta",
    )  # fmt: skip
    config, _, preset = resolve_architecture(C2I, base_512, None, "jit")
    assert (preset, config["sample_size"], config["in_context_start"]) == ("JiT-B/32", 512, 4)
    assert recommended_defaults(C2I, preset, "jit", config)[0].noise_scale == 2.0
    assert recommended_defaults(C2I, preset, "jit", {**config, "sample_size": 1024})[0].noise_scale == 4.0


def test_unknown_architecture_without_in_context_start_asks_for_the_config(tmp_path):
    checkpoint, _, _ = write_lightning(tmp_path)
    with pytest.raises(ConversionError, match="in_context_start.*--config"):
        convert_checkpoint(checkpoint, tmp_path / "out")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.ckpt"]


def test_yaml_sampler_classes_and_their_upstream_defaults_become_the_sampling_defaults(tmp_path):
    euler = upstream_c2i_yaml(
        tmp_path / "euler.yaml",
        sampler="EulerSamplerJiT",
        sampler_args="num_steps: 50\n      guidance: 1.0\n      guidance_interval_min: 0.1\n"
        "      guidance_interval_max: 1.0",
    )
    defaults, _ = sampling_from_config(yaml.safe_load(euler.read_text()))
    assert (defaults.sampling_method, defaults.num_inference_steps, defaults.guidance_scale) == ("euler", 50, 1.0)
    assert (defaults.guidance_interval_min, defaults.guidance_interval_max, defaults.timeshift) == (0.1, 1.0, 1.0)

    adams = upstream_c2i_yaml(
        tmp_path / "adams.yaml",
        sampler="AdamLMSamplerJiT",
        sampler_args="order: 3\n      guidance: 4.0",
        noise_scale=2.0,
    )
    defaults, _ = sampling_from_config(yaml.safe_load(adams.read_text()))
    assert (defaults.sampling_method, defaults.solver_order, defaults.guidance_scale) == ("adam_lm", 3, 4.0)
    # Missing arguments take upstream's constructor defaults: 250 steps, no shift, interval [0, 1].
    assert (defaults.num_inference_steps, defaults.timeshift, defaults.noise_scale) == (250, 1.0, 2.0)
    assert (defaults.guidance_interval_min, defaults.guidance_interval_max) == (0.0, 1.0)

    heun = upstream_c2i_yaml(tmp_path / "heun.yaml", sampler_args="num_steps: 4")
    _, notes = sampling_from_config(yaml.safe_load(heun.read_text()))
    assert any("exact_henu" in note for note in notes)


def test_recommended_defaults_apply_without_a_yaml(tmp_path):
    checkpoint, _, _ = write_lightning(tmp_path)
    folder = convert_checkpoint(checkpoint, tmp_path / "out", in_context_start=1)
    index = json.loads((folder / "model_index.json").read_text())
    scheduler = json.loads((folder / "scheduler/scheduler_config.json").read_text())
    # A plain-embedding PixelGen model gets the PixelGen-XL recipe.
    assert (scheduler["sampling_method"], scheduler["timeshift"], index["num_inference_steps"]) == ("heun", 2.0, 50)
    interval = (index["guidance_interval_min"], index["guidance_interval_max"])
    assert (index["guidance_scale"], *interval) == (2.25, 0.1, 0.9)


# ---------------------------------------------------------------------------------------------------- class names
def test_class_names_are_imagenet_for_1000_classes_numbers_otherwise_or_read_from_labels(tmp_path):
    checkpoint, _, _ = write_lightning(tmp_path, "imagenet.ckpt", num_classes=1000)
    folder = convert_checkpoint(checkpoint, tmp_path / "imagenet", in_context_start=1)
    id2label = json.loads((folder / "model_index.json").read_text())["id2label"]
    assert id2label == {str(key): value for key, value in imagenet_id2label().items()}

    checkpoint, _, _ = write_lightning(tmp_path)
    folder = convert_checkpoint(checkpoint, tmp_path / "numbers", in_context_start=1)
    assert json.loads((folder / "model_index.json").read_text())["id2label"] == {str(i): str(i) for i in range(10)}

    names = [f"shape {i}, form {i}" for i in range(10)]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    (tmp_path / "names.json").write_text(json.dumps({str(i): name for i, name in enumerate(names)}))
    for labels in ("names.txt", "names.json"):
        folder = convert_checkpoint(
            checkpoint, tmp_path / f"out-{labels}", in_context_start=1, labels=tmp_path / labels
        )
        stored = json.loads((folder / "model_index.json").read_text())["id2label"]
        assert stored == {str(i): name for i, name in enumerate(names)}

    (tmp_path / "short.txt").write_text("a\nb\n")
    with pytest.raises(ConversionError, match="names 2 classes.*the model has 10 classes"):
        convert_checkpoint(checkpoint, tmp_path / "short", in_context_start=1, labels=tmp_path / "short.txt")


# ------------------------------------------------------------------------------------------- storage and sharding
def test_bfloat16_storage_is_sharded_with_an_index_and_round_trips_bitwise(tmp_path):
    checkpoint, ema, _ = write_lightning(tmp_path)
    config = upstream_c2i_yaml(tmp_path / "tiny.yaml")
    folder = convert_checkpoint(checkpoint, tmp_path / "out", config=config, dtype="bfloat16", max_shard_size="40KB")
    shards = sorted(path.name for path in (folder / "transformer").glob("*.safetensors"))
    assert len(shards) > 1
    index = json.loads((folder / "transformer/diffusion_pytorch_model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    stored = stored_weights(folder)
    for key, value in ema.items():
        assert stored[reference_c2i_name(key)].dtype == torch.bfloat16
        assert torch.equal(stored[reference_c2i_name(key)], value.to(torch.bfloat16)), key

    pipe = PixelGenC2IPipeline.from_pretrained(folder, dtype=torch.bfloat16)
    assert pipe.transformer.dtype == torch.bfloat16
    assert torch.equal(pipe.transformer.pos_embed, ema["pos_embed"].to(torch.bfloat16))


# ---------------------------------------------------------------------------------------------- metadata and card
def test_metadata_records_source_hash_weights_dropped_keys_and_architecture(tmp_path):
    checkpoint, _, _ = write_lightning(tmp_path)
    config = upstream_c2i_yaml(tmp_path / "tiny.yaml")
    folder = convert_checkpoint(checkpoint, tmp_path / "out", config=config)
    metadata = json.loads((folder / "conversion_metadata.json").read_text())
    assert metadata["source"] == {
        "file_name": "tiny.ckpt",
        "size_bytes": checkpoint.stat().st_size,
        "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "format": "lightning",
        "weights": "ema_denoiser",
    }
    projector = {f"diffusion_trainer.proj.0.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    online = {f"denoiser.{key}" for key in upstream_c2i_state_dict()}
    assert set(metadata["dropped_keys"]) == projector | online
    assert {"epoch", "global_step", "optimizer_states"} <= set(metadata["ignored_entries"])
    assert metadata["architecture"]["hidden_size"] == 32
    assert metadata["architecture_sources"]["in_context_start"].startswith("--config tiny.yaml")
    assert metadata["upstream_config"]["file_name"] == "tiny.yaml"
    assert metadata["upstream_config"]["denoiser"]["init_args"]["depth"] == TINY_UPSTREAM_C2I["depth"]
    assert metadata["converter_version"] and metadata["date"]

    card = (folder / "README.md").read_text()
    front_matter = card.split("---")[1]
    for line in ("library_name: diffusers", "pipeline_tag: unconditional-image-generation", "tags:"):
        assert line in front_matter
    assert "license:" not in front_matter  # the checkpoint does not say, and a license is never guessed
    assert "custom_pipeline=" in card and "trust_remote_code=True" in card
    assert "PixelGenC2IPipeline.from_pretrained" in card and "2602.02493" in card


def test_summary_reports_parameters_architecture_defaults_dropped_keys_and_size(tmp_path, capsys):
    checkpoint, _, _ = write_lightning(tmp_path)
    convert_checkpoint(checkpoint, tmp_path / "out", config=upstream_c2i_yaml(tmp_path / "tiny.yaml"), verbose=True)
    summary = capsys.readouterr().out
    parameters = sum(value.numel() for value in upstream_c2i_state_dict().values()) - 16 * 32  # pos_embed: a buffer
    assert f"{parameters:,} parameters" in summary
    assert "hidden_size=32" in summary and "heun 3 steps, CFG 2.25" in summary
    assert "diffusion_trainer.* (6 tensors)" in summary and "denoiser.*" in summary
    assert "folder size" in summary and "verified" in summary


# ------------------------------------------------------------------------------------------------------ bad input
def _corrupt(tmp_path, kind):
    checkpoint, ema, online = write_lightning(tmp_path, "good.ckpt")
    path = tmp_path / "bad.ckpt"
    if kind == "truncated":
        path.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    elif kind == "junk":
        path.write_bytes(b"definitely not a checkpoint " * 20)
    elif kind == "random-bytes":
        noise = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        path.write_bytes(bytes([7]) + noise.numpy().tobytes())
    elif kind == "yaml":
        upstream_c2i_yaml(path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "foreign":
        torch.save({"encoder.layer.0.weight": torch.zeros(2)}, path)
    elif kind == "lightning-without-denoiser":
        torch.save({"state_dict": {"vae.encoder.weight": torch.zeros(2)}}, path)
    elif kind in ("missing", "unexpected", "misshapen"):
        if kind == "missing":
            del ema["blocks.1.mlp.w3.bias"]
        elif kind == "unexpected":
            ema["blocks.0.attn.rel_pos.weight"] = torch.zeros(4)
        else:
            ema["blocks.1.attn.qkv.weight"] = torch.zeros(64, 32)
        torch.save(upstream_lightning_checkpoint(ema, online), path)
    checkpoint.unlink()
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("truncated", "bad.ckpt is truncated or corrupt"),
        ("junk", r"bad.ckpt is not a PyTorch checkpoint \(neither a torch.save zip archive nor a pickle\)$"),
        ("random-bytes", r"bad.ckpt is not a PyTorch checkpoint \(neither a torch.save zip archive nor a pickle\)$"),
        ("yaml", "bad.ckpt is not a PyTorch checkpoint .* YAML config goes to --config"),
        ("empty", "is empty .* truncated or corrupt"),
        ("foreign", "not a PixelGen/JiT checkpoint"),
        ("lightning-without-denoiser", "no ema_denoiser.\\* weights .* vae"),
        ("missing", "missing weight keys: blocks.1.mlp.w3.bias$"),
        ("unexpected", "unexpected weight keys .*: blocks.0.attn.rel_pos.weight$"),
        ("misshapen", r"blocks.1.attn.qkv.weight has shape \(64, 32\), but the architecture needs \(96, 32\)"),
    ],
)
def test_bad_checkpoints_fail_with_one_line_and_leave_nothing(tmp_path, kind, message):
    path = _corrupt(tmp_path, kind)
    with pytest.raises(ConversionError, match=message) as error:
        convert_checkpoint(path, tmp_path / "out" / "model", in_context_start=1)
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt"]  # no output, no temporary folder


def test_missing_or_unreadable_source_fails_with_one_line(tmp_path):
    with pytest.raises(ConversionError, match="source checkpoint not found: .*nope.ckpt"):
        convert_checkpoint(tmp_path / "nope.ckpt", tmp_path / "out")
    (tmp_path / "folder.ckpt").mkdir()
    with pytest.raises(ConversionError, match="is not a file"):
        convert_checkpoint(tmp_path / "folder.ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unreadable_source_fails_with_one_line(tmp_path):
    path, _, _ = write_lightning(tmp_path)
    path.chmod(0)
    try:
        path.open("rb").close()
        pytest.skip("this user reads files whatever their permissions (root)")
    except PermissionError:
        pass
    with pytest.raises(ConversionError, match="cannot read source checkpoint .*tiny.ckpt: Permission denied") as error:
        convert_checkpoint(path, tmp_path / "out")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "yaml_overrides, message",
    [
        (
            {"hidden_size": 64},
            r"init_args.hidden_size says hidden_size=64, but the weights have hidden_size=32 \(pos_embed",
        ),
        ({"depth": 3}, "says depth=3, but the weights have depth=2"),
        ({"bottleneck_dim": 16}, "says bottleneck_dim=16, but the weights have bottleneck_dim=None"),
        ({"mlp_ratio": 3.0}, "says mlp_ratio=3.0 .* but the weights have width 85"),
        ({"input_size": 64}, "says sample_size=64, but the weights have sample_size=32"),
    ],
)
def test_yaml_that_contradicts_the_weights_is_an_error_naming_the_field(tmp_path, yaml_overrides, message):
    checkpoint, _, _ = write_lightning(tmp_path)
    config = upstream_c2i_yaml(tmp_path / "tiny.yaml", **yaml_overrides)
    with pytest.raises(ConversionError, match=message):
        convert_checkpoint(checkpoint, tmp_path / "out", config=config)
    assert not (tmp_path / "out").exists()


def test_yaml_of_another_model_class_is_rejected(tmp_path):
    checkpoint, _, _ = write_lightning(tmp_path)
    config = upstream_c2i_yaml(tmp_path / "tiny.yaml")
    config.write_text(config.read_text().replace("src.models.transformer.JiT.JiT", "src.models.transformer.DDT.DDT"))
    with pytest.raises(ConversionError, match="describes src.models.transformer.DDT.DDT"):
        convert_checkpoint(checkpoint, tmp_path / "out", config=config)


def test_existing_output_is_never_replaced_without_overwrite_and_only_after_success_with_it(tmp_path):
    checkpoint, ema, _ = write_lightning(tmp_path)
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(ModelFolderError, match="exists and is not empty; pass --overwrite"):
        convert_checkpoint(checkpoint, output, in_context_start=1)
    assert [path.name for path in output.iterdir()] == ["notes.txt"]

    # A conversion that fails with --overwrite leaves the old folder as it was.
    with pytest.raises(ConversionError):
        convert_checkpoint(checkpoint, output, in_context_start=1, overwrite=True, labels=tmp_path / "missing.txt")
    assert [path.name for path in output.iterdir()] == ["notes.txt"]

    convert_checkpoint(checkpoint, output, in_context_start=1, overwrite=True)
    assert not (output / "notes.txt").exists()
    assert_holds(output, ema)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "tiny.ckpt"]  # no temporary or backup left

    empty = tmp_path / "empty"
    empty.mkdir()
    convert_checkpoint(checkpoint, empty, in_context_start=1)  # an empty folder is fine without --overwrite
    assert (empty / "model_index.json").is_file()


# --------------------------------------------------------------------------------------------------- text-to-image
def write_t2i(tmp_path):
    ema, online = upstream_t2i_state_dict(seed=1), upstream_t2i_state_dict(seed=2)
    torch.save(upstream_lightning_checkpoint(ema, online), tmp_path / "PixelGen_T2I.ckpt")
    return tmp_path / "PixelGen_T2I.ckpt", ema


def test_t2i_architecture_from_shapes_equals_the_yaml_and_defaults_are_the_geneval_recipe(tmp_path):
    checkpoint, ema = write_t2i(tmp_path)
    from_shapes = convert_checkpoint(checkpoint, tmp_path / "shapes")
    with_yaml = convert_checkpoint(checkpoint, tmp_path / "yaml", config=upstream_t2i_yaml(tmp_path / "t2i.yaml"))
    configs = [json.loads((folder / "transformer/config.json").read_text()) for folder in (from_shapes, with_yaml)]
    assert configs[0] == configs[1]
    assert {key: configs[0][key] for key in TINY_T2I} == TINY_T2I
    stored = read_safetensors_folder(from_shapes / "transformer")
    assert set(stored) == {reference_t2i_name(key) for key in ema}
    assert all(torch.equal(stored[reference_t2i_name(key)], value) for key, value in ema.items())

    index = json.loads((from_shapes / "model_index.json").read_text())
    scheduler = json.loads((from_shapes / "scheduler/scheduler_config.json").read_text())
    assert index["_class_name"] == ["pipeline", "PixelGenT2IPipeline"]
    assert index["transformer"] == ["transformer_jit_t2i", "PixelGenT2ITransformer2DModel"]
    assert (scheduler["sampling_method"], scheduler["solver_order"], scheduler["timeshift"]) == ("adam_lm", 2, 3.0)
    recipe = [index[key] for key in ("num_inference_steps", "guidance_scale", "guidance_interval_min")]
    assert recipe + [index["guidance_interval_max"], index["noise_scale"]] == [25, 4.0, 0.0, 1.0, 1.0]
    assert index["text_encoder"] == [None, None] and index["tokenizer"] == [None, None]
    assert index["text_encoder_id"] == "Qwen/Qwen3-1.7B"
    metadata = json.loads((from_shapes / "conversion_metadata.json").read_text())
    assert (metadata["text_encoder"], metadata["text_encoder_included"], metadata["model_kind"]) == (
        "Qwen/Qwen3-1.7B", False, "t2i"
    )  # fmt: skip
    assert "text-to-image" in (from_shapes / "README.md").read_text().split("---")[1]

    config = upstream_t2i_yaml(tmp_path / "wrong.yaml", txt_max_length=16)
    with pytest.raises(ConversionError, match="txt_max_length says txt_max_length=16, but the weights have .*8"):
        convert_checkpoint(checkpoint, tmp_path / "wrong", config=config)


def test_t2i_text_encoder_and_tokenizer_from_a_local_folder_ship_in_the_folder_and_load(tmp_path):
    checkpoint, _ = write_t2i(tmp_path)
    text_encoder, tokenizer = tiny_qwen3(), tiny_qwen_tokenizer()
    text_encoder.save_pretrained(tmp_path / "qwen")
    tokenizer.save_pretrained(tmp_path / "qwen")
    folder = convert_checkpoint(checkpoint, tmp_path / "t2i", text_encoder=tmp_path / "qwen")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "Qwen3Model"]
    assert index["tokenizer"] == ["transformers", "Qwen2Tokenizer"]
    assert (folder / "text_encoder/model.safetensors").is_file() and (folder / "tokenizer/tokenizer.json").is_file()
    assert not list((folder / "tokenizer").glob("*.safetensors"))  # only tokenizer files in tokenizer/

    pipe = PixelGenT2IPipeline.from_pretrained(folder)
    expected = PixelGenT2IPipeline(pipe.transformer, pipe.scheduler, text_encoder, tokenizer)
    for embeds, reference in zip(pipe.encode_prompt("a red square"), expected.encode_prompt("a red square")):
        assert torch.equal(embeds, reference)


def test_t2i_text_encoder_hub_id_is_downloaded_and_recorded(tmp_path, monkeypatch):
    checkpoint, _ = write_t2i(tmp_path)
    tiny_qwen3().save_pretrained(tmp_path / "qwen")
    tiny_qwen_tokenizer().save_pretrained(tmp_path / "qwen")
    calls = []

    def fake_snapshot_download(**kwargs):
        calls.append(kwargs)
        return str(tmp_path / "qwen")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    folder = convert_checkpoint(checkpoint, tmp_path / "t2i", text_encoder="Qwen/Qwen3-0.6B")
    assert calls and all(call == {"repo_id": "Qwen/Qwen3-0.6B"} for call in calls)
    assert json.loads((folder / "model_index.json").read_text())["text_encoder_id"] == "Qwen/Qwen3-0.6B"
    metadata = json.loads((folder / "conversion_metadata.json").read_text())
    assert (metadata["text_encoder"], metadata["text_encoder_included"]) == ("Qwen/Qwen3-0.6B", True)


def test_options_of_the_other_model_kind_are_rejected(tmp_path):
    checkpoint, _ = write_t2i(tmp_path)
    (tmp_path / "labels.txt").write_text("a\n")
    with pytest.raises(ConversionError, match="--labels is for class-to-image models"):
        convert_checkpoint(checkpoint, tmp_path / "out", labels=tmp_path / "labels.txt")
    with pytest.raises(ConversionError, match="--tokenizer needs --text-encoder"):
        convert_checkpoint(checkpoint, tmp_path / "out", tokenizer="Qwen/Qwen3-1.7B")
    c2i, _, _ = write_lightning(tmp_path)
    with pytest.raises(ConversionError, match="--text-encoder/--tokenizer are for text-to-image models"):
        convert_checkpoint(c2i, tmp_path / "out", in_context_start=1, text_encoder="Qwen/Qwen3-1.7B")
    with pytest.raises(ConversionError, match="describes src.models.transformer.JiT_T2I.JiT_T2I.*holds a JiT.JiT"):
        convert_checkpoint(c2i, tmp_path / "out", config=upstream_t2i_yaml(tmp_path / "t2i.yaml"))


def test_a_failure_while_writing_removes_the_temporary_folder_and_created_parents(tmp_path):
    checkpoint, _ = write_t2i(tmp_path)
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen/config.json").write_text("{}")  # no weights: fails after the transformer has been written
    with pytest.raises(ModelFolderError, match="needs config.json and \\*.safetensors"):
        convert_checkpoint(checkpoint, tmp_path / "new/parents/out", text_encoder=tmp_path / "qwen")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["PixelGen_T2I.ckpt", "qwen"]
