# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Class-to-image editing pipelines for PixelGen: image-to-image and inpainting (with outpainting and per-pixel
strength), on the class-to-image pipeline's own loop (see `pixelgen_editing`).

Model folders ship this file as `pipeline.py` with its siblings, loadable in plain diffusers with
`trust_remote_code=True`.
"""

from typing import Any, Callable

import torch
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from .pipeline_pixelgen_c2i import PixelGenC2IPipeline

# Imported here too so that diffusers copies it beside a model folder's pipeline.py: for local folders it copies only
# the direct relative imports of the module it loads, and pipeline_pixelgen_c2i.py needs it.
from .pipeline_utils_pixelgen import PixelGenPipelineMixin  # noqa: F401
from .pixelgen_editing import DEFAULT_ETA, PixelGenEditMixin


class PixelGenC2IImg2ImgPipeline(PixelGenEditMixin, PixelGenC2IPipeline):
    r"""
    Class-conditional image-to-image with a PixelGen / JiT transformer: the input is noised to the strength's point
    on the sampling grid and denoised towards the given class. Components and defaults as `PixelGenC2IPipeline`;
    build it from a loaded one without copying weights with `PixelGenC2IImg2ImgPipeline.from_pipe(pipe)`.
    """

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor | None = None,
        image=None,
        strength: float = 0.6,
        eta: float = DEFAULT_ETA,
        num_images_per_prompt: int = 1,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_interval_min: float | None = None,
        guidance_interval_max: float | None = None,
        sampling_method: str | None = None,
        timeshift: float | None = None,
        solver_order: int | None = None,
        noise_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
    ) -> ImagePipelineOutput | tuple:
        r"""
        Edits images towards the given classes. Arguments as `PixelGenC2IPipeline.__call__`, plus:

        Args:
            image: the image(s) to edit, one for all labels or one per label: a PIL RGB image, a uint8 array
                (H, W, 3), a float array (H, W, 3) or tensor (3, H, W) in [0, 1], or a list / batch of them; of the
                model's size.
            strength: how much to change, in [0, 1] (diffusers' `get_timesteps`): the run keeps the last
                `int(num_inference_steps * strength)` steps of the grid. 0 returns the input exactly, 1 ignores it.
            eta: in [0, 1], the share of fresh noise mixed into the sample at every step's end (0: deterministic).
            latents: the noise eps of the start x_t = t * y + (1 - t) * eps (standard normal, B x C x H x W).

        Raises:
            ValueError: naming the argument, for a bad image, strength or eta, or a class label that is no class
                (such as a text prompt: this model takes class ids or names), before any work.
        """
        self.prepare_edit(
            image, None, strength, eta, 0, len(self.condition_ids(class_labels)), num_images_per_prompt, generator,
            noise_scale,
        )  # fmt: skip
        try:
            return super().__call__(
                class_labels=class_labels, num_images_per_prompt=num_images_per_prompt,
                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                guidance_interval_min=guidance_interval_min, guidance_interval_max=guidance_interval_max,
                sampling_method=sampling_method, timeshift=timeshift, solver_order=solver_order,
                noise_scale=noise_scale, height=height, width=width, generator=generator, latents=latents,
                output_type=output_type, return_dict=return_dict, callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            )  # fmt: skip
        finally:
            self._edit = None


class PixelGenC2IInpaintPipeline(PixelGenEditMixin, PixelGenC2IPipeline):
    r"""
    Class-conditional inpainting with a PixelGen / JiT transformer: white pixels of `mask_image` are repainted as the
    given class, black ones come back exactly; grey ones are a per-pixel strength (Differential Diffusion). For
    outpainting, place the image on a canvas of the model's size and mask the rest. Components and defaults as
    `PixelGenC2IPipeline`; build it from a loaded one with `PixelGenC2IInpaintPipeline.from_pipe(pipe)`.
    """

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor | None = None,
        image=None,
        mask_image=None,
        strength: float = 1.0,
        eta: float = DEFAULT_ETA,
        mask_blur: float = 0,
        num_images_per_prompt: int = 1,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_interval_min: float | None = None,
        guidance_interval_max: float | None = None,
        sampling_method: str | None = None,
        timeshift: float | None = None,
        solver_order: int | None = None,
        noise_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
    ) -> ImagePipelineOutput | tuple:
        r"""
        Repaints the masked pixels as the given classes. Arguments as `PixelGenC2IImg2ImgPipeline.__call__`, plus:

        Args:
            mask_image: 1 (white) = repaint, 0 (black) = keep, values between = per-pixel strength: a PIL image of
                mode "L" or "1", or an array / tensor (H, W) in [0, 1] (uint8: 0..255, or bool); one for all images
                or one per image; of the model's size.
            strength: the strength of a white pixel (default 1: its start is pure noise).
            mask_blur: standard deviation in pixels of a Gaussian blur of the mask (soft edges), 0 = none.

        Raises:
            ValueError: naming the argument, for a bad image or mask (another size, NaN, values outside [0, 1], no
                pixel to repaint), strength, eta or mask_blur, before any work.
        """
        if mask_image is None:
            raise ValueError("mask_image is required: white marks the pixels to repaint (or use an Img2Img pipeline).")
        self.prepare_edit(
            image, mask_image, strength, eta, mask_blur, len(self.condition_ids(class_labels)), num_images_per_prompt,
            generator, noise_scale,
        )  # fmt: skip
        try:
            return super().__call__(
                class_labels=class_labels, num_images_per_prompt=num_images_per_prompt,
                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                guidance_interval_min=guidance_interval_min, guidance_interval_max=guidance_interval_max,
                sampling_method=sampling_method, timeshift=timeshift, solver_order=solver_order,
                noise_scale=noise_scale, height=height, width=width, generator=generator, latents=latents,
                output_type=output_type, return_dict=return_dict, callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            )  # fmt: skip
        finally:
            self._edit = None
