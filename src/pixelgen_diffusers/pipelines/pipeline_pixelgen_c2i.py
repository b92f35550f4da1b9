# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Class-to-image pipeline for PixelGen / JiT (pixel space, no VAE).

Imports only torch, diffusers and its shipped sibling `pipeline_utils_pixelgen.py` (the sampling core both pipelines
share): model folders ship this file as `pipeline.py` beside it, loadable with
`DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder / "pipeline.py", trust_remote_code=True)`.
"""

import difflib
from collections import defaultdict
from typing import Any, Callable

import numpy as np
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .pipeline_utils_pixelgen import (
    PixelGenLoraLoaderMixin,
    PixelGenPipelineMixin,
)


# The class-label name of the transformer's null class (classifier-free guidance's unconditional input); a dataset
# class of the same name takes precedence.
UNCONDITIONAL_LABEL = "unconditional"


class PixelGenC2IPipeline(PixelGenPipelineMixin, DiffusionPipeline, PixelGenLoraLoaderMixin):
    r"""
    Class-conditional generation with a PixelGen / JiT transformer that predicts clean pixels.

    Args:
        transformer ([`PixelGenTransformer2DModel`]): the denoiser.
        scheduler ([`PixelGenScheduler`]): the ODE solver (Heun, Euler or Adams-Bashforth) and its time grid; or a
            stock flow-matching scheduler (`FlowMatchEulerDiscreteScheduler`, `FlowMatchHeunDiscreteScheduler`, or
            `UniPCMultistepScheduler` / `DPMSolverMultistepScheduler` with `use_flow_sigmas=True` and
            `prediction_type="flow_prediction"`), whose `shift` / `flow_shift` is the timeshift.
        id2label (`dict[int, str]`, *optional*): class names, each a comma-separated list of synonyms.
        num_inference_steps, guidance_scale, guidance_interval_min, guidance_interval_max, noise_scale:
            the model's recommended sampling settings, used whenever a call does not override them.
    """

    # The transformer input that carries the condition.
    _condition_input_name = "class_labels"
    model_cpu_offload_seq = "transformer"
    _callback_tensor_inputs = ["latents", "pred_original_sample"]

    def __init__(
        self,
        transformer: ModelMixin,
        scheduler: SchedulerMixin,
        id2label: dict | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        guidance_interval_min: float = 0.0,
        guidance_interval_max: float = 1.0,
        noise_scale: float = 1.0,
        distillation: dict | None = None,
    ):
        super().__init__()
        self.check_sampling_defaults(
            num_inference_steps, guidance_scale, guidance_interval_min, guidance_interval_max, noise_scale
        )
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
            distillation=distillation,
        )
        self._label_candidates = None
        self._guidance_scale = guidance_scale
        self._num_timesteps = None
        self._current_timestep = None
        self._interrupt = False

    # ----------------------------------------------------------------------------------------------------- labels
    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): v for k, v in self.config.id2label.items()}

    @property
    def labels(self) -> dict[str, int]:
        """Every class name that identifies exactly one class, mapped to its id (e.g. "golden retriever" -> 207).

        Each class lists comma-separated synonyms, and some names belong to several classes. The rule: a class's
        first-listed name beats another class's later synonym (ImageNet's "harp" is 594, the harp, not 593, whose
        synonyms include "harp"); names still shared (two first names, such as "crane" for 134 and 517, or only
        later synonyms, such as "panda") are left out, and `get_label_ids` raises for them, naming every candidate.
        """
        return {name: ids[0] for name, ids in self._name_candidates()[0].items() if len(ids) == 1}

    def _name_candidates(self) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """(exact name -> candidate ids, lower-cased name -> candidate ids), each after the first-name rule."""
        if self._label_candidates is None:
            self._label_candidates = tuple(self._apply_name_rule(case) for case in (str, str.lower))
        return self._label_candidates

    def _apply_name_rule(self, normalize: Callable[[str], str]) -> dict[str, list[int]]:
        first_names, later_names = defaultdict(dict), defaultdict(dict)
        for class_id, names in sorted(self.id2label.items()):
            for position, name in enumerate(names.split(",")):
                name = normalize(name.strip())
                if name:
                    (later_names if position else first_names)[name][class_id] = None
        return {
            name: list(first_names.get(name) or later_names[name]) for name in sorted({*first_names, *later_names})
        }

    def get_label_ids(self, label: str | int | list[str | int] | torch.Tensor | np.ndarray) -> list[int]:
        """Class ids for names and/or ids: `get_label_ids("golden retriever") == [207]`.

        Accepts a name, an id, a list of them, or a 0-D/1-D integer tensor or array of ids. Names follow the rule of
        `labels` (exact spelling first, then case-insensitive); `"unconditional"` is the null class, for unguided
        unconditional samples. Raises `ValueError` for unknown names (with close matches), names shared by several
        classes (with every candidate) and ids out of range.
        """
        if isinstance(label, (torch.Tensor, np.ndarray)):
            values = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else label
            if values.ndim > 1 or not np.issubdtype(values.dtype, np.integer):
                raise ValueError(
                    f"class_labels as a {type(label).__name__} must hold integer class ids in at most one dimension,"
                    f" got dtype {label.dtype} and shape {tuple(label.shape)}."
                )
            label = values.tolist()
        items = label if isinstance(label, (list, tuple)) else [label]
        return [self._label_id(item) for item in items]

    def condition_ids(self, class_labels) -> list[int]:
        """The ids a call samples: those of `class_labels`, or the null class once for an unconditional model."""
        unconditional = self.transformer.config.num_classes == 0
        if class_labels is None:
            if not unconditional:
                raise ValueError("class_labels is required: give a class id, a class name or a list of them.")
            return [self.transformer.null_class_id]
        is_null_name = isinstance(class_labels, str) and class_labels.strip().lower() == UNCONDITIONAL_LABEL
        if unconditional and not is_null_name:
            raise ValueError(f"This model is unconditional: call it without class_labels (got {class_labels!r}).")
        return self.get_label_ids(class_labels)

    def _label_id(self, item: str | int) -> int:
        num_classes = self.transformer.config.num_classes
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < num_classes:
                raise ValueError(f"Class id {item} is out of range: ids must be in [0, {num_classes}).")
            return int(item)
        if not isinstance(item, str):
            raise ValueError(f"A class label must be an int id or a class name, got {type(item).__name__}: {item!r}.")
        exact, lowered = self._name_candidates()
        candidates = exact.get(item.strip()) or lowered.get(item.strip().lower())
        if candidates is None and item.strip().lower() == UNCONDITIONAL_LABEL:
            return self.transformer.null_class_id
        if candidates is None:
            matches = difflib.get_close_matches(item, list(exact), n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""
            raise ValueError(
                f"Unknown class name {item!r}.{hint} See `pipe.labels` for the {len(self.labels)} known names."
            )
        if len(candidates) > 1:
            listed = "; ".join(f"{class_id} ({self.id2label[class_id]})" for class_id in candidates)
            raise ValueError(f"Class name {item!r} is ambiguous: it names classes {listed}. Pass the class id.")
        return candidates[0]

    def check_inputs(self, num_labels, *sampling_inputs):
        if num_labels == 0:
            raise ValueError("class_labels is empty: give at least one class id or name.")
        self.check_sampling_inputs(num_labels, *sampling_inputs)

    # ------------------------------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor | None = None,
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
            class_labels: a class id, a class name (any synonym, e.g. `"golden retriever"`; `"unconditional"` for the
                null class), a list of them, or a 1-D integer tensor or array of ids. See `get_label_ids`. `None`
                for an unconditional model (`num_classes == 0`, e.g. fine-tuned with `--unconditional`).
            num_images_per_prompt: images per label.
            num_inference_steps: ODE steps (Heun uses 2N-1 model evaluations).
            guidance_scale: classifier-free guidance weight w on the velocity, v_u + w (v_c - v_u); only w > 1
                guides, any w <= 1 samples the conditional model alone.
            guidance_interval_min, guidance_interval_max: guidance applies only for t inside this interval (t = 0
                is noise), with the solver's own boundary test.
            sampling_method: `"heun"`, `"euler"` or `"adam_lm"`; defaults to the scheduler config (PixelGenScheduler
                only).
            timeshift: time-grid shift s; defaults to the scheduler config (a stock scheduler's `shift`).
            solver_order: Adams-Bashforth order for `adam_lm` (1-4) (PixelGenScheduler only).
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
        height = height if height is not None else self.transformer.config.sample_size
        width = width if width is not None else self.transformer.config.sample_size
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        label_ids = self.condition_ids(class_labels)
        if self.transformer.config.num_classes == 0:
            guidance_scale = 1.0  # the only condition is the null class: guidance would change nothing
        self.check_inputs(
            len(label_ids),
            num_images_per_prompt,
            height,
            width,
            (num_inference_steps, guidance_scale, interval_min, interval_max, noise_scale),
            dict(sampling_method=sampling_method, timeshift=timeshift, solver_order=solver_order),
            generator,
            latents,
            output_type,
            callback_on_step_end_tensor_inputs if callback_on_step_end is not None else None,
        )
        self.check_scheduler(sampling_method, solver_order, timeshift)
        self.check_distilled_inputs(num_inference_steps, guidance_scale, sampling_method, timeshift)
        self._guidance_scale = guidance_scale
        self._interrupt = False
        self._current_timestep = None
        device = self._execution_device

        class_labels = torch.tensor(label_ids, dtype=torch.long, device=device).repeat_interleave(
            num_images_per_prompt
        )
        null_labels = torch.full_like(class_labels, self.transformer.null_class_id)
        latents = self.prepare_latents(len(class_labels), noise_scale, generator, device, latents)

        # Each evaluation's PixelGen time (0 = noise) and guidance decision; unguided evaluations skip the null half.
        model_times, guided = self.prepare_schedule(
            num_inference_steps, device, sampling_method, timeshift, solver_order, (interval_min, interval_max)
        )
        self.check_cache(guided)
        latents = self.denoise(
            latents,
            class_labels,
            null_labels,
            model_times,
            guided,
            num_inference_steps,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
