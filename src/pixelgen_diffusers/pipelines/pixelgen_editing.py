# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Image editing in pixel space for PixelGen: image-to-image, inpainting, outpainting and per-pixel strength.

Shipped inside model folders next to the pipelines, so it imports only torch, numpy, PIL and diffusers.

PixelGen time runs from t = 0 (noise) to t = 1 (clean image), x_t = t * y + (1 - t) * eps, and the network
predicts the clean image. Editing starts from the input y noised to the strength's grid point and, at every model
evaluation, replaces the guided clean-image prediction x_hat on the known pixels by y,
x_hat_p = k * y + m * x_hat (k = 1 - m), before the solver steps on. With Euler this is exactly diffusers' inpainting
loop that re-noises the known region to the next time with the same noise (the Euler step of a pixel whose
prediction is y lands on t' * y + (1 - t') * eps). With `eta > 0` the noise implied at the step's end is partly
replaced by fresh noise (Flower / PnP-Flow style). The known pixels of the result are pasted from the input
exactly, in the output's own number format.

A float mask is a per-pixel strength (Differential Diffusion, Levin & Fried 2023): a pixel of mask value m is edited
with strength `strength * m`, i.e. it stays known until its own start time, and is free from then on. A binary
mask is ordinary inpainting; a white (or absent) mask is image-to-image.
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils.torch_utils import randn_tensor


# The default eta of the editing pipelines (see docs/editing.md for the measurements that chose it).
DEFAULT_ETA = 1.0
# PIL modes accepted for the image and for the mask; anything else is refused rather than silently converted.
IMAGE_MODES = ("RGB",)
MASK_MODES = ("L", "1")


# Copied from pixelgen_diffusers.utils.check_number
def check_number(name, value, *, integer=False, minimum=None, maximum=None, exclusive_minimum=False):
    """Returns `value` if it is a finite real number (an integer, not a bool, when `integer`) in
    [`minimum`, `maximum`] (or (`minimum`, ...] with `exclusive_minimum`); otherwise raises a ValueError naming
    `name`, the value and the accepted range. NaN and infinities are never accepted: they turn images black."""
    kind = "an integer" if integer else "a finite number"
    if integer and minimum == 1 and maximum is None:
        accepted = "a positive integer"
    elif minimum is not None and maximum is not None:
        accepted = f"{kind} in {'(' if exclusive_minimum else '['}{minimum}, {maximum}]"
    elif minimum is not None:
        accepted = f"{kind} {'>' if exclusive_minimum else '>='} {minimum}"
    elif maximum is not None:
        accepted = f"{kind} <= {maximum}"
    else:
        accepted = kind
    wanted = numbers.Integral if integer else numbers.Real
    valid = isinstance(value, wanted) and not isinstance(value, bool) and math.isfinite(value)
    if valid and minimum is not None:
        valid = value > minimum if exclusive_minimum else value >= minimum
    if valid and maximum is not None:
        valid = value <= maximum
    if not valid:
        raise ValueError(f"{name} must be {accepted}, got {value!r}.")
    return value


# ------------------------------------------------------------------------------------------------ inputs
def _as_items(value) -> list:
    """A batch as a list of single images: lists stay lists, a 4-D array or tensor is split along its first axis."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 4:
        return list(value)
    return [value]


def _item_to_tensor(item, name: str, channels: int, modes: tuple[str, ...]) -> tuple[torch.Tensor, bool]:
    """One image as a float32 (channels, H, W) tensor in [0, 1], and whether it came as 8-bit integers.

    PIL images (of `modes`), uint8 arrays/tensors (0..255), bool arrays/tensors (masks), float arrays/tensors in
    [0, 1]; arrays are (H, W) or (H, W, C) as numpy and PIL lay them out, tensors (H, W) or (C, H, W) as torch does.
    """
    if isinstance(item, PIL.Image.Image):
        if item.mode not in modes:
            hint = f"image.convert({modes[0]!r})"
            raise ValueError(
                f"{name} must be a PIL image of mode {' or '.join(modes)}, got mode {item.mode!r}; convert it first"
                f" ({hint}) if that is what you mean."
            )
        array = np.asarray(item.convert("L") if item.mode == "1" else item)
        item, channels_last = array, True
    elif isinstance(item, np.ndarray):
        channels_last = True
    elif isinstance(item, torch.Tensor):
        item, channels_last = item.detach().cpu(), False
    else:
        raise ValueError(
            f"{name} must be a PIL image, a numpy array or a torch tensor (or a list of them), got"
            f" {type(item).__name__}."
        )
    tensor = torch.as_tensor(np.array(item) if isinstance(item, np.ndarray) else item)
    if tensor.ndim == 2:
        tensor = tensor[None]
    elif tensor.ndim == 3 and channels_last:
        tensor = tensor.permute(2, 0, 1)
    elif tensor.ndim != 3:
        raise ValueError(f"{name} must have 2 or 3 dimensions per image, got shape {tuple(tensor.shape)}.")
    if tensor.shape[0] != channels and not (channels == 1 and tensor.shape[0] in (3, 4) and name == "mask_image"):
        raise ValueError(f"{name} must have {channels} channel(s), got {tensor.shape[0]} (shape {tuple(item.shape)}).")
    is_uint8 = tensor.dtype == torch.uint8
    if tensor.dtype == torch.bool:
        tensor = tensor.float()
    elif is_uint8:
        tensor = tensor.float() / 255
    elif tensor.is_floating_point():
        tensor = tensor.float()
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} holds NaN or infinite values.")
        if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
            raise ValueError(
                f"{name} must hold values in [0, 1] (or be uint8 in 0..255), got values in"
                f" [{tensor.min().item():.4g}, {tensor.max().item():.4g}]."
            )
    else:
        raise ValueError(f"{name} must be uint8, bool or floating point, got dtype {tensor.dtype}.")
    if channels == 1 and tensor.shape[0] != 1:  # an RGB(A) mask drawn in an editor: its brightest channel
        tensor = tensor[:3].amax(dim=0, keepdim=True)
    return tensor, is_uint8


def _check_size(name: str, tensor: torch.Tensor, height: int, width: int) -> None:
    if tuple(tensor.shape[-2:]) != (height, width):
        raise ValueError(
            f"{name} must be {width}x{height} pixels (the model's sample_size), got"
            f" {tensor.shape[-1]}x{tensor.shape[-2]}; resize or crop it first, or place it on a {width}x{height}"
            " canvas and inpaint the rest (outpainting)."
        )


def prepare_image(image, height: int, width: int, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images to edit as a float32 (B, channels, height, width) tensor in [0, 1], and, when every image came as
    8 bits (PIL, uint8), the exact uint8 values (else None) for the bit-exact paste of known pixels.

    Raises:
        ValueError: naming `image`, for another type, mode, channel count or size, values outside [0, 1] or NaN.
    """
    if image is None:
        raise ValueError("image is required: give the image to edit (PIL image, numpy array or torch tensor).")
    items = _as_items(image)
    if not items:
        raise ValueError("image is empty: give at least one image.")
    tensors, is_uint8 = [], []
    for item in items:
        tensor, item_is_uint8 = _item_to_tensor(item, "image", channels, IMAGE_MODES)
        _check_size("image", tensor, height, width)
        tensors.append(tensor)
        is_uint8.append(item_is_uint8)
    pixels = torch.stack(tensors)
    uint8_pixels = (pixels * 255).round().to(torch.uint8) if all(is_uint8) else None
    return pixels, uint8_pixels


def gaussian_blur(mask: torch.Tensor, radius: float) -> torch.Tensor:
    """Separable Gaussian blur of a (B, 1, H, W) mask with standard deviation `radius` pixels (PIL's
    `GaussianBlur(radius)` convention, as diffusers' `mask_blur`), truncated at 3 sigma, edges replicated."""
    if radius == 0:
        return mask
    half = max(1, math.ceil(3 * radius))
    offsets = torch.arange(-half, half + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / radius) ** 2)
    kernel = (kernel / kernel.sum()).to(mask.dtype)
    padded = torch.nn.functional.pad(mask, (half, half, half, half), mode="replicate")
    blurred = torch.nn.functional.conv2d(padded, kernel.view(1, 1, 1, -1))
    blurred = torch.nn.functional.conv2d(blurred, kernel.view(1, 1, -1, 1))
    return blurred.clamp(0, 1)


def prepare_mask(mask_image, batch_size: int, height: int, width: int, mask_blur: float = 0) -> torch.Tensor:
    """The repaint mask as a float32 (batch_size, 1, height, width) tensor in [0, 1]: 1 (white) = repaint,
    0 (black) = keep, values between = a per-pixel strength. `None` repaints everything (image-to-image). One mask
    serves every image, or give one per image. `mask_blur` (pixels, >= 0) softens the edges first.

    Raises:
        ValueError: naming `mask_image` / `mask_blur`, for another type, mode or size, values outside [0, 1], NaN,
            a mask count that is neither 1 nor the number of images, or a mask with no pixel to repaint.
    """
    check_number("mask_blur", mask_blur, minimum=0)
    if mask_image is None:
        return torch.ones(batch_size, 1, height, width)
    items = _as_items(mask_image)
    if len(items) not in (1, batch_size):
        raise ValueError(f"Got {len(items)} masks for {batch_size} images: give one mask, or one per image.")
    tensors = []
    for item in items:
        tensor = _item_to_tensor(item, "mask_image", 1, MASK_MODES)[0]
        _check_size("mask_image", tensor, height, width)
        tensors.append(tensor)
    mask = torch.stack(tensors).expand(batch_size, -1, -1, -1).contiguous()
    if not (mask > 0).flatten(1).any(dim=1).all():
        raise ValueError(
            "mask_image has no pixel to repaint (it is black everywhere, in at least one mask): white marks the pixels"
            " to repaint."
        )
    return gaussian_blur(mask, mask_blur)


def check_edit_strengths(strength: float, eta: float) -> None:
    """`strength` and `eta` are finite numbers in [0, 1]."""
    check_number("strength", strength, minimum=0, maximum=1)
    check_number("eta", eta, minimum=0, maximum=1)


# ------------------------------------------------------------------------------------------------ schedule
def start_step(num_inference_steps: int, strength: float) -> int:
    """The grid point an edit of this strength starts from: diffusers' `get_timesteps` rule, which keeps the last
    `int(N * strength)` (or so) of the N steps, `t_start = int(max(N - min(N * strength, N), 0))`.

    Strength is a fraction of PixelGen's steps, not a noise level: the run starts at the shifted time
    `grid[t_start] = u / (u + s (1 - u))`, u = t_start / N, so with a timeshift s > 1 a given strength starts
    noisier (s = 3 and strength 0.5 start at t = 0.25, i.e. 75% noise) and changes more than without one.
    """
    init_steps = min(num_inference_steps * strength, num_inference_steps)
    return int(max(num_inference_steps - init_steps, 0))


def pixel_start_steps(num_inference_steps: int, strength: float, mask: torch.Tensor) -> torch.Tensor:
    """Per pixel, `start_step` of its own strength `strength * mask` (an int64 tensor shaped like `mask`):
    the step from which it is free; before that step it is known (held to the input)."""
    pixel_strength = strength * mask.double()
    init_steps = (num_inference_steps * pixel_strength).clamp(max=num_inference_steps)
    return (num_inference_steps - init_steps).clamp(min=0).floor().long()


def known_pixels(start_steps: torch.Tensor, step: int) -> torch.Tensor:
    """Boolean mask of the pixels still known (held to the input) during solver step `step`."""
    return start_steps > step


def noised_start(image: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """The starting sample x_t = t * y + (1 - t) * eps (float32; t = 0 is pure noise, so strength 1 and an all-white
    mask start from the same noise as plain generation)."""
    t = torch.as_tensor(t, dtype=torch.float32, device=image.device)
    return t * image.float() + (1 - t) * noise.float()


# ------------------------------------------------------------------------------------------------ sampling
def project_known(prediction: torch.Tensor, image: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """x_hat_p = k * y + m * x_hat with a binary known-mask k (m = 1 - k): the clean-image prediction with the known
    pixels replaced by the input, exactly."""
    return torch.where(known, image.to(prediction.dtype), prediction)


def mix_noise(
    sample: torch.Tensor, prediction: torch.Tensor, t: torch.Tensor | float, eta: float, fresh_noise: torch.Tensor
) -> torch.Tensor:
    """Re-noises a sample at time t < 1 around a clean-image prediction: the noise it implies,
    eps_hat = (x_t - t * x_hat_p) / (1 - t), becomes sqrt(1 - eta^2) * eps_hat + eta * xi (xi fresh standard normal),
    and the sample is re-interpolated, x_t = t * x_hat_p + (1 - t) * mixed. eta = 0 returns x_t (up to rounding);
    eta = 1 replaces the noise entirely. Flower (Martin et al. 2025) / PnP-Flow (Martin et al. 2024).

    Applied after the solver's step, with t the step's end: for Euler this equals re-interpolating to the next time
    with the noise mixed from the one implied at the step's start (Euler's step is that re-interpolation)."""
    t = torch.as_tensor(t, dtype=torch.float32, device=sample.device)
    implied_noise = (sample.float() - t * prediction.float()) / (1 - t)
    mixed = math.sqrt(1 - eta**2) * implied_noise + eta * fresh_noise.float()
    return t * prediction.float() + (1 - t) * mixed


def paste_known(generated: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The final composite, k * original + m * generated (k = 1 - m), in the images' own number format: pixels of
    mask 0 are the original's values exactly, pixels of mask 1 the generated ones, soft pixels alpha-blended (rounded
    for uint8). `mask` broadcasts over channels."""
    mask = mask.to(generated.device)
    original = original.to(generated.device)
    if generated.dtype == torch.uint8:
        blended = ((1 - mask) * original.float() + mask * generated.float()).round().clamp(0, 255).to(torch.uint8)
    else:
        blended = (1 - mask) * original.to(generated.dtype) + mask * generated
    blended = torch.where(mask == 0, original.to(generated.dtype), blended)
    return torch.where(mask == 1, generated, blended)


# ------------------------------------------------------------------------------------------------ pipelines
@dataclass
class EditInputs:
    """One editing call's prepared inputs, (B, ...) with B = conditions x num_images_per_prompt."""

    image: torch.Tensor  # float32 (B, C, H, W) in [0, 1]
    uint8_image: torch.Tensor | None  # the same as uint8 when the input came as 8 bits
    mask: torch.Tensor  # float32 (B, 1, H, W) in [0, 1], 1 = repaint
    strength: float
    eta: float
    noise_scale: float
    generator: torch.Generator | list[torch.Generator] | None
    # Set by `denoise` once the number of steps is known: each pixel's first free step, int64 (B, 1, H, W).
    start_steps: torch.Tensor | None = None
    num_inference_steps: int | None = None


class PixelGenEditMixin:
    r"""
    Turns a PixelGen pipeline into an editing pipeline without a second denoising loop: listed before the base
    pipeline class, it runs the base `__call__` and takes over its `denoise` (start on the strength's grid point from
    the noised input, project every clean-image prediction onto the known pixels, mix noise for `eta > 0`) and its
    `postprocess` (paste the known pixels back exactly). The subclass's `__call__` calls `prepare_edit` first.
    """

    _edit: EditInputs | None = None

    def prepare_edit(
        self,
        image,
        mask_image,
        strength: float,
        eta: float,
        mask_blur: float,
        num_conditions: int,
        num_images_per_prompt: int,
        generator,
        noise_scale: float | None,
    ) -> None:
        """Checks and prepares the editing inputs before any work (see `prepare_image`, `prepare_mask`): one image
        for every condition or one per condition, one mask or one per image."""
        check_edit_strengths(strength, eta)
        check_number("num_images_per_prompt", num_images_per_prompt, integer=True, minimum=1)
        size = self.transformer.config.sample_size
        pixels, uint8_pixels = prepare_image(image, size, size, self.transformer.config.in_channels)
        if len(pixels) not in (1, num_conditions):
            raise ValueError(
                f"Got {len(pixels)} images for {num_conditions} conditions: give one image, or one per condition."
            )
        mask = prepare_mask(mask_image, len(pixels), size, size, mask_blur)
        repeats = num_conditions * num_images_per_prompt // len(pixels)
        self._edit = EditInputs(
            image=pixels.repeat_interleave(repeats, dim=0),
            uint8_image=None if uint8_pixels is None else uint8_pixels.repeat_interleave(repeats, dim=0),
            mask=mask.repeat_interleave(repeats, dim=0),
            strength=strength,
            eta=eta,
            noise_scale=noise_scale if noise_scale is not None else self.config.noise_scale,
            generator=generator,
        )

    def denoise(
        self,
        latents,
        condition,
        negative_condition,
        model_times,
        guided,
        num_inference_steps,
        start_index=0,
        clean_image_hook=None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=["latents"],
    ):
        """The base loop, started at the edit's first grid point from x_t = t * y + (1 - t) * eps (`latents` is the
        noise eps), with every clean-image prediction projected onto the pixels still known at its step and, for
        eta > 0, the noise re-mixed at every step's end."""
        edit = self._edit
        if edit is None:
            return super().denoise(
                latents, condition, negative_condition, model_times, guided, num_inference_steps, start_index,
                clean_image_hook, callback_on_step_end, callback_on_step_end_tensor_inputs,
            )  # fmt: skip
        device, order = latents.device, self.scheduler.order
        image = edit.image.to(device) * 2 - 1  # pixel units, as the model predicts them
        edit.start_steps = pixel_start_steps(num_inference_steps, edit.strength, edit.mask).to(device)
        edit.num_inference_steps = num_inference_steps
        first_step = int(edit.start_steps.min())
        # The time at the start of each step, and 1 after the last.
        step_times = [*model_times[::order].tolist(), 1.0]
        latents = noised_start(image, latents, step_times[first_step])
        start_index = min(first_step * order, len(model_times))

        def project(prediction, t, i):
            return project_known(prediction, image, known_pixels(edit.start_steps, i // order))

        user_inputs = list(callback_on_step_end_tensor_inputs) if callback_on_step_end is not None else []

        def on_step_end(pipeline, i, t, callback_kwargs):
            outputs = {}
            step_end_time = step_times[i // order + 1]
            if edit.eta > 0 and (order == 1 or i % 2 == 1) and step_end_time < 1:
                fresh_noise = edit.noise_scale * randn_tensor(
                    latents.shape, generator=edit.generator, device=device, dtype=torch.float32
                )
                mixed = mix_noise(
                    callback_kwargs["latents"], callback_kwargs["pred_original_sample"], step_end_time, edit.eta,
                    fresh_noise,
                )  # fmt: skip
                callback_kwargs["latents"] = outputs["latents"] = mixed
            if callback_on_step_end is not None:
                user_kwargs = {name: callback_kwargs[name] for name in user_inputs}
                user_outputs = callback_on_step_end(pipeline, i, t, user_kwargs)
                if not isinstance(user_outputs, dict):
                    raise ValueError(
                        "callback_on_step_end must return a dict (of the tensors it changes, or {}), got"
                        f" {type(user_outputs).__name__}."
                    )
                outputs.update(user_outputs)
            return outputs

        needs_step_end = edit.eta > 0 or callback_on_step_end is not None
        return super().denoise(
            latents,
            condition,
            negative_condition,
            model_times,
            guided,
            num_inference_steps,
            start_index=start_index,
            clean_image_hook=project,
            callback_on_step_end=on_step_end if needs_step_end else None,
            callback_on_step_end_tensor_inputs=list(dict.fromkeys([*user_inputs, "latents", "pred_original_sample"])),
        )

    def postprocess(self, sample: torch.Tensor, output_type: str):
        """The base pipeline's images with the known pixels pasted back exactly (`paste_known`) in the output's own
        format: the input's uint8 values for PIL (when it came as 8 bits), its floats for "np" / "pt", its pixel
        values for "latent". Pixels no step ever freed (strength 0, mask 0) count as known."""
        images = super().postprocess(sample, output_type)
        edit = self._edit
        if edit is None:
            return images
        mask = torch.where(edit.start_steps.cpu() >= edit.num_inference_steps, 0.0, edit.mask)
        if output_type == "latent":
            return paste_known(images, (edit.image * 2 - 1).to(images.device), mask.to(images.device))
        if output_type == "pt":
            return paste_known(images, edit.image.to(images.device), mask.to(images.device))
        if output_type == "np":
            pasted = paste_known(torch.from_numpy(images).permute(0, 3, 1, 2), edit.image, mask)
            return pasted.permute(0, 2, 3, 1).numpy()
        generated = torch.from_numpy(np.stack([np.asarray(image) for image in images])).permute(0, 3, 1, 2)
        original = edit.uint8_image
        if original is None:  # upstream's rounding of [0, 1] floats to 8 bits, as the base postprocess does
            original = (edit.image * 255 + 0.5).clamp(0, 255).to(torch.uint8)
        pasted = paste_known(generated, original, mask).permute(0, 2, 3, 1).numpy()
        return [PIL.Image.fromarray(array) for array in pasted]
