"""The editing pipelines on the bundled demo models: exact known pixels, the limits (strength 0, strength 1 with an
all-white mask), Euler at eta 0 as diffusers' re-noising inpainting loop, bad input, `from_pipe`, and the editing
scores of docs/editing.md on a few images."""

import numpy as np
import PIL.Image
import pytest
import torch
from components import LAYOUT_TOLERANCE

from pixelgen_diffusers import (
    PixelGenC2IImg2ImgPipeline,
    PixelGenC2IInpaintPipeline,
    PixelGenC2IPipeline,
    PixelGenT2IImg2ImgPipeline,
    PixelGenT2IInpaintPipeline,
    PixelGenT2IPipeline,
)
from pixelgen_diffusers.demo import model_dir, t2i_model_dir
from pixelgen_diffusers.evaluation import demo_edit


@pytest.fixture(scope="module")
def c2i():
    pipe = PixelGenC2IPipeline.from_pretrained(model_dir())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def inpaint(c2i):
    pipe = PixelGenC2IInpaintPipeline.from_pipe(c2i)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def img2img(c2i):
    pipe = PixelGenC2IImg2ImgPipeline.from_pipe(c2i)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def real():
    images, labels = demo_edit.real_shapes(4)
    return images.numpy(), labels.tolist()


def generators(count=4, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


CENTRE = demo_edit.make_mask("centre")


def test_from_pipe_shares_the_weights_and_the_recipe(c2i, inpaint, img2img):
    for pipe in (inpaint, img2img):
        assert pipe.transformer is c2i.transformer and pipe.scheduler is c2i.scheduler
        assert dict(pipe.config.id2label) == dict(c2i.config.id2label)
        assert pipe.config.guidance_scale == c2i.config.guidance_scale == 3.0


@pytest.mark.parametrize("sampling_method", ["euler", "heun", "adam_lm"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_known_pixels_come_back_bit_exact_in_uint8_and_float(inpaint, real, sampling_method, eta):
    images, labels = real
    options = dict(sampling_method=sampling_method, num_inference_steps=4, eta=eta, mask_image=CENTRE)
    known = CENTRE == 0
    pil = inpaint(labels, image=list(images), generator=generators(), **options).images
    pil = np.stack([np.asarray(image) for image in pil])
    assert np.array_equal(pil[:, known], images[:, known])
    assert not np.array_equal(pil[:, ~known], images[:, ~known])
    floats = (images.astype(np.float32) + 0.3) / 256  # not on the 8-bit grid
    out = inpaint(labels, image=list(floats), generator=generators(), output_type="np", **options).images
    assert out.dtype == np.float32 and np.array_equal(out[:, known], floats[:, known])
    tensors = torch.from_numpy(floats).permute(0, 3, 1, 2)
    out = inpaint(labels, image=tensors, generator=generators(), output_type="pt", **options).images
    assert torch.equal(out[:, :, torch.from_numpy(known)], tensors[:, :, torch.from_numpy(known)])


def test_strength_zero_returns_the_input_bit_for_bit(img2img, inpaint, real):
    images, labels = real
    pil = img2img(labels, image=[PIL.Image.fromarray(image) for image in images], strength=0.0).images
    assert np.array_equal(np.stack([np.asarray(image) for image in pil]), images)
    floats = np.random.default_rng(0).random(images.shape, dtype=np.float32)
    assert np.array_equal(img2img(labels, image=floats, strength=0.0, output_type="np").images, floats)
    out = inpaint(labels, image=floats, mask_image=CENTRE, strength=0.0, output_type="np").images
    assert np.array_equal(out, floats)


def test_strength_one_eta_zero_and_a_white_mask_equal_plain_generation(c2i, inpaint, real):
    images, labels = real
    plain = c2i(labels, generator=generators(), output_type="np").images
    white = np.full(CENTRE.shape, 255, dtype=np.uint8)
    edited = inpaint(labels, image=list(images), mask_image=white, eta=0.0, generator=generators(), output_type="np")
    assert np.array_equal(edited.images, plain)


def test_euler_at_eta_zero_is_diffusers_renoising_inpainting_loop(c2i, inpaint, real):
    """diffusers' loop: after every step, the known pixels are reset to the input noised to the next time with the
    same noise, x = t' * y + (1 - t') * eps; then the known pixels are pasted."""
    images, labels = real
    y = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    known = torch.from_numpy(CENTRE == 0)
    grid = c2i.scheduler.time_grid(10, 1.0)

    def renoise_known(pipe, i, t, callback_kwargs):
        latents = callback_kwargs["latents"].clone()
        latents[:, :, known] = (grid[i + 1] * y + (1 - grid[i + 1]) * noise)[:, :, known]
        return {"latents": latents}

    expected = c2i(labels, latents=noise, output_type="latent", callback_on_step_end=renoise_known).images
    expected[:, :, known] = y[:, :, known]
    edited = inpaint(labels, image=list(images), mask_image=CENTRE, eta=0.0, latents=noise, output_type="latent")
    torch.testing.assert_close(edited.images, expected, **LAYOUT_TOLERANCE)


def test_heun_at_eta_zero_is_heuns_step_on_the_projected_prediction(c2i, inpaint, real):
    """An independent Heun loop (reference section 4's update, the 0.05 clamp, guidance decided at the step's
    start) on x_hat_p = k * y + m * x_hat, from the strength's grid point."""
    images, labels = real
    y = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(4))
    known = torch.from_numpy(CENTRE == 0)
    class_labels, null = torch.tensor(labels), torch.full((len(labels),), c2i.transformer.null_class_id)
    steps, strength, scale = 5, 0.6, c2i.config.guidance_scale
    grid = torch.cat([torch.linspace(0, 1 - 1 / steps, steps), torch.ones(1)])

    def velocity(x, t, guided):
        with torch.no_grad():
            x_hat = c2i.transformer(torch.cat([x, x]), t.repeat(2 * len(x)), torch.cat([null, class_labels])).sample
        x_hat = torch.where(known, torch.cat([y, y]), x_hat)
        v_uncond, v_cond = ((x_hat - torch.cat([x, x])) / (1 - t).clamp_min(0.05)).chunk(2)
        return v_uncond + (scale if guided else 1.0) * (v_cond - v_uncond)

    start = int(steps - steps * strength)
    x = grid[start] * y + (1 - grid[start]) * noise
    for i in range(start, steps):
        t, t_next = grid[i], grid[i + 1]
        v = velocity(x, t, bool(t > 0))
        if i < steps - 1:
            v = (v + velocity(x + v * (t_next - t), t_next, bool(t > 0))) / 2
        x = x + v * (t_next - t)
    x = torch.where(known, y, x)
    edited = inpaint(
        labels, image=list(images), mask_image=CENTRE, strength=strength, eta=0.0, latents=noise,
        sampling_method="heun", num_inference_steps=steps, output_type="latent",
    )  # fmt: skip
    torch.testing.assert_close(edited.images, x, **LAYOUT_TOLERANCE)


def test_callbacks_see_the_projected_prediction_and_may_change_the_sample(inpaint, real):
    images, labels = real
    y = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    known = torch.from_numpy(CENTRE == 0)
    seen = []

    def callback(pipe, i, t, callback_kwargs):
        seen.append(i)
        assert set(callback_kwargs) == {"latents", "pred_original_sample"}
        assert torch.equal(callback_kwargs["pred_original_sample"][:, :, known], y[:, :, known])
        return {}

    inpaint(
        labels, image=list(images), mask_image=CENTRE, num_inference_steps=3, callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "pred_original_sample"], generator=generators(),
    )  # fmt: skip
    assert seen == [0, 1, 2]


def test_img2img_starts_at_the_strengths_grid_point(img2img, real):
    images, labels = real
    calls = []
    hook = img2img.transformer.register_forward_pre_hook(lambda module, args: calls.append(float(args[1][0])))
    try:
        img2img(labels, image=list(images), strength=0.4, sampling_method="heun", num_inference_steps=5)
    finally:
        hook.remove()
    grid = img2img.scheduler.time_grid(5, 1.0)
    # 5 * 0.4 = 2 steps kept: Heun evaluates step 3 (predictor and corrector) and the final Euler step 4.
    assert calls == pytest.approx([float(grid[3]), float(grid[4]), float(grid[4])])


def test_per_pixel_strength_keeps_a_pixel_until_its_own_start(inpaint, real):
    images, labels = real
    soft = np.zeros(CENTRE.shape, dtype=np.float32)
    soft[:, 16:] = 0.3  # strength 0.3: free only in the last 3 of 10 steps
    soft[8:24, 8:24] = 1.0
    out = inpaint(labels, image=list(images), mask_image=soft, generator=generators(), output_type="np").images
    floats = images.astype(np.float32) / 255
    assert np.array_equal(out[:, soft == 0], floats[:, soft == 0])
    change = np.abs(out - floats).mean(axis=(0, 3))
    assert change[soft == 1.0].mean() > change[soft == 0.3].mean() > 0


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(mask_image=np.ones((16, 16), dtype=np.float32)), "mask_image must be 32x32"),
        (dict(mask_image=np.full((32, 32), np.nan, dtype=np.float32)), "mask_image holds NaN"),
        (dict(mask_image=np.zeros((32, 32), dtype=np.float32)), "mask_image has no pixel to repaint"),
        (dict(mask_image=CENTRE, image=np.full((32, 32, 3), 2.0, dtype=np.float32)), "image must hold values"),
        (dict(mask_image=CENTRE, image=PIL.Image.new("RGBA", (32, 32))), "image must be a PIL image of mode RGB"),
        (dict(mask_image=CENTRE, strength=1.5), "strength must be"),
        (dict(mask_image=CENTRE, eta=-0.1), "eta must be"),
        (dict(mask_image=CENTRE, class_labels="a red circle"), "Unknown class name"),
        (dict(image=PIL.Image.new("RGB", (32, 32))), "mask_image is required"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_argument_before_any_work(inpaint, kwargs, argument):
    calls = []
    hook = inpaint.transformer.register_forward_pre_hook(lambda module, args: calls.append(1))
    kwargs = {"class_labels": 1, "image": PIL.Image.new("RGB", (32, 32)), **kwargs}
    try:
        with pytest.raises(ValueError, match=argument):
            inpaint(**kwargs)
    finally:
        hook.remove()
    assert calls == []


def test_t2i_twins_edit_with_prompts_and_keep_known_pixels():
    t2i = PixelGenT2IPipeline.from_pretrained(t2i_model_dir())
    inpaint = PixelGenT2IInpaintPipeline.from_pipe(t2i)
    img2img = PixelGenT2IImg2ImgPipeline.from_pipe(t2i)
    for pipe in (inpaint, img2img):
        pipe.set_progress_bar_config(disable=True)
        assert pipe.text_encoder is t2i.text_encoder and pipe.transformer is t2i.transformer
    image = np.asarray(PIL.Image.new("RGB", (32, 32), (35, 75, 215)))
    out = inpaint("a red circle on a blue background", image=image, mask_image=CENTRE, num_inference_steps=5)
    assert np.array_equal(np.asarray(out.images[0])[CENTRE == 0], image[CENTRE == 0])
    out = img2img(["a red circle on a blue background"], image=image, strength=0.0).images[0]
    assert np.array_equal(np.asarray(out), image)


# ------------------------------------------------------------------------------------- the scores, on a few images
def test_inpainting_recovers_the_class_far_better_than_generate_then_paste(inpaint):
    rows = demo_edit.inpainting_rows(inpaint, num_images=20, etas=(1.0,), mask_kinds=("centre",), batch_size=20)
    paste, edit = rows
    assert paste["eta"] is None and edit["eta"] == 1.0
    assert edit["accuracy"] >= 0.7 and edit["accuracy"] >= paste["accuracy"] + 0.3
    assert edit["psnr"] >= 12 and edit["psnr"] > paste["psnr"]


def test_img2img_target_accuracy_rises_with_strength(img2img):
    rows = demo_edit.img2img_rows(img2img, num_images=10, strengths=(0.2, 0.6, 1.0), etas=(1.0,), batch_size=10)
    accuracies = [row["target accuracy"] for row in rows]
    assert accuracies == sorted(accuracies) and accuracies[0] < 0.5 and accuracies[-1] >= 0.8


# ------------------------------------------------------------------------------------------ folders and remote code
PLAIN_DIFFUSERS_INPAINT = """
import sys, numpy as np, torch
from diffusers import DiffusionPipeline

folder, output = sys.argv[1:3]
pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
pipe.set_progress_bar_config(disable=True)
mask = np.zeros((32, 32), dtype=np.uint8)
mask[8:24, 8:24] = 255
image = torch.linspace(0, 1, 3 * 32 * 32).reshape(3, 32, 32)
out = pipe(8, image=image, mask_image=mask, eta=0.5, generator=torch.Generator().manual_seed(1), output_type="pt")
torch.save({"images": out.images, "class": type(pipe).__name__, "module": type(pipe).__module__}, output)
"""


def test_a_saved_editing_pipeline_is_a_folder_plain_diffusers_runs_with_trust_remote_code(inpaint, tmp_path):
    from components import run_python

    loaded = PixelGenC2IInpaintPipeline.from_pretrained(model_dir())  # the package's classes, no remote code
    assert type(loaded) is PixelGenC2IInpaintPipeline and loaded.config.guidance_scale == 3.0
    inpaint.save_pretrained(tmp_path / "saved")
    files = {path.name for path in (tmp_path / "saved").iterdir()}
    assert {"pipeline.py", "pipeline_pixelgen_c2i.py", "pixelgen_editing.py", "pipeline_utils_pixelgen.py"} <= files
    run_python(PLAIN_DIFFUSERS_INPAINT, tmp_path / "saved", tmp_path / "out.pt", cwd=tmp_path)
    result = torch.load(tmp_path / "out.pt")
    assert result["class"] == "PixelGenC2IInpaintPipeline" and result["module"].startswith("diffusers_modules")
    image = torch.linspace(0, 1, 3 * 32 * 32).reshape(3, 32, 32)
    expected = inpaint(8, image=image, mask_image=CENTRE, eta=0.5, generator=torch.Generator().manual_seed(1),
                       output_type="pt").images  # fmt: skip
    torch.testing.assert_close(result["images"], expected, **LAYOUT_TOLERANCE)
    known = torch.from_numpy(CENTRE == 0)
    assert torch.equal(result["images"][0][:, known], image[:, known])


def test_t2i_background_repaint_follows_the_prompt_and_keeps_the_shape_colour():
    t2i = PixelGenT2IPipeline.from_pretrained(t2i_model_dir())
    inpaint = PixelGenT2IInpaintPipeline.from_pipe(t2i)
    inpaint.set_progress_bar_config(disable=True)
    (row,) = demo_edit.t2i_background_rows(inpaint, num_images=10, etas=(1.0,), batch_size=10)
    assert row["background"] >= 0.8 and row["shape colour kept"] >= 0.9
