"""What a step-end callback returns is checked as strictly as the call's inputs; numbers that would overflow float32
arithmetic are refused up front, and a sample that still ends non-finite is an error, never a black image. Also the
text-to-image API's own inputs: meta-device embeddings, unencodable prompts, prompts longer than the model reads."""

import math

import pytest
import torch
from components import tiny_c2i_pipeline, tiny_t2i_pipeline
from diffusers.callbacks import SDCFGCutoffCallback


PIPELINES = {
    "c2i": (tiny_c2i_pipeline, dict(class_labels=[1, 2])),
    "t2i": (tiny_t2i_pipeline, dict(prompt=["a red square", "a blue circle"])),
}


def run(pipe, inputs, **kwargs):
    settings = dict(num_inference_steps=3, guidance_scale=2.0, output_type="pt")
    return pipe(**inputs, **{**settings, **kwargs}, generator=torch.Generator().manual_seed(0)).images


def test_sd_cfg_cutoff_callback_with_two_prompts_is_refused_not_broadcast():
    """SDCFGCutoffCallback returns `prompt_embeds[-1:]`, one row: broadcast, image 0 would follow prompt 2."""
    pipe = tiny_t2i_pipeline()
    callback = SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=1)
    with pytest.raises(ValueError, match=r"callback_on_step_end returned prompt_embeds of shape \(1, 8, 24\)"):
        run(pipe, PIPELINES["t2i"][1], callback_on_step_end=callback)
    images = run(pipe, dict(prompt="a red square"), callback_on_step_end=callback)  # one prompt: one row, fine
    assert torch.isfinite(images).all()


@pytest.mark.parametrize("model", PIPELINES)
@pytest.mark.parametrize(
    "returned, message",
    [
        (lambda latents: latents * math.nan, "latents holds NaN or infinite values"),
        (lambda latents: latents[:1], r"latents of shape \(1, 3, 32, 32\)"),
        (lambda latents: latents.double(), "latents of dtype torch.float64"),
    ],
    ids=["nan", "batch", "dtype"],
)
def test_latents_returned_by_a_callback_are_checked(model, returned, message):
    make_pipeline, inputs = PIPELINES[model]
    pipe = make_pipeline()

    def callback(pipe, i, t, callback_kwargs):
        return {"latents": returned(callback_kwargs["latents"])} if i == 1 else {}

    with pytest.raises(ValueError, match=f"callback_on_step_end returned {message}"):
        run(pipe, inputs, callback_on_step_end=callback)


@pytest.mark.parametrize("model", PIPELINES)
def test_a_sample_that_ends_non_finite_is_an_error_not_a_black_image(model):
    """Finite but huge latents from a callback (3e38, float32's max is 3.4e38) overflow in the next step's velocity:
    the run raises instead of returning NaN."""
    make_pipeline, inputs = PIPELINES[model]
    pipe = make_pipeline()

    def callback(pipe, i, t, callback_kwargs):
        return {"latents": torch.full_like(callback_kwargs["latents"], 3e38)} if i == 0 else {}

    with pytest.raises(ValueError, match="non-finite"):
        run(pipe, inputs, callback_on_step_end=callback)


@pytest.mark.parametrize("model", PIPELINES)
@pytest.mark.parametrize(
    "argument, value",
    [("guidance_scale", 1e308), ("noise_scale", 1e308), ("timeshift", 1e308), ("timeshift", 1e-300)],
)
def test_numbers_that_overflow_float32_are_refused_before_any_work(model, argument, value):
    make_pipeline, inputs = PIPELINES[model]
    pipe = make_pipeline()
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: calls.append(1))
    with pytest.raises(ValueError, match=argument):
        run(pipe, inputs, **{argument: value})
    assert not calls


def test_meta_device_embeddings_are_a_value_error():
    pipe = tiny_t2i_pipeline()
    embeds = torch.empty(1, 8, 24, device="meta")
    with pytest.raises(ValueError, match="prompt_embeds.*meta"):
        run(pipe, {}, prompt_embeds=embeds, negative_prompt_embeds=torch.zeros(1, 8, 24))
    with pytest.raises(ValueError, match="negative_prompt_embeds.*meta"):
        run(pipe, {}, prompt_embeds=torch.zeros(1, 8, 24), negative_prompt_embeds=embeds)


def test_a_prompt_with_a_lone_surrogate_is_a_value_error():
    pipe = tiny_t2i_pipeline()
    with pytest.raises(ValueError, match=r"prompt\[1\].*surrogate"):
        run(pipe, dict(prompt=["fine", "bad \ud800 text"]))
    with pytest.raises(ValueError, match="negative_prompt.*surrogate"):
        run(pipe, dict(prompt="fine"), negative_prompt="\udfff")


def test_a_prompt_longer_than_the_model_reads_is_cut_with_a_warning(caplog):
    pipe = tiny_t2i_pipeline()  # txt_max_length 8, one token per byte
    with caplog.at_level("WARNING"):
        run(pipe, dict(prompt=["short", "a prompt of 24 characters"]))
    assert "prompt[1]" in caplog.text and "cut to txt_max_length=8" in caplog.text and "prompt[0]" not in caplog.text
