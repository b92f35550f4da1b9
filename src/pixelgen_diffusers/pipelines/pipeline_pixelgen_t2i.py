# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Text-to-image pipeline for PixelGen-XXL/16-T2I (pixel space, no VAE, Qwen3 text encoder).

Imports only torch, diffusers, transformers and its shipped sibling `pipeline_utils_pixelgen.py` (the sampling core
both pipelines share): model folders ship this file as `pipeline.py` beside it, loadable with
`DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder / "pipeline.py", trust_remote_code=True)`.

Text is encoded exactly as upstream's Qwen3 conditioner does, not as other diffusers pipelines do: no chat template,
right padding to the transformer's `txt_max_length`, and the last hidden state of every position (padding included;
the attention mask goes to Qwen only), zero-padded or cut to `txt_embed_dim` features.
"""

import logging
import os
from typing import Any, Callable

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, Qwen3Model

from .pipeline_utils_pixelgen import (
    MAX_SCALE,
    PixelGenLoraLoaderMixin,
    PixelGenPipelineMixin,
    check_number,
)


logger = logging.getLogger(__name__)


class PixelGenT2IPipeline(PixelGenPipelineMixin, DiffusionPipeline, PixelGenLoraLoaderMixin):
    r"""
    Text-to-image generation with a PixelGen transformer that predicts clean pixels.

    Args:
        transformer ([`PixelGenT2ITransformer2DModel`]): the denoiser.
        scheduler ([`PixelGenScheduler`]): the ODE solver (Adams-Bashforth, Euler or Heun) and its time grid; or a
            stock flow-matching scheduler (`FlowMatchEulerDiscreteScheduler`, `FlowMatchHeunDiscreteScheduler`, or
            `UniPCMultistepScheduler` / `DPMSolverMultistepScheduler` with `use_flow_sigmas=True` and
            `prediction_type="flow_prediction"`), whose `shift` / `flow_shift` is the timeshift.
        text_encoder ([`~transformers.Qwen3Model`], *optional*): the text encoder; loaded from `text_encoder_id`
            on the first text prompt when absent.
        tokenizer ([`~transformers.Qwen2Tokenizer`], *optional*): its tokenizer.
        num_inference_steps, guidance_scale, guidance_interval_min, guidance_interval_max, noise_scale:
            the model's recommended sampling settings, used whenever a call does not override them.
        text_encoder_id (`str`, *optional*): where to load the text encoder and tokenizer from when they are not
            given; None for a model whose encoder is not published anywhere (it then has to be passed in).
        txt_max_length, txt_embed_dim (`int`, *optional*): the transformer's text length and feature width, recorded
            (default: read from the transformer) so that `encode_prompt` also works without a transformer.
    """

    # The transformer input that carries the condition.
    _condition_input_name = "encoder_hidden_states"
    model_cpu_offload_seq = "text_encoder->transformer"
    _optional_components = ["text_encoder", "tokenizer"]
    _callback_tensor_inputs = ["latents", "pred_original_sample", "prompt_embeds", "negative_prompt_embeds"]
    _callback_condition_names = ("prompt_embeds", "negative_prompt_embeds")

    def __init__(
        self,
        transformer: ModelMixin,
        scheduler: SchedulerMixin,
        text_encoder: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 4.0,
        guidance_interval_min: float = 0.0,
        guidance_interval_max: float = 1.0,
        noise_scale: float = 1.0,
        text_encoder_id: str | None = "Qwen/Qwen3-1.7B",
        txt_max_length: int | None = None,
        txt_embed_dim: int | None = None,
        distillation: dict | None = None,
    ):
        super().__init__()
        self.check_sampling_defaults(
            num_inference_steps, guidance_scale, guidance_interval_min, guidance_interval_max, noise_scale
        )
        self.register_modules(
            transformer=transformer, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer
        )
        self.register_to_config(
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_interval_min=guidance_interval_min,
            guidance_interval_max=guidance_interval_max,
            noise_scale=noise_scale,
            text_encoder_id=text_encoder_id,
            txt_max_length=txt_max_length or (transformer.config.txt_max_length if transformer is not None else None),
            txt_embed_dim=txt_embed_dim or (transformer.config.txt_embed_dim if transformer is not None else None),
            distillation=distillation,
        )
        self._guidance_scale = guidance_scale
        self._num_timesteps = None
        self._current_timestep = None
        self._interrupt = False

    # ------------------------------------------------------------------------------------------------ text encoding
    def load_text_encoder(self, text_encoder_id: str | None = None, dtype: torch.dtype = torch.bfloat16) -> None:
        """Loads and registers the Qwen3 encoder and its tokenizer (bfloat16, as upstream runs it) from a folder or Hub
        id holding both, or a pipeline folder with `text_encoder/` and `tokenizer/`."""
        text_encoder_id = text_encoder_id or self.config.get("text_encoder_id")
        if text_encoder_id is None:
            raise ValueError(
                "A text prompt needs the text encoder, but none was given and this pipeline records no"
                " `text_encoder_id` to load it from (its encoder ships with its folder). Pass `text_encoder=` and"
                " `tokenizer=` to the pipeline, or call with `prompt_embeds`."
            )
        device = self._execution_device
        in_pipeline_folder = all(
            os.path.isdir(os.path.join(text_encoder_id, name)) for name in ("text_encoder", "tokenizer")
        )
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                text_encoder_id, subfolder="tokenizer" if in_pipeline_folder else ""
            )
            text_encoder = Qwen3Model.from_pretrained(
                text_encoder_id, dtype=dtype, subfolder="text_encoder" if in_pipeline_folder else ""
            )
        except Exception as error:
            raise ValueError(
                f"A text prompt needs the text encoder, but none was given and loading it from {text_encoder_id!r}"
                f" failed ({type(error).__name__}: {error}). Pass `text_encoder=` and `tokenizer=` to the pipeline,"
                " set `text_encoder_id` to a local copy of Qwen/Qwen3-1.7B, or call with `prompt_embeds`."
            ) from error
        self.register_modules(text_encoder=text_encoder.eval(), tokenizer=tokenizer)
        if getattr(self, "_all_hooks", None):
            # Model CPU offload is on: hook the new encoder into the chain like the other components.
            self.enable_model_cpu_offload(device=self._offload_device)
        else:
            text_encoder.to(device)

    def _require_text_encoder(self) -> None:
        """Loads the encoder and tokenizer when both are absent; one without the other is a setup error."""
        if self.text_encoder is None and self.tokenizer is None:
            self.load_text_encoder()
        elif self.text_encoder is None or self.tokenizer is None:
            present, missing = (
                ("tokenizer", "text_encoder") if self.text_encoder is None else ("text_encoder", "tokenizer")
            )
            raise ValueError(
                f"The pipeline has a {present} but no {missing}: text prompts need both. Pass the matching {missing},"
                " or neither (then both load from `text_encoder_id`)."
            )

    def _text_shape(self) -> tuple[int, int]:
        """(txt_max_length, txt_embed_dim): the transformer's, else those recorded in the pipeline config."""
        if self.transformer is not None:
            return self.transformer.config.txt_max_length, self.transformer.config.txt_embed_dim
        if self.config.get("txt_max_length") is None or self.config.get("txt_embed_dim") is None:
            raise ValueError(
                "Encoding prompts without a transformer needs the text shape it expects: this folder does not record"
                " it, so pass `txt_max_length=` and `txt_embed_dim=` (see the transformer's config.json) to"
                " from_pretrained."
            )
        return self.config.txt_max_length, self.config.txt_embed_dim

    def _encode_texts(self, texts: list[str], device: torch.device, name: str = "prompt") -> torch.Tensor:
        """(len(texts), txt_max_length, txt_embed_dim) features of the whole padded sequence, as upstream. Texts longer
        than txt_max_length tokens are cut, as in training, with a warning naming them (`name[i]`)."""
        self._require_text_encoder()
        max_length, embed_dim = self._text_shape()
        for index, ids in enumerate(self.tokenizer(texts, padding=False, truncation=False).input_ids):
            if len(ids) > max_length:
                cut = self.tokenizer.decode(ids[max_length:])
                logger.warning(
                    f"{name}[{index}] is {len(ids)} tokens long and is cut to txt_max_length={max_length} tokens; the"
                    f" model does not read the rest: {cut!r:.200}"
                )
        tokens = self.tokenizer(
            texts,
            max_length=max_length,
            padding="max_length",
            padding_side="right",
            truncation=True,
            return_tensors="pt",
        )
        # The mask is Qwen's only: the transformer sees all positions, padding included, as in training.
        embeds = self.text_encoder(
            input_ids=tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device)
        ).last_hidden_state
        if embeds.shape[-1] < embed_dim:
            embeds = torch.cat([embeds, embeds.new_zeros(*embeds.shape[:-1], embed_dim - embeds.shape[-1])], dim=-1)
        # Upstream's conditioner hands the transformer bfloat16 features whatever the encoder ran in.
        return embeds[..., :embed_dim].to(device=device, dtype=torch.bfloat16)

    def _encode_negative_prompt(self, negative_prompt: str | list[str] | None, device: torch.device) -> torch.Tensor:
        """(1, L, D) for a single (or the default empty) negative prompt, else one row per negative prompt.

        The default "" is encoded on every call, not cached (upstream caches it): one short encoder pass, and never
        stale after the encoder's weights change in place (a LoRA, a fine-tuning step)."""
        if negative_prompt is None:
            negative_prompt = ""
        negative_prompts = self._prompt_list(negative_prompt, "negative_prompt")
        return self._encode_texts(negative_prompts, device, name="negative_prompt")

    @staticmethod
    def _repeat_for_batch(embeds: torch.Tensor, num_prompts: int, num_images_per_prompt: int) -> torch.Tensor:
        """One row shared by all images, or one row per prompt repeated for its images."""
        if len(embeds) == 1:
            return embeds.expand(num_prompts * num_images_per_prompt, -1, -1)
        if len(embeds) != num_prompts:
            raise ValueError(
                f"Got {len(embeds)} negative prompts or embeddings for {num_prompts} prompts: pass one, or exactly"
                f" {num_prompts}."
            )
        return embeds.repeat_interleave(num_images_per_prompt, dim=0)

    def encode_prompt(
        self,
        prompt: str | list[str],
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
        negative_prompt: str | list[str] | None = None,
        do_classifier_free_guidance: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        r"""
        Encodes prompts the way upstream PixelGen does. Needs only the text encoder and tokenizer, so prompts can be
        encoded before the transformer is loaded (`from_pretrained(folder, transformer=None)`; see the README).

        Returns:
            `(prompt_embeds, negative_prompt_embeds)`, each (len(prompt) * num_images_per_prompt, txt_max_length,
            txt_embed_dim), images of one prompt adjacent; `negative_prompt_embeds` is `None` without guidance.
            Both can be passed back as `prompt_embeds` / `negative_prompt_embeds` (with `num_images_per_prompt=1`).
        """
        device = device or self._execution_device
        prompts = self._prompt_list(prompt, "prompt")
        prompt_embeds = self._encode_texts(prompts, device).repeat_interleave(num_images_per_prompt, dim=0)
        if not do_classifier_free_guidance:
            return prompt_embeds, None
        negative_prompt_embeds = self._encode_negative_prompt(negative_prompt, device)
        negative_prompt_embeds = self._repeat_for_batch(negative_prompt_embeds, len(prompts), num_images_per_prompt)
        return prompt_embeds, negative_prompt_embeds.contiguous()

    @staticmethod
    def _prompt_list(prompt, name: str) -> list[str]:
        """A prompt argument as a list of strings; a ValueError naming `name` and the type for anything else (bytes
        and numbers included, which would otherwise iterate or fail deep inside the tokenizer)."""
        if isinstance(prompt, str):
            PixelGenT2IPipeline._check_prompt([prompt], name)
            return [prompt]
        if not isinstance(prompt, (list, tuple)):
            raise ValueError(
                f"{name} must be a string or a list of strings, got {type(prompt).__name__} {prompt!r:.80}."
            )
        PixelGenT2IPipeline._check_prompt(list(prompt), name)
        return list(prompt)

    @staticmethod
    def _check_prompt(prompts: list, name: str) -> None:
        if len(prompts) == 0:
            raise ValueError(f"{name} is an empty list: pass a string or a non-empty list of strings.")
        wrong = [item for item in prompts if not isinstance(item, str)]
        if wrong:
            raise ValueError(
                f"{name} must be a string or a list of strings, got an item of type {type(wrong[0]).__name__}:"
                f" {wrong[0]!r:.80}."
            )
        for index, text in enumerate(prompts):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:  # a lone surrogate: no tokenizer can encode it
                label = name if len(prompts) == 1 else f"{name}[{index}]"
                raise ValueError(
                    f"{label} holds a lone surrogate {text[error.start]!r} at position {error.start}, which is not"
                    f" valid Unicode text: {text!r:.80}."
                ) from None

    def _check_embeds(self, embeds: torch.Tensor, name: str) -> None:
        shape = self._text_shape()
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 3 or tuple(embeds.shape[1:]) != shape:
            got = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise ValueError(
                f"{name} must be a tensor of shape (batch, txt_max_length={shape[0]}, txt_embed_dim={shape[1]}),"
                f" got {got}."
            )
        if not embeds.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {embeds.dtype}.")
        if embeds.device.type == "meta":
            raise ValueError(f"{name} is on the meta device (a shape without data): pass a tensor with data.")
        if not torch.isfinite(embeds).all():
            raise ValueError(f"{name} holds NaN or infinite values.")

    def check_inputs(
        self,
        prompt,
        negative_prompt,
        prompt_embeds,
        negative_prompt_embeds,
        height,
        width,
        num_images_per_prompt,
        sampling_numbers,
        scheduler_options,
        generator,
        latents,
        output_type,
        callback,
    ):
        guidance_scale = check_number("guidance_scale", sampling_numbers[1], minimum=-MAX_SCALE, maximum=MAX_SCALE)
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError(
                "Pass exactly one of `prompt` and `prompt_embeds`, got "
                + ("both." if prompt is not None else "neither.")
            )
        if prompt is not None:
            num_prompts = len(self._prompt_list(prompt, "prompt"))
        else:
            self._check_embeds(prompt_embeds, "prompt_embeds")
            num_prompts = len(prompt_embeds)
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("Pass at most one of `negative_prompt` and `negative_prompt_embeds`, got both.")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            self._prompt_list(negative_prompt, "negative_prompt")
            if len(negative_prompt) != num_prompts:
                raise ValueError(
                    f"negative_prompt has {len(negative_prompt)} entries for {num_prompts} prompts: pass one string"
                    f" or a list of exactly {num_prompts}."
                )
        if negative_prompt_embeds is not None:
            self._check_embeds(negative_prompt_embeds, "negative_prompt_embeds")
            if len(negative_prompt_embeds) not in (1, num_prompts):
                raise ValueError(
                    f"negative_prompt_embeds has batch size {len(negative_prompt_embeds)}; accepted: 1 (shared by all"
                    f" prompts) or {num_prompts} (one per prompt)."
                )

        if (
            prompt is None
            and guidance_scale > 1.0
            and negative_prompt is None
            and negative_prompt_embeds is None
            and self.text_encoder is None
        ):
            raise ValueError(
                "Guidance with `prompt_embeds` needs `negative_prompt_embeds` when the pipeline has no text encoder:"
                " get both from `encode_prompt`, or set guidance_scale=1.0 (no guidance)."
            )
        self.check_sampling_inputs(
            num_prompts,
            num_images_per_prompt,
            height,
            width,
            sampling_numbers,
            scheduler_options,
            generator,
            latents,
            output_type,
            callback,
        )

    # ------------------------------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_interval_min: float | None = None,
        guidance_interval_max: float | None = None,
        sampling_method: str | None = None,
        solver_order: int | None = None,
        timeshift: float | None = None,
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
        Generates images from text.

        Args:
            prompt: a prompt or a list of prompts (or pass `prompt_embeds`).
            negative_prompt: the unconditional prompt, one string or one per prompt; default `""` (as upstream).
            prompt_embeds: (B, txt_max_length, txt_embed_dim) features from `encode_prompt`, instead of `prompt`.
            negative_prompt_embeds: (1 or B, txt_max_length, txt_embed_dim), instead of `negative_prompt`.
            num_images_per_prompt: images per prompt (the embeddings are repeated accordingly).
            num_inference_steps: ODE steps (Heun uses 2N-1 model evaluations).
            guidance_scale: classifier-free guidance weight w on the velocity, v_u + w (v_c - v_u); only w > 1
                guides, any w <= 1 samples the conditional model alone.
            guidance_interval_min, guidance_interval_max: guidance applies only for t inside this interval (t = 0
                is noise), with the solver's own boundary test; with min = 0 the first step is never guided.
            sampling_method: `"adam_lm"`, `"euler"` or `"heun"`; defaults to the scheduler config (PixelGenScheduler
                only).
            solver_order: Adams-Bashforth order for `adam_lm` (1-4); defaults to the scheduler config
                (PixelGenScheduler only).
            timeshift: time-grid shift s; defaults to the scheduler config (a stock scheduler's `shift`).
            noise_scale: the initial noise is `noise_scale` times a standard normal draw (or times `latents`).
            height, width: must equal the model's `sample_size`.
            generator: one generator, or one per image (image i then equals a single run with generator i).
            latents: standard-normal initial noise (B * num_images_per_prompt, C, H, W).
            output_type: `"pil"`, `"np"` (NHWC in [0, 1]), `"pt"` (NCHW in [0, 1]) or `"latent"` (raw sample).
            return_dict: return an `ImagePipelineOutput` rather than a tuple.
            callback_on_step_end: called after every model evaluation as `fn(pipe, i, t, callback_kwargs)`.
            callback_on_step_end_tensor_inputs: tensors passed in `callback_kwargs`, from `_callback_tensor_inputs`;
                `"pred_original_sample"` is the clean image predicted at this evaluation, guided, float32 (B, C, H, W)
                in pixel units (read-only).
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

        self.check_inputs(
            prompt,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            height,
            width,
            num_images_per_prompt,
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
        model_dtype = self.transformer.dtype

        # Each evaluation's PixelGen time (0 = noise) and guidance decision; unguided evaluations skip the null half.
        # Set before the text is encoded, so that a cache that cannot follow this schedule fails first.
        model_times, guided = self.prepare_schedule(
            num_inference_steps, device, sampling_method, timeshift, solver_order, (interval_min, interval_max)
        )
        self.check_cache(guided)

        # 1. Text conditioning: B * num_images_per_prompt rows, images of one prompt adjacent.
        num_prompts = len(prompt_embeds) if prompt is None else (1 if isinstance(prompt, str) else len(prompt))
        if prompt is not None:
            prompt_embeds, _ = self.encode_prompt(
                prompt, device, num_images_per_prompt, do_classifier_free_guidance=False
            )
        else:
            prompt_embeds = prompt_embeds.to(device).repeat_interleave(num_images_per_prompt, dim=0)
        if self.do_classifier_free_guidance:
            if negative_prompt_embeds is None:
                negative_prompt_embeds = self._encode_negative_prompt(negative_prompt, device)
            negative_prompt_embeds = self._repeat_for_batch(
                negative_prompt_embeds.to(device), num_prompts, num_images_per_prompt
            ).to(model_dtype)
        else:
            negative_prompt_embeds = None
        prompt_embeds = prompt_embeds.to(model_dtype)
        batch_size = len(prompt_embeds)

        # 2. Noise.
        latents = self.prepare_latents(batch_size, noise_scale, generator, device, latents)
        latents = self.denoise(
            latents,
            prompt_embeds,
            negative_prompt_embeds,
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
