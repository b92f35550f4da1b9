# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Class-to-image pipeline for PixelGen / JiT (pixel space, no VAE).

Self-contained on purpose (torch and diffusers only): model folders ship this file as `pipeline.py`, loadable with
`DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder / "pipeline.py", trust_remote_code=True)`.
"""

import difflib
import sys
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor


OUTPUT_TYPES = ("pil", "np", "pt", "latent")


# Copied from pixelgen_diffusers.transformer_jit.mark_dynamic_shapes
def mark_dynamic_shapes(tensor: torch.Tensor, batch_dim: int | None = 0, sequence_dim: int | None = None) -> None:
    """Marks the dims that change between calls so that torch.compile traces them symbolically once instead of
    recompiling: the batch (guided steps run 2B rows, unguided ones B; "unbacked" because B may be 1, a size compile
    would otherwise specialise on) and, for the blocks, the sequence (it grows when the in-context tokens enter).
    Costs nothing eagerly; a no-op inside a compiled region."""
    if torch.compiler.is_compiling():
        return
    if batch_dim is not None:
        torch._dynamo.decorators.mark_unbacked(tensor, batch_dim)
    if sequence_dim is not None:
        torch._dynamo.mark_dynamic(tensor, sequence_dim)


class PixelGenC2IPipeline(DiffusionPipeline):
    r"""
    Class-conditional generation with a PixelGen / JiT transformer that predicts clean pixels.

    Args:
        transformer ([`PixelGenTransformer2DModel`]): the denoiser.
        scheduler ([`PixelGenScheduler`]): the ODE solver (Heun, Euler or Adams-Bashforth) and its time grid.
        id2label (`dict[int, str]`, *optional*): class names, each a comma-separated list of synonyms.
        num_inference_steps, guidance_scale, guidance_interval_min, guidance_interval_max, noise_scale:
            the model's recommended sampling settings, used whenever a call does not override them.
    """

    model_cpu_offload_seq = "transformer"
    _callback_tensor_inputs = ["latents", "pred_original_sample"]

    def __init__(
        self,
        transformer,
        scheduler,
        id2label: dict | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        guidance_interval_min: float = 0.0,
        guidance_interval_max: float = 1.0,
        noise_scale: float = 1.0,
    ):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)
        if id2label is None:
            id2label = {i: str(i) for i in range(transformer.config.num_classes)}
        self.register_to_config(
            id2label={str(k): v for k, v in id2label.items()},
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_interval_min=guidance_interval_min,
            guidance_interval_max=guidance_interval_max,
            noise_scale=noise_scale,
        )
        self._labels = None
        self._guidance_scale = guidance_scale
        self._num_timesteps = None
        self._interrupt = False

    @classmethod
    def load_config(cls, *args, **kwargs):
        """Reads `model_index.json`. A self-contained model folder names its own copies of the code (`["pipeline",
        ...]`, `["transformer_jit", ...]`); when this class is used directly from an installed package, those entries
        are pointed at the package's own modules instead, so that `from_pretrained` needs no `trust_remote_code` and
        returns the installed classes. Loading through `DiffusionPipeline` is unaffected."""
        outputs = super().load_config(*args, **kwargs)
        config = outputs[0] if isinstance(outputs, tuple) else outputs
        package = cls.__module__.rpartition(".")[0]
        class_name = config.get("_class_name")
        class_name = class_name[-1] if isinstance(class_name, (list, tuple)) else class_name
        if class_name != cls.__name__ or not package or package.startswith("diffusers_modules"):
            return outputs
        config["_class_name"] = class_name
        for name, entry in config.items():
            if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str):
                module = sys.modules.get(f"{package}.{entry[0].rpartition('.')[2]}")
                if module is not None and hasattr(module, entry[1]):
                    config[name] = [module.__name__, entry[1]]
        return outputs

    # ----------------------------------------------------------------------------------------------------- labels
    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): v for k, v in self.config.id2label.items()}

    @property
    def labels(self) -> dict[str, int]:
        """Every comma-separated synonym of every class, mapped to its id (e.g. "golden retriever" -> 207)."""
        if self._labels is None:
            labels = {}
            for class_id, names in sorted(self.id2label.items()):
                for name in names.split(","):
                    labels.setdefault(name.strip(), class_id)
            self._labels = dict(sorted(labels.items()))
        return self._labels

    def get_label_ids(self, label: str | int | list[str | int]) -> list[int]:
        """Class ids for names and/or ids: `get_label_ids("golden retriever") == [207]`."""
        items = label if isinstance(label, (list, tuple)) else [label]
        return [self._label_id(item) for item in items]

    def _label_id(self, item: str | int) -> int:
        num_classes = self.transformer.config.num_classes
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < num_classes:
                raise ValueError(f"Class id {item} is out of range: ids must be in [0, {num_classes}).")
            return int(item)
        if not isinstance(item, str):
            raise ValueError(f"A class label must be an int id or a class name, got {type(item).__name__}: {item!r}.")
        labels = self.labels
        if item in labels:
            return labels[item]
        lowered = {name.lower(): class_id for name, class_id in labels.items()}
        if item.strip().lower() in lowered:
            return lowered[item.strip().lower()]
        matches = difflib.get_close_matches(item, list(labels), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""
        raise ValueError(f"Unknown class name {item!r}.{hint} See `pipe.labels` for the {len(labels)} known names.")

    # ------------------------------------------------------------------------------------------- call properties
    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Upstream guides with v_u + w (v_c - v_u) for any w != 1 (w = 0 gives unconditional samples)."""
        return self._guidance_scale != 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def check_inputs(self, num_labels, *sampling_inputs):
        if num_labels == 0:
            raise ValueError("class_labels is empty: give at least one class id or name.")
        self.check_sampling_inputs(num_labels, *sampling_inputs)

    def check_sampling_inputs(
        self,
        num_conditions,
        num_images_per_prompt,
        height,
        width,
        num_inference_steps,
        guidance_interval,
        generator,
        latents,
        output_type,
        callback,
    ):
        """Checks that do not depend on the kind of condition: sizes, steps, interval, generators, latents, output."""
        if not (isinstance(num_images_per_prompt, int) and num_images_per_prompt > 0):
            raise ValueError(f"num_images_per_prompt must be a positive integer, got {num_images_per_prompt!r}.")
        if guidance_interval[0] > guidance_interval[1]:
            raise ValueError(
                f"guidance_interval_min ({guidance_interval[0]}) must not exceed guidance_interval_max"
                f" ({guidance_interval[1]})."
            )
        sample_size = self.transformer.config.sample_size
        if height != sample_size or width != sample_size:
            raise ValueError(
                f"height and width must both equal the model's sample_size ({sample_size}), got {height}x{width}."
            )
        if not (isinstance(num_inference_steps, int) and num_inference_steps > 0):
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}.")
        batch_size = num_conditions * num_images_per_prompt
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"Got a list of {len(generator)} generators for a batch of {batch_size} images: pass one generator"
                f" or exactly {batch_size}."
            )
        shape = (batch_size, self.transformer.config.in_channels, sample_size, sample_size)
        if latents is not None and tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"Unknown output_type {output_type!r}; accepted: {', '.join(OUTPUT_TYPES)}.")
        if callback is not None:
            unknown = [name for name in callback if name not in self._callback_tensor_inputs]
            if unknown:
                raise ValueError(
                    f"callback_on_step_end_tensor_inputs has {unknown}; accepted: {self._callback_tensor_inputs}."
                )

    def prepare_latents(self, batch_size, noise_scale, generator, device, latents=None):
        """Standard-normal noise in float32 (whatever the model dtype), times `noise_scale`."""
        size = self.transformer.config.sample_size
        shape = (batch_size, self.transformer.config.in_channels, size, size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        return latents.to(device=device, dtype=torch.float32) * noise_scale

    @staticmethod
    def postprocess(sample: torch.Tensor, output_type: str):
        """Pixels in [-1, 1] to images; PIL uses upstream's rounding, uint8 = clip((x + 1) * 127.5 + 0.5, 0, 255)."""
        if output_type == "latent":
            return sample
        if output_type == "pil":
            pixels = ((sample + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            return [PIL.Image.fromarray(image) for image in pixels]
        images = ((sample + 1) / 2).clamp(0, 1)
        return images if output_type == "pt" else images.permute(0, 2, 3, 1).cpu().numpy()

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str],
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
        Generates images of the given classes.

        Args:
            class_labels: a class id, an English class name (any synonym, e.g. `"golden retriever"`), or a list.
            num_images_per_prompt: images per label.
            num_inference_steps: ODE steps (Heun uses 2N-1 model evaluations).
            guidance_scale: classifier-free guidance weight on the velocity; > 1 enables guidance.
            guidance_interval_min, guidance_interval_max: guidance applies only for t inside this interval (t = 0
                is noise), with the solver's own boundary test.
            sampling_method: `"heun"`, `"euler"` or `"adam_lm"`; defaults to the scheduler config.
            timeshift: time-grid shift s; defaults to the scheduler config.
            solver_order: Adams-Bashforth order for `adam_lm` (1-4).
            noise_scale: the initial noise is `noise_scale` times a standard normal draw (or times `latents`).
            height, width: must equal the model's `sample_size`.
            generator: one generator, or one per image (image i then equals a single run with generator i).
            latents: standard-normal initial noise of shape (B, C, H, W), B = labels x num_images_per_prompt.
            output_type: `"pil"`, `"np"` (NHWC in [0, 1]), `"pt"` (NCHW in [0, 1]) or `"latent"` (raw sample).
            return_dict: return an `ImagePipelineOutput` rather than a tuple.
            callback_on_step_end: called after every model evaluation as `fn(pipe, i, t, callback_kwargs)`.
            callback_on_step_end_tensor_inputs: tensors passed in `callback_kwargs`: `"latents"` (the sample after
                the step) and/or `"pred_original_sample"` (the clean image predicted at this evaluation, guided,
                float32 (B, C, H, W) in pixel units; read-only).
        """
        config = self.config
        num_inference_steps = num_inference_steps if num_inference_steps is not None else config.num_inference_steps
        guidance_scale = guidance_scale if guidance_scale is not None else config.guidance_scale
        interval_min = guidance_interval_min if guidance_interval_min is not None else config.guidance_interval_min
        interval_max = guidance_interval_max if guidance_interval_max is not None else config.guidance_interval_max
        noise_scale = noise_scale if noise_scale is not None else config.noise_scale
        height = height or self.transformer.config.sample_size
        width = width or self.transformer.config.sample_size
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        label_ids = self.get_label_ids(class_labels)
        self.check_inputs(
            len(label_ids),
            num_images_per_prompt,
            height,
            width,
            num_inference_steps,
            (interval_min, interval_max),
            generator,
            latents,
            output_type,
            callback_on_step_end_tensor_inputs if callback_on_step_end is not None else None,
        )
        self._guidance_scale = guidance_scale
        self._interrupt = False
        device = self._execution_device
        model_dtype = self.transformer.dtype

        class_labels = torch.tensor(label_ids, dtype=torch.long, device=device).repeat_interleave(
            num_images_per_prompt
        )
        null_labels = torch.full_like(class_labels, self.transformer.null_class_id)
        latents = self.prepare_latents(len(class_labels), noise_scale, generator, device, latents)

        self.scheduler.set_timesteps(
            num_inference_steps,
            device,
            sampling_method=sampling_method,
            timeshift=timeshift,
            solver_order=solver_order,
        )
        self.scheduler.set_begin_index(0)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        # Decided once per schedule, with each solver's own interval test; unguided evaluations skip the null half.
        guided = self.scheduler.guidance_mask(interval_min, interval_max)
        num_warmup_steps = len(timesteps) - num_inference_steps * self.scheduler.order

        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                use_guidance = self.do_classifier_free_guidance and guided[i]
                # Unconditional half first, as upstream batches it.
                model_input = torch.cat([latents, latents]) if use_guidance else latents
                labels = torch.cat([null_labels, class_labels]) if use_guidance else class_labels
                transformer_inputs = (model_input.to(model_dtype), t.expand(len(model_input)), labels)
                for tensor in transformer_inputs:  # a compiled transformer keeps one graph for B and 2B rows
                    mark_dynamic_shapes(tensor)
                prediction = self.transformer(*transformer_inputs, return_dict=False)[0]
                velocity = self.scheduler.convert_model_output(prediction, t, model_input)
                if use_guidance:
                    velocity_uncond, velocity_cond = velocity.chunk(2)
                    velocity = velocity_uncond + self.guidance_scale * (velocity_cond - velocity_uncond)
                latents = self.scheduler.step(velocity, t, latents, return_dict=False)[0]

                if callback_on_step_end is not None:
                    if "pred_original_sample" in callback_on_step_end_tensor_inputs:
                        # The clean image this evaluation predicts, guided as the velocity is (both are linear in x).
                        pred_original_sample = prediction.float()
                        if use_guidance:
                            x_uncond, x_cond = pred_original_sample.chunk(2)
                            pred_original_sample = x_uncond + self.guidance_scale * (x_cond - x_uncond)
                    callback_kwargs = {}
                    for name in callback_on_step_end_tensor_inputs:
                        callback_kwargs[name] = locals()[name]
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = callback_outputs.pop("latents", latents)

                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()

        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
