"""pipelines/pixelgen_editing.py against its formulas: input preparation, strength -> start step, the noised start,
the projection onto known pixels, the eta mixing and the exact final paste."""

import numpy as np
import PIL.Image
import pytest
import torch

from pixelgen_diffusers.pipelines import pixelgen_editing as editing
from pixelgen_diffusers.schedulers.scheduling_pixelgen import PixelGenScheduler, x_to_velocity


def random_uint8(seed: int, shape=(8, 8, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_prepare_image_accepts_pil_numpy_and_tensors_with_the_same_values():
    array = random_uint8(0)
    from_pil, pil_uint8 = editing.prepare_image(PIL.Image.fromarray(array), 8, 8)
    from_numpy, numpy_uint8 = editing.prepare_image(array, 8, 8)
    from_tensor, tensor_uint8 = editing.prepare_image(torch.from_numpy(array).permute(2, 0, 1).float() / 255, 8, 8)
    assert from_pil.shape == (1, 3, 8, 8) and from_pil.dtype == torch.float32
    assert torch.equal(from_pil, from_numpy) and torch.equal(from_pil, from_tensor)
    assert torch.equal(pil_uint8, numpy_uint8) and torch.equal(pil_uint8[0].permute(1, 2, 0), torch.from_numpy(array))
    assert tensor_uint8 is None  # float input: no 8-bit original to paste back
    batch, _ = editing.prepare_image([array, random_uint8(1)], 8, 8)
    assert batch.shape == (2, 3, 8, 8)


@pytest.mark.parametrize(
    "image, message",
    [
        (PIL.Image.new("L", (8, 8)), "mode 'L'"),
        (PIL.Image.new("RGB", (9, 8)), "8x8 pixels"),
        (np.full((8, 8, 3), 1.5, dtype=np.float32), r"\[0, 1\]"),
        (np.full((8, 8, 3), np.nan, dtype=np.float32), "NaN"),
        (np.zeros((8, 8, 2), dtype=np.float32), "3 channel"),
        ("image.png", "PIL image"),
        (None, "required"),
    ],
)
def test_prepare_image_refuses_bad_images_naming_the_argument(image, message):
    with pytest.raises(ValueError, match=message) as error:
        editing.prepare_image(image, 8, 8)
    assert "image" in str(error.value)


def test_prepare_mask_white_is_repaint_and_floats_are_strengths():
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:4, 2:4] = 255
    prepared = editing.prepare_mask(PIL.Image.fromarray(mask), 3, 8, 8)
    assert prepared.shape == (3, 1, 8, 8) and prepared.sum() == 3 * 4 and prepared[:, :, 2:4, 2:4].eq(1).all()
    soft = torch.full((8, 8), 0.25)
    assert torch.equal(editing.prepare_mask(soft, 1, 8, 8), soft[None, None])
    assert editing.prepare_mask(None, 2, 8, 8).eq(1).all()


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.zeros((8, 8), dtype=np.uint8), "no pixel to repaint"),
        (np.full((8, 8), np.nan, dtype=np.float32), "NaN"),
        (np.full((8, 8), -0.5, dtype=np.float32), r"\[0, 1\]"),
        (np.ones((4, 8), dtype=np.float32), "8x8 pixels"),
        (PIL.Image.new("P", (8, 8)), "mode 'P'"),
    ],
)
def test_prepare_mask_refuses_bad_masks_naming_the_argument(mask, message):
    with pytest.raises(ValueError, match=message) as error:
        editing.prepare_mask(mask, 1, 8, 8)
    assert "mask_image" in str(error.value)


def test_mask_blur_is_a_normalised_gaussian_that_keeps_far_pixels():
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 8, 8] = 1
    blurred = editing.gaussian_blur(mask, 1.0)
    offsets = torch.arange(-3, 4, dtype=torch.float64)
    weights = torch.exp(-0.5 * offsets**2)
    weights = weights / weights.sum()
    assert torch.allclose(blurred[0, 0, 8, 5:12].double(), weights[3] * weights, atol=1e-7)
    assert blurred[0, 0, :4].eq(0).all()  # beyond 3 sigma nothing changes: those pixels stay exactly known
    assert torch.allclose(blurred.sum(), torch.tensor(1.0), atol=1e-6)
    with pytest.raises(ValueError, match="mask_blur"):
        editing.prepare_mask(None, 1, 8, 8, mask_blur=float("nan"))


def test_start_step_follows_diffusers_get_timesteps():
    for steps in (1, 7, 10, 25):
        for strength in (0.0, 0.1, 0.33, 0.5, 0.8, 0.999, 1.0):
            init_timestep = min(steps * strength, steps)
            assert editing.start_step(steps, strength) == int(max(steps - init_timestep, 0))
    assert editing.start_step(10, 0.0) == 10 and editing.start_step(10, 1.0) == 0 and editing.start_step(10, 0.8) == 2


def test_pixel_start_steps_apply_each_pixels_own_strength():
    mask = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 1, 4)
    starts = editing.pixel_start_steps(10, 0.8, mask)
    assert starts.flatten().tolist() == [editing.start_step(10, 0.8 * float(m)) for m in mask.flatten()]
    assert editing.known_pixels(starts, 2).flatten().tolist() == [True, True, True, False]
    assert editing.known_pixels(starts, 8).flatten().tolist() == [True, False, False, False]


def test_noised_start_interpolates_image_and_noise():
    image, noise = torch.rand(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.tensor(0.3)
    assert torch.allclose(editing.noised_start(image, noise, t), 0.3 * image + 0.7 * noise, atol=1e-6)
    assert torch.equal(editing.noised_start(image, noise, 0.0), noise)


def test_projection_replaces_known_pixels_exactly():
    prediction, image = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    known = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    known[..., :2, :] = True
    projected = editing.project_known(prediction, image, known)
    assert torch.equal(projected[..., :2, :], image[..., :2, :])
    assert torch.equal(projected[..., 2:, :], prediction[..., 2:, :])


def test_euler_step_on_a_projected_prediction_renoises_known_pixels_with_the_same_noise():
    """eta = 0 with Euler is diffusers' inpainting loop: a pixel predicted as y lands on t' y + (1 - t') eps."""
    scheduler = PixelGenScheduler(sampling_method="euler", timeshift=2.0)
    scheduler.set_timesteps(10)
    image, noise = torch.rand(1, 3, 4, 4) * 2 - 1, torch.randn(1, 3, 4, 4)
    start = 3
    scheduler.set_begin_index(start)
    sample = editing.noised_start(image, noise, scheduler.grid[start])
    for i in range(start, 10):
        t = scheduler.timesteps[i]
        velocity = x_to_velocity(image, sample, t)
        sample = scheduler.step(velocity, t, sample).prev_sample
        if i < 9:
            assert torch.allclose(sample, editing.noised_start(image, noise, scheduler.grid[i + 1]), atol=1e-5)
    assert torch.allclose(sample, image, atol=1e-5)


def test_mix_noise_follows_its_formula():
    sample, prediction, fresh = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    t, eta = 0.4, 0.6
    implied = (sample - t * prediction) / (1 - t)
    expected = t * prediction + (1 - t) * (0.8 * implied + eta * fresh)
    assert torch.allclose(editing.mix_noise(sample, prediction, t, eta, fresh), expected, atol=1e-5)
    assert torch.allclose(editing.mix_noise(sample, prediction, t, 0.0, fresh), sample, atol=1e-5)
    assert torch.allclose(editing.mix_noise(sample, prediction, t, 1.0, fresh), t * prediction + (1 - t) * fresh)


def test_mix_noise_after_euler_equals_reinterpolating_with_the_noise_implied_at_the_start():
    sample, prediction, fresh = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    t, t_next, eta = 0.3, 0.5, 0.5
    euler = sample + (t_next - t) * (prediction - sample) / (1 - t)
    implied_at_start = (sample - t * prediction) / (1 - t)
    mixed = (1 - eta**2) ** 0.5 * implied_at_start + eta * fresh
    expected = t_next * prediction + (1 - t_next) * mixed
    assert torch.allclose(editing.mix_noise(euler, prediction, t_next, eta, fresh), expected, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_paste_is_exact_on_hard_pixels_and_blends_soft_ones(dtype):
    if dtype == torch.uint8:
        generated, original = (torch.from_numpy(random_uint8(s, (1, 3, 4, 4))) for s in (2, 3))
    else:
        generated, original = torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)
    mask = torch.tensor([0.0, 1.0, 0.5, 0.25]).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    pasted = editing.paste_known(generated, original, mask)
    assert pasted.dtype == dtype
    assert torch.equal(pasted[..., 0], original[..., 0]) and torch.equal(pasted[..., 1], generated[..., 1])
    expected = 0.75 * original[..., 3].float() + 0.25 * generated[..., 3].float()
    expected = expected.round() if dtype == torch.uint8 else expected
    assert torch.allclose(pasted[..., 3].float(), expected, atol=1e-6)


def test_check_edit_strengths_refuses_values_outside_the_unit_interval():
    editing.check_edit_strengths(0.0, 1.0)
    for name, values in (("strength", (1.5, 0.0)), ("eta", (0.5, -0.1)), ("strength", (float("nan"), 0.0))):
        with pytest.raises(ValueError, match=name):
            editing.check_edit_strengths(*values)
