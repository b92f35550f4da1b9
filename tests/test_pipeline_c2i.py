"""PixelGenC2IPipeline: sampling equals an independent reference sampler; the label API; the diffusers contract."""

import io

import numpy as np
import PIL.Image
import pytest
import torch
from components import LAYOUT_TOLERANCE, tiny_c2i_pipeline, tiny_transformer

from pixelgen_diffusers import PixelGenC2IPipeline, PixelGenScheduler, imagenet_id2label


def reference_sample(model, noise, labels, method, steps, shift, scale, low, high):
    """Upstream's samplers written out from the reference document: the guided batch is always [uncond, cond],
    guidance scale 1 outside the interval and for scales <= 1 (the model card's rule), time grid, 0.05 clamp, Heun
    with a final Euler step, AB2 on guided v."""
    u = torch.cat([torch.linspace(0, 1 - 1 / steps, steps), torch.tensor([1.0])])
    grid = u / (u + shift * (1 - u))
    null = torch.full_like(labels, model.config.num_classes)

    def velocity(x, t, guided):
        t_batch = t.repeat(2 * x.shape[0])
        x2 = torch.cat([x, x])
        x_hat = model(x2, t_batch, torch.cat([null, labels])).sample
        v = (x_hat - x2) / (1 - t_batch.view(-1, 1, 1, 1)).clamp_min(0.05)
        v_uncond, v_cond = v.chunk(2)
        return v_uncond + (scale if guided and scale > 1 else 1.0) * (v_cond - v_uncond)

    x = noise.clone()
    if method == "adam_lm":
        t, history = torch.zeros(()), []
        for i in range(steps):
            history.append(velocity(x, t, bool(low < t < high)))
            h = grid[i + 1] - grid[i]
            if i == 0:
                v = history[-1]
            else:
                r = h / (grid[i] - grid[i - 1])
                v = -r / 2 * history[-2] + (1 + r / 2) * history[-1]
            x = x + v * h
            t = t + h
        return x
    for i in range(steps):
        t, t_next = grid[i], grid[i + 1]
        guided = bool(low < t <= high)
        v = velocity(x, t, guided)
        if method == "heun" and i < steps - 1:
            x_pred = x + v * (t_next - t)
            v = (v + velocity(x_pred, t_next, guided)) / 2
        x = x + v * (t_next - t)
    return x


CASES = [
    ("heun", 6, 2.0, 2.25, 0.1, 0.9),
    ("heun", 5, 1.0, 1.0, 0.0, 1.0),
    ("euler", 8, 1.0, 3.0, 0.1, 1.0),
    ("euler", 6, 3.0, 1.0, 0.0, 1.0),
    ("adam_lm", 8, 3.0, 4.0, 0.0, 1.0),
    ("adam_lm", 7, 1.0, 1.0, 0.0, 1.0),
    ("euler", 5, 2.0, 0.0, 0.0, 1.0),  # guidance <= 1 does not guide: the conditional model alone
]


@pytest.mark.parametrize("method, steps, shift, scale, low, high", CASES)
def test_pipeline_equals_independent_reference_sampler(method, steps, shift, scale, low, high):
    pipe = tiny_c2i_pipeline()
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([3, 8])
    with torch.no_grad():
        expected = reference_sample(pipe.transformer, noise, labels, method, steps, shift, scale, low, high)
    result = pipe(
        [3, 8],
        num_inference_steps=steps,
        sampling_method=method,
        timeshift=shift,
        guidance_scale=scale,
        guidance_interval_min=low,
        guidance_interval_max=high,
        latents=noise,
        output_type="latent",
    ).images
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=1e-5)


def test_defaults_come_from_the_folder_config():
    pipe = tiny_c2i_pipeline(num_inference_steps=4, guidance_scale=2.0, guidance_interval_min=0.1, noise_scale=0.5)
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    implicit = pipe(1, latents=noise, output_type="latent").images
    explicit = pipe(
        1,
        num_inference_steps=4,
        guidance_scale=2.0,
        guidance_interval_min=0.1,
        guidance_interval_max=1.0,
        sampling_method="heun",
        timeshift=2.0,
        noise_scale=0.5,
        latents=noise,
        output_type="latent",
    ).images
    assert torch.equal(implicit, explicit)
    # noise_scale multiplies the given standard-normal latents
    assert not torch.equal(implicit, pipe(1, latents=noise, noise_scale=1.0, output_type="latent").images)


def _rows_per_call(pipe, **kwargs):
    rows = []
    handle = pipe.transformer.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    pipe(**kwargs)
    handle.remove()
    return rows


def test_xl_preset_evaluates_only_the_needed_rows():
    pipe = tiny_c2i_pipeline(guidance_scale=2.25, guidance_interval_min=0.1, guidance_interval_max=0.9)
    rows = _rows_per_call(pipe, class_labels=[1, 2], num_inference_steps=50, output_type="latent")
    assert len(rows) == 99  # Heun: 2N - 1 batched evaluations
    assert rows == [2] * 20 + [4] * 76 + [2] * 3  # unguided evaluations skip the null-class half


def test_no_guidance_evaluates_the_conditional_half_only():
    pipe = tiny_c2i_pipeline()
    rows = _rows_per_call(pipe, class_labels=[1, 2, 3], num_inference_steps=3, guidance_scale=1.0)
    assert rows == [3] * 5


def test_adam_lm_guides_every_step_but_the_first():
    pipe = tiny_c2i_pipeline(sampling_method="adam_lm", timeshift=3.0)
    rows = _rows_per_call(pipe, class_labels=[0], num_inference_steps=25, guidance_scale=4.0, output_type="latent")
    assert rows == [1] + [2] * 24


def test_label_api():
    pipe = tiny_c2i_pipeline()
    assert pipe.id2label[3] == "golden retriever, retriever"
    assert pipe.labels["retriever"] == 3 and pipe.labels["synonym 5"] == 5
    assert pipe.get_label_ids("golden retriever") == [3]  # a bare string works
    assert pipe.get_label_ids(["shape 1", 7, "Golden Retriever"]) == [1, 7, 3]


def test_imagenet_names_resolve_to_their_ids():
    transformer = tiny_transformer(num_classes=1000, randomize=False)
    pipe = PixelGenC2IPipeline(transformer, PixelGenScheduler(), id2label=imagenet_id2label())
    assert len(pipe.id2label) == 1000
    assert pipe.get_label_ids("golden retriever") == [207]
    assert pipe.get_label_ids(["tench", "Tinca tinca", 1]) == [0, 0, 1]
    with pytest.raises(ValueError, match="Did you mean 'golden retriever'"):
        pipe.get_label_ids("goldn retriever")


def test_id2label_survives_save_and_load(tmp_path):
    pipe = tiny_c2i_pipeline(guidance_scale=3.0)
    pipe.save_pretrained(tmp_path)
    reloaded = PixelGenC2IPipeline.from_pretrained(tmp_path)
    assert reloaded.id2label == pipe.id2label
    assert reloaded.config.guidance_scale == 3.0
    reloaded.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    before = pipe(2, num_inference_steps=3, generator=generator, output_type="latent").images
    after = reloaded(2, num_inference_steps=3, generator=generator.manual_seed(0), output_type="latent").images
    torch.testing.assert_close(before, after, **LAYOUT_TOLERANCE)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(class_labels="goldn retriever"),
            "Unknown class name 'goldn retriever'. Did you mean 'golden retriever'",
        ),
        (dict(class_labels=10), r"Class id 10 is out of range: ids must be in \[0, 10\)"),
        (dict(class_labels=-1), r"Class id -1 is out of range"),
        (dict(class_labels=1, height=64), "height must equal the model's sample_size \\(32\\), got 64"),
        (dict(class_labels=1, sampling_method="ddim"), "Unknown sampling_method 'ddim'; accepted: heun, euler"),
        (dict(class_labels=1, num_inference_steps=0), "num_inference_steps must be a positive integer"),
        (dict(class_labels=[1, 2], latents=torch.zeros(1, 3, 32, 32)), r"latents must have shape \(2, 3, 32, 32\)"),
        (dict(class_labels=[1, 2], generator=[torch.Generator()]), "Got a list of 1 generators for a batch of 2"),
        (dict(class_labels=1, output_type="jpg"), "Unknown output_type 'jpg'; accepted: pil, np, pt, latent"),
        (dict(class_labels=1.5), "A class label must be an int id or a class name"),
        (dict(class_labels=[]), "class_labels is empty"),
        (dict(class_labels=1, num_images_per_prompt=0), "num_images_per_prompt must be a positive integer"),
        (dict(class_labels=1, guidance_interval_min=0.9, guidance_interval_max=0.1), "must not exceed"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, message):
    pipe = tiny_c2i_pipeline()
    with pytest.raises(ValueError, match=message):
        pipe(num_inference_steps=kwargs.pop("num_inference_steps", 2), **kwargs)


def test_batch_with_generator_list_equals_single_runs():
    pipe = tiny_c2i_pipeline(guidance_scale=2.0)
    generators = [torch.Generator().manual_seed(seed) for seed in (10, 11, 12)]
    batch = pipe([1, 2, 3], num_inference_steps=3, generator=generators, output_type="latent").images
    for index, (label, seed) in enumerate(zip([1, 2, 3], (10, 11, 12))):
        single = pipe(
            label, num_inference_steps=3, generator=torch.Generator().manual_seed(seed), output_type="latent"
        )
        torch.testing.assert_close(batch[index : index + 1], single.images, atol=1e-5, rtol=1e-5)


def test_num_images_per_prompt_repeats_each_label():
    pipe = tiny_c2i_pipeline()
    rows = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: rows.append(args[2].tolist()))
    images = pipe([4, 6], num_images_per_prompt=3, num_inference_steps=2, output_type="np").images
    assert images.shape == (6, 32, 32, 3)
    assert rows[0] == [4, 4, 4, 6, 6, 6]


def test_output_types():
    pipe = tiny_c2i_pipeline()
    kwargs = dict(class_labels=[1, 2], num_inference_steps=2)
    raw = pipe(**kwargs, generator=torch.Generator().manual_seed(0), output_type="latent").images
    pt = pipe(**kwargs, generator=torch.Generator().manual_seed(0), output_type="pt").images
    array = pipe(**kwargs, generator=torch.Generator().manual_seed(0), output_type="np").images
    pil = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert raw.shape == pt.shape == (2, 3, 32, 32) and array.shape == (2, 32, 32, 3)
    assert raw.min() < -1 or raw.max() > 1  # the raw sample is not clamped
    torch.testing.assert_close(pt, ((raw + 1) / 2).clamp(0, 1))
    np.testing.assert_allclose(array, pt.permute(0, 2, 3, 1).numpy())
    assert isinstance(pil[0], PIL.Image.Image) and pil[0].size == (32, 32)
    expected_uint8 = np.clip((raw.permute(0, 2, 3, 1).numpy() + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.stack([np.asarray(image) for image in pil]), expected_uint8)


def test_return_dict_false_gives_a_tuple():
    pipe = tiny_c2i_pipeline()
    output = pipe(1, num_inference_steps=2, output_type="pt", return_dict=False)
    assert isinstance(output, tuple) and output[0].shape == (1, 3, 32, 32)


def test_callback_sees_every_evaluation_and_can_edit_latents():
    pipe = tiny_c2i_pipeline(guidance_scale=2.0)
    seen = []

    def callback(pipeline, index, timestep, tensors):
        seen.append((index, float(timestep), pipeline.guidance_scale))
        if index == pipeline.num_timesteps - 1:
            tensors["latents"] = torch.zeros_like(tensors["latents"])
        return tensors

    images = pipe(1, num_inference_steps=3, callback_on_step_end=callback, output_type="latent").images
    assert [index for index, _, _ in seen] == list(range(5))  # Heun, 3 steps: 5 evaluations
    assert seen[0][2] == 2.0
    assert torch.all(images == 0)
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs has"):
        pipe(1, num_inference_steps=2, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["noise"])


@pytest.mark.parametrize("sampling_method", ["heun", "euler", "adam_lm"])
def test_callback_sees_the_guided_clean_image_prediction_without_changing_the_samples(sampling_method):
    pipe = tiny_c2i_pipeline(sampling_method=sampling_method, timeshift=1.0, guidance_scale=2.5)
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    predictions = []

    def record(pipeline, index, timestep, tensors):
        predictions.append(tensors["pred_original_sample"].clone())
        return {}

    common = dict(num_inference_steps=4, latents=noise, output_type="latent")
    plain = pipe([1, 2], **common).images
    watched = pipe(
        [1, 2], callback_on_step_end=record, callback_on_step_end_tensor_inputs=["pred_original_sample"], **common
    ).images
    assert torch.equal(plain, watched)
    assert len(predictions) == pipe.num_timesteps and predictions[0].shape == (2, 3, 32, 32)
    assert predictions[0].dtype == torch.float32
    # The last evaluation (t = 3/4, Euler-like for every solver here) steps straight to the clean image it predicts,
    # guided: x_0 = x_t + (1 - t) v with v = (x_hat_u + w (x_hat_c - x_hat_u) - x_t) / (1 - t).
    if sampling_method != "adam_lm":  # Adams-Bashforth mixes in earlier velocities
        torch.testing.assert_close(predictions[-1], plain, atol=1e-5, rtol=0)
    # Early predictions are blurry guesses, far from the final sample; later ones converge to it.
    errors = [(prediction - plain).abs().mean().item() for prediction in predictions]
    assert errors[-1] < errors[0]


def test_callback_changing_guidance_scale_is_read_every_step():
    pipe = tiny_c2i_pipeline(sampling_method="euler")
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def bump(pipeline, index, timestep, tensors):
        pipeline._guidance_scale += 1.0
        return tensors

    bumped = pipe(1, num_inference_steps=3, guidance_scale=2.0, latents=noise, callback_on_step_end=bump)
    assert pipe.guidance_scale == 2.0 + 3
    assert bumped.images[0].size == (32, 32)


def test_progress_bar_counts_steps_not_evaluations():
    pipe = tiny_c2i_pipeline()
    stream = io.StringIO()
    pipe.set_progress_bar_config(file=stream, disable=False)
    pipe(1, num_inference_steps=4, output_type="latent")
    assert "4/4" in stream.getvalue()


def test_bfloat16_model_keeps_a_float32_sample_without_nan():
    pipe = tiny_c2i_pipeline(guidance_scale=2.0)
    pipe.transformer.to(torch.bfloat16)
    dtypes = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: dtypes.append(args[0].dtype))
    images = pipe([1, 2], num_inference_steps=3, output_type="latent").images
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    assert set(dtypes) == {torch.bfloat16}


def test_model_cpu_offload_and_group_offload_run_on_cpu():
    pipe = tiny_c2i_pipeline()
    expected = pipe(1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    pipe.enable_model_cpu_offload(device="cpu")
    offloaded = pipe(1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    torch.testing.assert_close(offloaded, expected)
    grouped = tiny_c2i_pipeline()
    grouped.transformer.enable_group_offload(torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1)
    images = grouped(1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    torch.testing.assert_close(images, expected)


def test_progress_bar_follows_a_per_call_sampler_override():
    pipe = tiny_c2i_pipeline(sampling_method="heun")
    stream = io.StringIO()
    pipe.set_progress_bar_config(file=stream, disable=False)
    pipe(1, num_inference_steps=6, sampling_method="euler", output_type="latent")
    assert "6/6" in stream.getvalue()
