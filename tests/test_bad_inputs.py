"""Bad input is a ValueError naming the argument, raised before any work, everywhere: both pipelines, the scheduler,
stored model folders (at load and at save_pretrained), the converter's YAML, the trainer's config, the loaders."""

import json

import numpy as np
import pytest
import torch
from components import tiny_c2i_pipeline, tiny_t2i_pipeline, upstream_c2i_yaml, upstream_lightning_checkpoint

from pixelgen_diffusers import PixelGenScheduler, convert_checkpoint, export_pipeline, load_pipeline
from pixelgen_diffusers.conversion.model_folder import ModelFolderError
from pixelgen_diffusers.training import TrainingConfig
from pixelgen_diffusers.training.trainer import build_transformer


NAN, INF = float("nan"), float("inf")

# (call arguments, the message's start): each names the argument and the value.
BAD_CALLS = [
    (dict(guidance_scale=NAN), r"guidance_scale must be a finite number in \[.*\], got nan"),
    (dict(guidance_scale=-INF), r"guidance_scale must be a finite number in \[-1000000.0, 1000000.0\], got -inf"),
    (dict(noise_scale=INF), r"noise_scale must be a finite number in \(0, 1000000.0\], got inf"),
    (dict(noise_scale=0.0), r"noise_scale must be a finite number in \(0, 1000000.0\], got 0.0"),
    (dict(timeshift=NAN), r"timeshift must be a finite number > 0, got nan"),
    (dict(guidance_interval_min=NAN), "guidance_interval_min must be a finite number, got nan"),
    (dict(guidance_interval_max=INF), "guidance_interval_max must be a finite number, got inf"),
    (dict(num_inference_steps=True), "num_inference_steps must be a positive integer, got True"),
    (dict(num_inference_steps=2.0), "num_inference_steps must be a positive integer, got 2.0"),
    (dict(num_images_per_prompt=True), "num_images_per_prompt must be a positive integer, got True"),
    (dict(solver_order=True), r"solver_order must be an integer in \[1, 4\], got True"),
    (dict(generator="abc"), "generator must be a torch.Generator or a list of them, got str: 'abc'"),
    (dict(generator=[torch.Generator(), 3]), "generator must be a torch.Generator .* got int: 3"),
    (dict(latents=np.zeros((1, 3, 32, 32), np.float32)), "latents must be a torch.Tensor, got ndarray"),
    (dict(latents=torch.zeros(1, 3, 32, 32, device="meta")), "latents must be a floating-point tensor with data"),
    (dict(latents=torch.full((1, 3, 32, 32), NAN)), "latents holds NaN or infinite values"),
    (dict(height=0), r"height must equal the model's sample_size \(32\), got 0"),
    (dict(width=32.0), r"width must equal the model's sample_size \(32\), got 32.0"),
    (dict(sampling_method=""), "Unknown sampling_method ''; accepted: heun, euler, adam_lm"),
]


def _count_forward_calls(pipe) -> list:
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


@pytest.mark.parametrize("kind", ["c2i", "t2i"])
@pytest.mark.parametrize("kwargs, message", BAD_CALLS, ids=[message[:40] for _, message in BAD_CALLS])
def test_both_pipelines_refuse_bad_numbers_and_types_before_any_work(kind, kwargs, message):
    pipe = tiny_c2i_pipeline() if kind == "c2i" else tiny_t2i_pipeline()
    condition = {"class_labels": 1} if kind == "c2i" else {"prompt": "a red square"}
    calls = _count_forward_calls(pipe)
    encoder_calls = []
    if kind == "t2i":
        pipe.text_encoder.register_forward_pre_hook(lambda module, args: encoder_calls.append(1))
    with pytest.raises(ValueError, match=message):
        pipe(**condition, **{"num_inference_steps": 2, **kwargs})
    assert calls == [] and encoder_calls == []  # refused before the text encoder or the transformer ran


def _t2i_embeds(pipe, fill=0.0):
    return torch.full((1, *pipe._text_shape()), fill)


@pytest.mark.parametrize(
    "make_kwargs, message",
    [
        (lambda p: dict(prompt_embeds=_t2i_embeds(p, NAN)), "prompt_embeds holds NaN or infinite values"),
        (lambda p: dict(prompt_embeds=_t2i_embeds(p, INF)), "prompt_embeds holds NaN or infinite values"),
        (
            lambda p: dict(prompt_embeds=_t2i_embeds(p), negative_prompt_embeds=_t2i_embeds(p, -INF)),
            "negative_prompt_embeds holds NaN or infinite values",
        ),
        (
            lambda p: dict(prompt_embeds=_t2i_embeds(p).long()),
            "prompt_embeds must be a floating-point tensor, got dtype torch.int64",
        ),
        (lambda p: dict(prompt=123), "prompt must be a string or a list of strings, got int 123"),
        (lambda p: dict(prompt=b"a red star"), "prompt must be a string or a list of strings, got bytes b'a red"),
        (lambda p: dict(prompt=["a", 5]), "prompt must be a string or a list of strings, got an item of type int: 5"),
        (
            lambda p: dict(prompt="a", negative_prompt=5),
            "negative_prompt must be a string or a list of strings, got int 5",
        ),
        (
            lambda p: dict(prompt="a", negative_prompt=b"x"),
            "negative_prompt must be a string or a list of strings, got bytes",
        ),
    ],
)
def test_t2i_refuses_non_finite_embeddings_and_wrong_prompt_types_before_any_work(make_kwargs, message):
    pipe = tiny_t2i_pipeline()
    calls = _count_forward_calls(pipe)
    encoder_calls = []
    pipe.text_encoder.register_forward_pre_hook(lambda module, args: encoder_calls.append(1))
    with pytest.raises(ValueError, match=message):
        pipe(**make_kwargs(pipe), num_inference_steps=2)
    assert calls == [] and encoder_calls == []


def test_t2i_encode_prompt_names_a_wrong_negative_prompt_type():
    with pytest.raises(ValueError, match="negative_prompt must be a string or a list of strings, got int 5"):
        tiny_t2i_pipeline().encode_prompt("a", negative_prompt=5)


@pytest.mark.parametrize("kind", ["c2i", "t2i"])
def test_a_callback_that_returns_no_dict_is_named(kind):
    pipe = tiny_c2i_pipeline() if kind == "c2i" else tiny_t2i_pipeline()
    condition = {"class_labels": 1} if kind == "c2i" else {"prompt": "a red square"}
    with pytest.raises(ValueError, match="callback_on_step_end must return a dict .* got NoneType"):
        pipe(**condition, num_inference_steps=2, callback_on_step_end=lambda *args: None)


def test_numpy_integers_and_explicit_sizes_are_still_accepted():
    pipe = tiny_c2i_pipeline()
    image = pipe(np.int64(1), num_inference_steps=np.int64(2), height=32, width=32, output_type="np").images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(timeshift=NAN), r"timeshift must be a finite number > 0, got nan"),
        (dict(timeshift=-1.0), r"timeshift must be a finite number > 0, got -1.0"),
        (dict(t_eps=0.0), r"t_eps must be a finite number in \(0, 1\], got 0.0"),
        (dict(solver_order=True), r"solver_order must be an integer in \[1, 4\], got True"),
    ],
)
def test_scheduler_configs_are_checked_when_built_or_loaded(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PixelGenScheduler(**kwargs)


def test_scheduler_set_timesteps_checks_its_overrides():
    scheduler = PixelGenScheduler()
    with pytest.raises(ValueError, match="num_inference_steps must be a positive integer, got True"):
        scheduler.set_timesteps(True)
    with pytest.raises(ValueError, match="Unknown sampling_method ''"):
        scheduler.set_timesteps(4, sampling_method="")
    with pytest.raises(ValueError, match="guidance_interval_min must be a finite number, got nan"):
        scheduler.set_timesteps(4)
        scheduler.guidance_mask(NAN, 1.0)


# ---------------------------------------------------------------------------------------------- stored model folders
@pytest.mark.parametrize(
    "component, field, value, message",
    [
        ("model_index.json", "guidance_scale", NAN, r"guidance_scale must be a finite number in \[.*\], got nan"),
        ("model_index.json", "num_inference_steps", 0, "num_inference_steps must be a positive integer, got 0"),
        ("model_index.json", "guidance_interval_min", 0.9, r"guidance_interval_min \(0.9\) must not exceed"),
        ("scheduler/scheduler_config.json", "timeshift", -2.0, "timeshift must be a finite number > 0, got -2.0"),
        ("transformer/config.json", "hidden_size", "abc", "hidden_size must be a positive integer, got 'abc'"),
        ("transformer/config.json", "depth", 4.5, "depth must be a positive integer, got 4.5"),
        ("transformer/config.json", "num_heads", -2, "num_heads must be a positive integer, got -2"),
    ],
)
def test_a_model_folder_with_a_bad_stored_value_is_refused_at_load_naming_it(
    tmp_path, component, field, value, message
):
    tiny_c2i_pipeline(guidance_interval_max=0.5).save_pretrained(tmp_path / "model")
    path = tmp_path / "model" / component
    config = json.loads(path.read_text())
    config[field] = value
    path.write_text(json.dumps(config))  # json writes NaN as `NaN`, which json (and diffusers) read back
    with pytest.raises(ModelFolderError, match=f"cannot load {tmp_path / 'model'}: .*{message}"):
        load_pipeline(tmp_path / "model")


def test_model_index_that_is_not_an_object_and_weights_lacking_a_tensor_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    tiny_c2i_pipeline().save_pretrained(tmp_path / "model")
    index = tmp_path / "model" / "model_index.json"
    saved = index.read_text()
    index.write_text("[1, 2]")
    with pytest.raises(ModelFolderError, match="model_index.json must hold a JSON object, got a list"):
        load_pipeline(tmp_path / "model")
    index.write_text(saved)
    weights = tmp_path / "model" / "transformer" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    del tensors["class_embedder.weight"]
    save_file(tensors, weights)
    with pytest.raises(ModelFolderError, match=r"transformer weights lack 1 tensor\(s\) \(class_embedder.weight\)"):
        load_pipeline(tmp_path / "model")


@pytest.mark.parametrize("kind", ["c2i", "t2i"])
def test_save_pretrained_refuses_a_config_that_would_make_the_folder_unusable(tmp_path, kind):
    pipe = tiny_c2i_pipeline() if kind == "c2i" else tiny_t2i_pipeline()
    pipe.register_to_config(guidance_scale=NAN)
    with pytest.raises(ValueError, match=r"guidance_scale must be a finite number in \[.*\], got nan"):
        pipe.save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match=r"guidance_scale must be a finite number in \[.*\], got nan"):
        export_pipeline(pipe, tmp_path / "exported")
    assert not list(tmp_path.iterdir())  # nothing written


def test_pipelines_refuse_bad_defaults_when_built():
    with pytest.raises(ValueError, match=r"noise_scale must be a finite number in \(0, 1000000.0\], got inf"):
        tiny_c2i_pipeline(noise_scale=INF)
    with pytest.raises(ValueError, match="guidance_interval_max must be a finite number, got nan"):
        tiny_t2i_pipeline(guidance_interval_max=NAN)


@pytest.mark.parametrize(
    "sampler_args, message",
    [
        ("num_steps: 3\n      guidance: .nan", r"guidance_scale must be a finite number in \[.*\], got nan"),
        ("num_steps: 0\n      guidance: 2.0", "num_inference_steps must be a positive integer, got 0"),
        ("num_steps: 3\n      timeshift: -1.0", "timeshift must be a finite number > 0, got -1.0"),
        ("num_steps: 3\n      timeshift: .inf", "timeshift must be a finite number > 0, got inf"),
        ("num_steps: 3\n      guidance_interval_min: 0.9\n      guidance_interval_max: 0.1", "must not exceed"),
        ("num_steps: abc", "diffusion_sampler num_steps must be an integer, got 'abc'"),
    ],
)
def test_the_converter_refuses_a_yaml_recipe_that_would_draw_black_images(tmp_path, sampler_args, message):
    checkpoint = tmp_path / "model.ckpt"
    from components import upstream_c2i_state_dict

    ema = upstream_c2i_state_dict(seed=0)
    torch.save(upstream_lightning_checkpoint(ema, ema), checkpoint)
    upstream_c2i_yaml(tmp_path / "config.yaml", sampler_args=sampler_args)
    with pytest.raises(ModelFolderError, match=message):
        convert_checkpoint(checkpoint, tmp_path / "out", config=tmp_path / "config.yaml")
    assert not (tmp_path / "out").exists()


def test_the_converter_refuses_a_yaml_whose_model_is_not_a_mapping(tmp_path):
    from components import upstream_c2i_state_dict

    ema = upstream_c2i_state_dict(seed=0)
    torch.save(upstream_lightning_checkpoint(ema, ema), tmp_path / "model.ckpt")
    (tmp_path / "config.yaml").write_text("model: 5\n")
    with pytest.raises(ModelFolderError, match="is not a PixelGen config: it has no model.denoiser.class_path"):
        convert_checkpoint(tmp_path / "model.ckpt", tmp_path / "out", config=tmp_path / "config.yaml")


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda tmp: load_pipeline(None),
            "the model must be a folder, owner/repo or owner/repo/subfolder, got NoneType",
        ),
        (lambda tmp: convert_checkpoint(None, tmp / "out"), "source must be a file or folder path, got NoneType"),
        (lambda tmp: export_pipeline(None, tmp / "out"), "source must be a folder or a pipeline, got NoneType"),
    ],
)
def test_loaders_name_a_wrong_argument_type(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path)


# ------------------------------------------------------------------------------------------------------ the trainer
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("learning_rate", INF, r"learning_rate \(--learning-rate\) must be a finite number > 0, got inf"),
        ("max_grad_norm", NAN, r"max_grad_norm \(--max-grad-norm\) must be a finite number >= 0, got nan"),
        ("sample_size", 0, r"sample_size \(--sample-size\) must be a positive integer, got 0"),
        ("checkpoints_total_limit", -1, r"checkpoints_total_limit \(--checkpoints-total-limit\) must be a positive"),
        ("checkpoints_total_limit", 0, r"checkpoints_total_limit \(--checkpoints-total-limit\) must be a positive"),
        ("guidance_scale", NAN, r"guidance_scale \(--guidance-scale\) must be a finite number, got nan"),
        (
            "guidance_interval_min",
            INF,
            r"guidance_interval_min \(--guidance-interval-min\) must be a finite number, got inf",
        ),
        ("ema_decay", 1.5, r"ema_decay values must be numbers in \[0, 1\), got 1.5"),
        ("adam_beta2", 1.0, "adam_beta1 and adam_beta2 must be below 1"),
        ("p_std", 0.0, r"p_std \(--p-std\) must be a finite number > 0"),
        ("sampling_timeshift", NAN, r"sampling_timeshift \(--sampling-timeshift\) must be a finite number > 0"),
        ("batch_size", True, r"batch_size \(--batch-size\) must be a positive integer, got True"),
        ("model_config", {"unknown_key": 1}, "model_config has 'unknown_key', which is not a PixelGenTransformer2D"),
        ("model_config", {"hidden_sise": 64}, "model_config has 'hidden_sise' .did you mean 'hidden_size'.."),
        (
            "model_config",
            {"depth": 2, "in_context_start": 5},
            r"in_context_start \(5\) must be in \[0, depth=2\): set in_context_start",
        ),
    ],
)
def test_training_config_refuses_bad_values_naming_the_flag(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(data_dir=str(tmp_path), output_dir=str(tmp_path / "run"), **{field: value})


def test_the_documented_model_config_examples_build():
    import re
    import shlex
    from pathlib import Path

    docs = "\n".join(page.read_text() for page in sorted((Path(__file__).parents[1] / "docs").rglob("*.md")))
    examples = re.findall(r"pixelgen train [^\n]*(?:\\\n[^\n]*)*--model-config ('[^']*')", docs)
    assert examples
    for example in examples:
        model_config = json.loads(shlex.split(example)[0])
        config = TrainingConfig(data_dir="d", output_dir="o", sample_size=64, model_config=model_config)
        model_type = "t2i" if "num_text_blocks" in model_config or "txt_max_length" in model_config else "c2i"
        with torch.device("meta"):
            model = build_transformer(
                config, model_type, {i: str(i) for i in range(10)} if model_type == "c2i" else None
            )
        assert model.config.depth == model_config["depth"]
