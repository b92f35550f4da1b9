"""Behaving as diffusers users and the model card expect: class names, guidance semantics, pipeline reuse and
composition (from_pipe, save_pretrained, two-stage text encoding, fuse_qkv_projections, wrong-class loading)."""

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from components import (
    LAYOUT_TOLERANCE,
    TINY_T2I,
    tiny_c2i_pipeline,
    tiny_t2i_pipeline,
    tiny_transformer,
    upstream_c2i_state_dict,
    upstream_jit_checkpoint,
    upstream_lightning_checkpoint,
)
from diffusers.callbacks import PipelineCallback, SDCFGCutoffCallback
from diffusers.utils import logging as diffusers_logging
from diffusers.utils.testing_utils import CaptureLogger

from pixelgen_diffusers import (
    PixelGenC2IPipeline,
    PixelGenScheduler,
    PixelGenT2IPipeline,
    convert_checkpoint,
    export_pipeline,
    imagenet_id2label,
)


# ---------------------------------------------------------------------------------------------------- class names
@pytest.fixture(scope="module")
def imagenet_pipe():
    transformer = tiny_transformer(num_classes=1000, randomize=False)
    return PixelGenC2IPipeline(transformer, PixelGenScheduler(), id2label=imagenet_id2label())


def test_no_imagenet_name_silently_resolves_to_one_of_several_classes(imagenet_pipe):
    first_names, later_names = defaultdict(set), defaultdict(set)
    for class_id, names in imagenet_id2label().items():
        for position, name in enumerate(name.strip() for name in names.split(",")):
            (later_names if position else first_names)[name].add(class_id)
    shared = [name for name in {*first_names, *later_names} if len(first_names[name] | later_names[name]) > 1]
    assert len(shared) == 18  # the names ImageNet gives to several classes
    reachable = set()
    for name in {*first_names, *later_names}:
        # The rule: a class's first-listed name beats another class's later synonym; anything else shared raises.
        candidates = first_names[name] or later_names[name]
        if len(candidates) == 1:
            assert imagenet_pipe.get_label_ids(name) == list(candidates), name
            assert imagenet_pipe.labels[name] == next(iter(candidates))
            reachable |= candidates
        else:
            with pytest.raises(ValueError, match="ambiguous") as error:
                imagenet_pipe.get_label_ids(name)
            assert all(f"{class_id} (" in str(error.value) for class_id in candidates), name
            assert name not in imagenet_pipe.labels
    assert imagenet_pipe.get_label_ids(["harp", "partridge", "crayfish", "polecat"]) == [594, 86, 124, 358]
    with pytest.raises(ValueError, match=r"'crane' is ambiguous: it names classes 134 \(crane\); 517 \(crane\)"):
        imagenet_pipe.get_label_ids("crane")
    with pytest.raises(ValueError, match=r"387 \(lesser panda.*388 \(giant panda"):
        imagenet_pipe.get_label_ids("Panda")  # case-insensitive lookups follow the same rule
    assert len(reachable) > 990  # nearly every class is reachable by a name; every class by its id


def test_class_ids_as_tensors_and_arrays(imagenet_pipe):
    expected = [207, 1, 3]
    assert imagenet_pipe.get_label_ids(torch.tensor(expected)) == expected
    assert imagenet_pipe.get_label_ids(np.array(expected, dtype=np.int32)) == expected
    assert imagenet_pipe.get_label_ids(torch.tensor(5)) == [5]
    for wrong in (torch.tensor([[1, 2]]), torch.tensor([1.0]), np.array([True])):
        with pytest.raises(ValueError, match="integer class ids in at most one dimension"):
            imagenet_pipe.get_label_ids(wrong)
    with pytest.raises(ValueError, match="Class id 1000 is out of range"):
        imagenet_pipe.get_label_ids(torch.tensor([1000]))

    pipe = tiny_c2i_pipeline()
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    common = dict(num_inference_steps=2, latents=noise, output_type="latent")
    expected_images = pipe([3, 8], **common).images
    assert torch.equal(pipe(torch.tensor([3, 8]), **common).images, expected_images)
    assert torch.equal(pipe(np.array([3, 8]), **common).images, expected_images)


def test_the_null_class_is_reachable_by_name_for_unconditional_samples():
    pipe = tiny_c2i_pipeline()
    assert pipe.get_label_ids(["unconditional", "Unconditional"]) == [10, 10]
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: rows.append(args[2].tolist()))
    pipe("unconditional", num_inference_steps=2, guidance_scale=1.0, latents=noise, output_type="latent")
    assert rows == [[10]] * 3  # Heun, 2 steps: three evaluations of the null class alone


# ------------------------------------------------------------------------------------------------------- guidance
def _latents(pipe, condition, **kwargs):
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return pipe(condition, num_inference_steps=4, latents=noise, output_type="latent", **kwargs).images


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0])
def test_guidance_scale_at_most_one_samples_the_conditional_model_alone(scale):
    pipe = tiny_c2i_pipeline(sampling_method="euler")
    rows = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: rows.append(len(args[0])))
    conditional = _latents(pipe, 3, guidance_scale=scale)
    assert rows == [1] * 4 and not pipe.do_classifier_free_guidance
    rows.clear()
    guided = _latents(pipe, 3, guidance_scale=1.5)
    assert rows == [1] + [2] * 3 and pipe.do_classifier_free_guidance  # t = 0 is outside the interval (0, 1]
    assert not torch.allclose(conditional, guided)
    assert not torch.allclose(conditional, _latents(pipe, "unconditional", guidance_scale=1.0))


class CFGCutoff(PipelineCallback):
    """diffusers' CFG-cutoff callbacks without their SD-specific embedding edits: `pipe._guidance_scale = 0.0`."""

    tensor_inputs = []

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        if step_index == self.config.cutoff_step_index:
            pipeline._guidance_scale = 0.0
        return callback_kwargs


def test_cfg_cutoff_callback_continues_conditionally():
    pipe = tiny_c2i_pipeline(sampling_method="euler")
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    common = dict(num_inference_steps=4, latents=noise, output_type="latent", guidance_scale=3.0)
    cut = pipe(3, callback_on_step_end=CFGCutoff(cutoff_step_ratio=None, cutoff_step_index=1), **common).images

    # The same run written out: guided up to step 1 (t = 0 is outside the interval), then conditional alone.
    scheduler = pipe.scheduler
    scheduler.set_timesteps(4)
    latents, labels = noise.clone(), torch.tensor([3])
    for i, t in enumerate(scheduler.timesteps):
        velocity = scheduler.convert_model_output(pipe.transformer(latents, t[None], labels).sample, t, latents)
        if 0 < i <= 1:
            null = pipe.transformer(latents, t[None], torch.tensor([10])).sample
            velocity_uncond = scheduler.convert_model_output(null, t, latents)
            velocity = velocity_uncond + 3.0 * (velocity - velocity_uncond)
        latents = scheduler.step(velocity, t, latents).prev_sample
    torch.testing.assert_close(cut, latents, atol=1e-5, rtol=1e-5)


def test_stock_sd_cfg_cutoff_callback_works_on_text_to_image():
    pipe = tiny_t2i_pipeline(sampling_method="euler")
    rows = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: rows.append(len(args[0])))
    cutoff = SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=2)
    generator = torch.Generator().manual_seed(0)
    cut = pipe("a red cube", num_inference_steps=5, guidance_scale=4.0, callback_on_step_end=cutoff,
               generator=generator, output_type="pt").images  # fmt: skip
    assert rows == [1, 2, 2, 1, 1]  # t = 0 is outside the guidance interval; after the cutoff: conditional only
    full = pipe("a red cube", num_inference_steps=5, guidance_scale=4.0, generator=torch.Generator().manual_seed(0))
    assert cut.shape == (1, 3, 32, 32) and full.images[0].size == (32, 32)


# ----------------------------------------------------------------------------------------- reuse and composition
def test_from_pipe_gives_an_equivalent_pipeline_with_the_same_recipe_and_labels():
    pipe = tiny_c2i_pipeline(num_inference_steps=3, guidance_scale=2.0, guidance_interval_min=0.1)
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_warning()
    try:
        with CaptureLogger(logging.getLogger("diffusers.models.modeling_utils")) as captured:
            reused = PixelGenC2IPipeline.from_pipe(pipe)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    assert "should be kept in float32" not in captured.out  # diffusers' warning naming no module is dropped
    assert reused.transformer is pipe.transformer and reused.id2label == pipe.id2label
    assert dict(reused.config) == dict(pipe.config)
    assert torch.equal(_latents(reused, 3), _latents(pipe, 3))

    t2i = tiny_t2i_pipeline(num_inference_steps=3, guidance_scale=3.5)
    t2i_reused = PixelGenT2IPipeline.from_pipe(t2i)
    assert t2i_reused.text_encoder is t2i.text_encoder and dict(t2i_reused.config) == dict(t2i.config)


def test_two_stage_text_to_image_encodes_without_a_transformer(tmp_path):
    pipe = tiny_t2i_pipeline(num_inference_steps=3)
    pipe.save_pretrained(tmp_path / "model")
    expected = pipe("a red cube", generator=torch.Generator().manual_seed(0), output_type="pt").images

    encoder_only = PixelGenT2IPipeline.from_pretrained(tmp_path / "model", transformer=None)
    assert encoder_only.transformer is None
    prompt_embeds, negative_prompt_embeds = encoder_only.encode_prompt("a red cube")
    assert prompt_embeds.shape == (1, TINY_T2I["txt_max_length"], TINY_T2I["txt_embed_dim"])
    del encoder_only
    denoiser = PixelGenT2IPipeline.from_pretrained(tmp_path / "model", text_encoder=None, tokenizer=None)
    denoiser.set_progress_bar_config(disable=True)
    images = denoiser(
        prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative_prompt_embeds,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    torch.testing.assert_close(images, expected, **LAYOUT_TOLERANCE)


def test_fuse_qkv_projections_is_a_declared_no_op_on_pre_fused_attention():
    for pipe in (tiny_c2i_pipeline(), tiny_t2i_pipeline()):
        before = {name: parameter.clone() for name, parameter in pipe.transformer.named_parameters()}
        pipe.transformer.fuse_qkv_projections()
        pipe.transformer.unfuse_qkv_projections()
        after = dict(pipe.transformer.named_parameters())
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_loading_a_folder_with_the_wrong_pipeline_class_names_the_right_one(tmp_path):
    tiny_c2i_pipeline().save_pretrained(tmp_path / "c2i")
    tiny_t2i_pipeline().save_pretrained(tmp_path / "t2i")
    with pytest.raises(ValueError, match="holds a class-to-image PixelGen model: load it with PixelGenC2IPipeline"):
        PixelGenT2IPipeline.from_pretrained(tmp_path / "c2i")
    with pytest.raises(ValueError, match="holds a text-to-image PixelGen model: load it with PixelGenT2IPipeline"):
        PixelGenC2IPipeline.from_pretrained(tmp_path / "t2i")
    assert json.loads((tmp_path / "t2i/model_index.json").read_text())["txt_max_length"] == TINY_T2I["txt_max_length"]


# ------------------------------------------------------------------------------------------ conversion and cards
def test_jit_conversion_keeps_the_sampling_recipe_saved_with_the_checkpoint(tmp_path):
    weights = upstream_c2i_state_dict(seed=0, bottleneck_dim=16)
    args = argparse.Namespace(
        model="JiT-tiny/8", img_size=32, class_num=10, noise_scale=2.0, sampling_method="euler",
        num_sampling_steps=30, cfg=2.9, interval_min=0.1, interval_max=0.8,
    )  # fmt: skip
    torch.save(upstream_jit_checkpoint(weights, weights, weights, args=args), tmp_path / "checkpoint-last.pth")
    folder = convert_checkpoint(
        tmp_path / "checkpoint-last.pth", tmp_path / "out", in_context_start=1, allow_pickle=True
    )
    index = json.loads((folder / "model_index.json").read_text())
    recipe = {key: index[key] for key in ("num_inference_steps", "guidance_scale", "guidance_interval_min")}
    assert recipe == {"num_inference_steps": 30, "guidance_scale": 2.9, "guidance_interval_min": 0.1}
    assert (index["guidance_interval_max"], index["noise_scale"]) == (0.8, 2.0)
    scheduler = json.loads((folder / "scheduler/scheduler_config.json").read_text())
    assert (scheduler["sampling_method"], scheduler["timeshift"]) == ("euler", 1.0)
    metadata = json.loads((folder / "conversion_metadata.json").read_text())
    assert metadata["sampling_defaults_source"].endswith(
        "; sampling_method, num_sampling_steps, cfg, interval_min, interval_max, noise_scale from checkpoint args"
    )


def test_model_card_is_titled_by_the_folder_name_and_the_repository_is_mit_licensed(tmp_path):
    tiny_c2i_pipeline().save_pretrained(tmp_path / "saved")
    card = (export_pipeline(tmp_path / "saved", tmp_path / "My-PixelGen") / "README.md").read_text()
    assert "\n# My-PixelGen\n" in card and "--model My-PixelGen" in card
    checkpoint = tmp_path / "tiny.ckpt"
    torch.save(upstream_lightning_checkpoint(upstream_c2i_state_dict(), upstream_c2i_state_dict(seed=1)), checkpoint)
    converted = convert_checkpoint(checkpoint, tmp_path / "PixelGen-XL", in_context_start=1)
    card = (converted / "README.md").read_text()
    assert "\n# PixelGen-XL\n" in card and "Architecture: PixelGen-h32-d2-p8-32." in card

    license_text = (Path(__file__).parents[1] / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    assert 'license = "MIT"' in (Path(__file__).parents[1] / "pyproject.toml").read_text()
