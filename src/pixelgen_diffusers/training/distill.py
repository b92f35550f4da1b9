# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Few-step PixelGen (`pixelgen distill`): a student that samples in 1-8 Euler steps, without guidance passes.

Method: multi-step trajectory distillation with cached teacher ODE targets (see docs/distillation.md for the choice
and its sources). The teacher, at its own solver and with its classifier-free guidance, integrates trajectories
from noise to image once; its states at the student's K + 1 grid times t_0 = 0 < ... < t_K = 1 are stored. The
student (initialised from the teacher) learns, at every grid time t_k, the clean-image prediction whose Euler step

    x_{k+1} = x_k + (t_{k+1} - t_k) (x_hat - x_k) / max(1 - t_k, t_eps)

lands exactly on the teacher's next state, i.e. the target is x_hat* = x_k + max(1 - t_k, t_eps) (x_{k+1} - x_k) /
(t_{k+1} - t_k). It is the x-prediction form of the average velocity over [t_k, t_{k+1}] (MeanFlow's quantity on a
fixed grid) and, for K = 1, Luhman & Luhman's one-step distillation. The student is saved as an ordinary pipeline
folder whose recipe is K Euler steps with guidance_scale 1 and whose `distillation` config entry makes the pipelines
refuse any other schedule or guidance.

Training reuses the trainer's machinery: accelerate, [`EMA`], LoRA (`--lora-rank`), checkpoints that are loadable
pipeline folders written atomically, bit-for-bit `resume`.
"""

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save, save_file

from ..schedulers.scheduling_pixelgen import PixelGenScheduler
from ..utils import atomic_write_bytes, check_number, locked_folder, one_line, replace_directory
from .losses import EMA
from .trainer import (
    DEFAULT_LORA_TARGETS,
    MIXED_PRECISION,
    STATE_DIR,
    _rng_state,
    _set_rng_state,
    add_lora,
    list_checkpoints,
    read_training_state,
    resolve_resume,
)


logger = logging.getLogger(__name__)

MAX_STUDENT_STEPS = 8
CACHE_FILE = "teacher_trajectories.safetensors"
STUDENT_DIR = "student"
# Fields a resume must keep: they decide the cached targets, the student's architecture and the random streams.
FIXED_FIELDS = ("teacher", "num_inference_steps", "guidance_scale", "teacher_steps", "teacher_sampling_method")
FIXED_FIELDS += ("num_trajectories", "prompts", "seed", "lora_rank", "lora_alpha", "lora_target_modules")


@dataclass
class DistillationConfig:
    r"""
    Everything a distillation run depends on; stored in every checkpoint.

    `teacher`: a PixelGen pipeline folder or Hub id (class-to-image or text-to-image). `num_inference_steps`: the
    student's Euler steps K (1-8). `guidance_scale`: the teacher's classifier-free guidance distilled into the
    student (default: the teacher's recipe), with the teacher's guidance interval. `teacher_steps` /
    `teacher_sampling_method`: the teacher's solver for the cached trajectories (default: its recipe, the step count
    rounded up to a multiple of K so that the student's grid times lie on the teacher's grid; same timeshift).
    `num_trajectories` trajectories are cached in `output_dir`, conditions in turn: every class, or every prompt of
    `prompts` (required for text-to-image). The cache holds the teacher's state after every one of its steps, so
    students of several step counts can share one (`trajectory_cache`: its path, default
    `output_dir/teacher_trajectories.safetensors`; give them the same `teacher_steps`). `lora_rank`: train a LoRA
    adapter on the frozen teacher instead of all weights (LCM-LoRA's form); the saved folders hold the fused weights
    and the adapter.
    """

    teacher: str
    output_dir: str
    num_inference_steps: int = 4
    guidance_scale: float | None = None
    teacher_steps: int | None = None
    teacher_sampling_method: str | None = None
    num_trajectories: int = 2048
    prompts: list[str] | None = None
    trajectory_cache: str | None = None
    teacher_batch_size: int = 256
    max_steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    ema_decay: float = 0.99
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_target_modules: list[str] | None = None
    mixed_precision: str = "auto"
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    checkpoints_total_limit: int | None = 2
    resume: str | None = None

    def __post_init__(self):
        """Every value is checked before any work; errors name the field and its `pixelgen distill` flag."""

        def check(name, **bounds):
            value = getattr(self, name)
            if value is not None:
                check_number(f"{name} (--{name.replace('_', '-')})", value, **bounds)

        check("num_inference_steps", integer=True, minimum=1, maximum=MAX_STUDENT_STEPS)
        for name in ("teacher_steps", "num_trajectories", "teacher_batch_size", "max_steps", "batch_size"):
            check(name, integer=True, minimum=1)
        for name in ("log_every", "checkpoint_every", "checkpoints_total_limit", "lora_rank"):
            check(name, integer=True, minimum=1)
        check("seed", integer=True, minimum=0)
        check("guidance_scale")
        check("learning_rate", minimum=0, exclusive_minimum=True)
        check("lora_alpha", minimum=0, exclusive_minimum=True)
        for name in ("weight_decay", "max_grad_norm"):
            check(name, minimum=0)
        check("ema_decay", minimum=0, maximum=1)
        if self.ema_decay == 1:
            raise ValueError("ema_decay (--ema-decay) must be below 1, got 1 (the average would never move).")
        if self.teacher_steps is not None and self.teacher_steps % self.num_inference_steps:
            multiples = ", ".join(str(self.num_inference_steps * m) for m in range(1, 4))
            raise ValueError(
                f"teacher_steps (--teacher-steps) is {self.teacher_steps}, not a multiple of num_inference_steps"
                f" ({self.num_inference_steps}), so the student's grid times would not lie on the teacher's grid;"
                f" accepted: multiples of {self.num_inference_steps} ({multiples}, ...)."
            )
        if self.teacher_sampling_method is not None:
            PixelGenScheduler.check_options(self.teacher_sampling_method)
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision is {self.mixed_precision!r}; accepted: {', '.join(MIXED_PRECISION)}.")
        if self.lora_rank is None and (self.lora_alpha is not None or self.lora_target_modules is not None):
            raise ValueError("lora_alpha and lora_target_modules need lora_rank (--lora-rank) to train a LoRA.")
        if self.prompts is not None and (not self.prompts or not all(isinstance(p, str) for p in self.prompts)):
            raise ValueError("prompts must be a non-empty list of strings (--prompts FILE: one prompt per line).")

    def to_json_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------------- the teacher
def load_teacher(config: DistillationConfig):
    """The teacher pipeline, float32, progress bar off. A teacher that cannot be guided while guidance is asked for
    (a class-to-image model without classes, a text-to-image folder without its text encoder) is a ValueError."""
    from ..conversion.hub import load_pipeline
    from ..utils import is_text_to_image

    teacher = load_pipeline(config.teacher)
    teacher.set_progress_bar_config(disable=True)
    text_to_image = is_text_to_image(teacher)
    if not hasattr(teacher.scheduler, "guidance_mask"):
        raise ValueError(
            f"teacher {config.teacher!r} uses {type(teacher.scheduler).__name__}; distillation needs its"
            " PixelGenScheduler (accepted: a PixelGen folder as saved or converted)."
        )
    if teacher.config.get("distillation"):
        raise ValueError(f"teacher {config.teacher!r} is a distilled student already; accepted: a PixelGen teacher.")
    guidance_scale = config.guidance_scale if config.guidance_scale is not None else teacher.config.guidance_scale
    if text_to_image:
        if config.prompts is None:
            raise ValueError(
                "prompts (--prompts FILE) is required for a text-to-image teacher: the conditions to distil on, one"
                " prompt per line."
            )
        if teacher.text_encoder is None:
            if not teacher.config.get("text_encoder_id"):
                raise ValueError(
                    f"teacher {config.teacher!r} has no text encoder (no text_encoder/ folder, no text_encoder_id):"
                    " it cannot encode the prompts, nor the empty prompt of its unconditional branch; accepted: a"
                    " text-to-image folder that ships its text encoder or names it in text_encoder_id."
                )
            teacher.load_text_encoder(dtype=torch.float32)
    elif config.prompts is not None:
        raise ValueError("prompts (--prompts) belongs to text-to-image teachers; this teacher is class-to-image.")
    elif guidance_scale > 1 and teacher.transformer.config.num_classes == 0:
        raise ValueError(
            f"guidance_scale is {guidance_scale}, but the teacher {config.teacher!r} is unconditional (no classes):"
            " it has no conditional branch to guide; accepted: guidance_scale 1.0."
        )
    return teacher, guidance_scale


def teacher_recipe(config: DistillationConfig, teacher, guidance_scale: float) -> dict:
    """The teacher's solver for the cached trajectories (see `DistillationConfig`)."""
    steps = config.teacher_steps
    if steps is None:
        multiple = config.num_inference_steps
        steps = multiple * math.ceil(teacher.config.num_inference_steps / multiple)
    return dict(
        num_inference_steps=steps,
        sampling_method=config.teacher_sampling_method or teacher.scheduler.config.sampling_method,
        guidance_scale=guidance_scale,
        guidance_interval_min=teacher.config.guidance_interval_min,
        guidance_interval_max=teacher.config.guidance_interval_max,
    )


def _condition_batches(teacher, config: DistillationConfig):
    """The conditions of the trajectories, in turn: (condition per trajectory, pipeline call arguments per batch)."""
    num = config.num_trajectories
    if hasattr(teacher, "encode_prompt"):
        prompt_embeds, negative = teacher.encode_prompt(config.prompts, device=teacher.device)
        index = torch.arange(num) % len(config.prompts)
        conditions = prompt_embeds.float().cpu()[index]
        negative = negative[:1]  # the empty prompt's embedding, shared by every row
        return conditions, lambda rows: dict(prompt_embeds=conditions[rows], negative_prompt_embeds=negative)
    num_classes = max(teacher.transformer.config.num_classes, 1)
    conditions = torch.arange(num) % num_classes
    if teacher.transformer.config.num_classes == 0:
        conditions = torch.full((num,), teacher.transformer.null_class_id)
        return conditions, lambda rows: dict(num_images_per_prompt=len(rows))  # the null class, once per row
    return conditions, lambda rows: dict(class_labels=conditions[rows].tolist())


@torch.no_grad()
def compute_trajectories(teacher, config: DistillationConfig, recipe: dict, progress: bool = True) -> dict:
    """Runs the teacher from `num_trajectories` noises (seeded by `seed`) and keeps its state after every step:
    `states` (N, S + 1, C, H, W) float32 for S teacher steps, states[:, 0] the scaled noise and states[:, S] the
    image, and `conditions` (class ids (N,) or prompt embeddings (N, L, D))."""
    from tqdm.auto import tqdm

    transformer = teacher.transformer
    size, channels = transformer.config.sample_size, transformer.config.in_channels
    generator = torch.Generator().manual_seed(config.seed)
    noise = torch.randn(config.num_trajectories, channels, size, size, generator=generator)
    conditions, call_arguments = _condition_batches(teacher, config)
    states = []
    for start in tqdm(range(0, len(noise), config.teacher_batch_size), desc="teacher", disable=not progress):
        rows = torch.arange(start, min(start + config.teacher_batch_size, len(noise)))
        captured = [noise[rows] * teacher.config.noise_scale]

        def capture(pipeline, index, timestep, callback_kwargs):
            """After every teacher step that ends on a student grid time (Heun's steps end on their corrector)."""
            scheduler = pipeline.scheduler
            last = index == len(scheduler.timesteps) - 1
            if last or (index + 1) % scheduler.order == 0:
                captured.append(callback_kwargs["latents"].float().cpu())
            return {}

        teacher(
            **call_arguments(rows),
            latents=noise[rows].to(teacher.device),
            output_type="latent",
            callback_on_step_end=capture,
            **recipe,
        )
        states.append(torch.stack(captured, dim=1))
    return {"states": torch.cat(states).contiguous(), "conditions": conditions.contiguous()}


def cached_trajectories(teacher, config: DistillationConfig, recipe: dict, accelerator) -> dict:
    """The teacher's trajectories from the cache file (`trajectory_cache`) when it was computed for the same
    teacher, recipe and conditions; else computed (on the main process) and written atomically."""
    path = Path(config.trajectory_cache or Path(config.output_dir) / CACHE_FILE)
    key = {
        "teacher": str(config.teacher),
        "recipe": recipe,
        "num_trajectories": config.num_trajectories,
        "seed": config.seed,
        "timeshift": teacher.scheduler.config.timeshift,
        "prompts": hashlib.sha256(json.dumps(config.prompts).encode()).hexdigest(),
    }
    key = json.dumps(key, sort_keys=True)
    with accelerator.main_process_first():
        if path.is_file():
            try:
                from safetensors import safe_open

                with safe_open(str(path), "pt") as file:
                    if file.metadata().get("key") == key:
                        return load_file(path)
            except Exception as error:  # unreadable: computed again
                logger.warning(f"Ignoring {path}: {one_line(error)}.")
        if not accelerator.is_main_process:
            raise RuntimeError(f"{path} is missing after the main process computed it")
        start = time.perf_counter()
        trajectories = compute_trajectories(teacher, config, recipe)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save(trajectories, metadata={"key": key}))
        logger.warning(
            f"Cached {config.num_trajectories} teacher trajectories in {path} ({time.perf_counter() - start:.0f} s)."
        )
        return trajectories


def distillation_targets(states, times, segment, t_eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For rows of `states` (B, K + 1, C, H, W) and their segments k (B,): the student's input x_k, its time t_k
    and the clean-image prediction whose Euler step lands on x_{k+1} (see the module docstring)."""
    rows = torch.arange(len(segment))
    sample, next_sample = states[rows, segment], states[rows, segment + 1]
    t, t_next = times[segment], times[segment + 1]
    scale = ((1 - t).clamp_min(t_eps) / (t_next - t)).view(-1, 1, 1, 1)
    return sample, t, sample + scale * (next_sample - sample)


# ------------------------------------------------------------------------------------------------- the student
def make_student_pipeline(teacher, transformer, config: DistillationConfig, guidance_scale: float, recipe: dict):
    """The student as the teacher's pipeline class: its transformer, an Euler scheduler on the teacher's time grid,
    and a recipe of K steps without guidance; `distillation` records what it accepts and where it comes from."""
    scheduler = PixelGenScheduler(
        sampling_method="euler", timeshift=teacher.scheduler.config.timeshift, t_eps=teacher.scheduler.config.t_eps
    )
    components = {**teacher.components, "transformer": transformer, "scheduler": scheduler}
    settings = {name: teacher.config[name] for name in ("noise_scale", "guidance_interval_min")}
    settings["guidance_interval_max"] = teacher.config.guidance_interval_max
    if "id2label" in teacher.config:
        settings["id2label"] = {int(k): v for k, v in teacher.config.id2label.items()}
    if "text_encoder_id" in teacher.config:
        settings["text_encoder_id"] = teacher.config.text_encoder_id
    distillation = {
        "num_inference_steps": [config.num_inference_steps],
        "guidance_scale": guidance_scale,
        "teacher": str(config.teacher),
        "teacher_recipe": recipe,
        "method": "trajectory" if config.lora_rank is None else "trajectory-lora",
    }
    pipeline = type(teacher)(
        **components, num_inference_steps=config.num_inference_steps, guidance_scale=1.0, distillation=distillation,
        **settings,
    )  # fmt: skip
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@torch.no_grad()
def fused_copy(transformer):
    """A plain copy of a LoRA-adapted transformer with the adapter merged into its weights."""
    import copy

    fused = copy.deepcopy(transformer)
    fused.fuse_lora()
    fused.unload_lora()
    return fused


class Distiller:
    """Builds a distillation run from a [`DistillationConfig`] and trains; `distill(config)` is the one-call form."""

    def __init__(self, config: DistillationConfig, progress: bool = True):
        from accelerate import Accelerator

        self.resume_from = None
        if config.resume is not None:
            self.resume_from = resolve_resume(config.resume, Path(config.output_dir))
            if self.resume_from is not None:
                recorded = read_training_state(self.resume_from)["config"]
                for name in FIXED_FIELDS:
                    if recorded.get(name) != getattr(config, name):
                        raise ValueError(
                            f"{name} is {getattr(config, name)!r}, but the checkpoint's run has"
                            f" {recorded.get(name)!r}; a resume keeps it (omit --{name.replace('_', '-')}), or distil"
                            " into another output_dir"
                        )
        self.config, self.progress = config, progress
        mixed_precision = config.mixed_precision
        if mixed_precision == "auto":
            mixed_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        self.accelerator = Accelerator(mixed_precision=mixed_precision)
        self.output_dir = Path(config.output_dir)
        self.teacher, self.guidance_scale = load_teacher(config)
        self.teacher.to(self.accelerator.device)
        self.recipe = teacher_recipe(config, self.teacher, self.guidance_scale)
        self.t_eps = self.teacher.scheduler.config.t_eps

        torch.manual_seed(config.seed)
        import copy

        transformer = copy.deepcopy(self.teacher.transformer).float()
        if config.lora_rank is not None:
            model_type = "t2i" if hasattr(self.teacher, "encode_prompt") else "c2i"
            targets = config.lora_target_modules or DEFAULT_LORA_TARGETS[model_type]
            add_lora(transformer, config.lora_rank, config.lora_alpha, targets, self.accelerator.is_main_process)
        transformer.train()
        self.ema = EMA(transformer, config.ema_decay)
        self.parameters = [parameter for parameter in transformer.parameters() if parameter.requires_grad]
        optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.transformer, self.optimizer = self.accelerator.prepare(transformer, optimizer)
        self.ema.model.to(self.accelerator.device)
        rank = self.accelerator.process_index
        self.generator = torch.Generator().manual_seed(config.seed + 1 + rank)
        self.step = 0

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.transformer)

    def _trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {
            name: parameter.detach().cpu().contiguous()
            for name, parameter in self.unwrapped.named_parameters()
            if parameter.requires_grad
        }

    def student_pipeline(self, transformer=None):
        """The student pipeline with the EMA weights (a LoRA's fused into a plain copy)."""
        transformer = transformer if transformer is not None else self.ema.model
        if self.config.lora_rank is not None:
            transformer = fused_copy(transformer)
        return make_student_pipeline(self.teacher, transformer, self.config, self.guidance_scale, self.recipe)

    # ------------------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """`checkpoint-<step>`: the student pipeline (EMA weights; a LoRA run also its adapter as
        `pytorch_lora_weights.safetensors`) and `training_state/`, written into a unique temporary folder and renamed
        into place, so a run killed mid-save leaves the previous checkpoints intact."""
        accelerator = self.accelerator
        final = self.output_dir / f"checkpoint-{self.step}"
        if not all(torch.isfinite(parameter).all() for parameter in self.ema.model.parameters()):
            raise FloatingPointError(
                f"distillation diverged: the weights hold NaN or infinite values at step {self.step}; resume from"
                " the last checkpoint with a lower --learning-rate"
            )
        rng_states = [_rng_state(self.generator)]
        if accelerator.num_processes > 1:  # every process's batch stream, written by the main process
            from accelerate.utils import gather_object

            rng_states = gather_object(rng_states)
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            temporary = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.output_dir))
            try:
                self.student_pipeline().save_pretrained(temporary)
                if self.config.lora_rank is not None:
                    self._save_lora(temporary)
                (temporary / STATE_DIR).mkdir()
                save_file(self._trainable_state_dict(), temporary / STATE_DIR / "model.safetensors")
                save_file(self.ema.state_dict(), temporary / STATE_DIR / "ema.safetensors")
                torch.save(self.optimizer.state_dict(), temporary / STATE_DIR / "optimizer.pt")
                for rank, rng_state in enumerate(rng_states):
                    torch.save(rng_state, temporary / STATE_DIR / f"rng_state_{rank}.pt")
                state = {"step": self.step, "config": self.config.to_json_dict()}
                (temporary / STATE_DIR / "state.json").write_text(json.dumps(state, indent=2, allow_nan=False))
                replace_directory(temporary, final)
            except BaseException:
                shutil.rmtree(temporary, ignore_errors=True)
                raise
            limit = self.config.checkpoints_total_limit
            others = [path for path in list_checkpoints(self.output_dir) if path.name != final.name]
            for old in others[: max(0, len(others) - (limit - 1))] if limit is not None else []:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()
        return final

    def _save_lora(self, folder: Path) -> None:
        """The adapter, in diffusers' LoRA format: `load_lora_weights` on the teacher pipeline applies it."""
        from peft.utils import get_peft_model_state_dict

        type(self.teacher).save_lora_weights(
            folder,
            transformer_lora_layers=get_peft_model_state_dict(self.ema.model),
            transformer_lora_adapter_metadata=self.ema.model.peft_config["default"].to_dict(),
        )

    def load_checkpoint(self, checkpoint: Path) -> None:
        state_dir = checkpoint / STATE_DIR
        try:
            state = read_training_state(checkpoint)
            self.unwrapped.load_state_dict(load_file(state_dir / "model.safetensors"), strict=False)
            self.ema.load_state_dict(load_file(state_dir / "ema.safetensors"))
            self.optimizer.load_state_dict(torch.load(state_dir / "optimizer.pt", weights_only=True))
            rng_file = state_dir / f"rng_state_{self.accelerator.process_index}.pt"
            _set_rng_state(torch.load(rng_file, weights_only=True), self.generator)
        except ValueError:
            raise
        except Exception as error:
            raise ValueError(
                f"cannot resume from {checkpoint}: {type(error).__name__}: {one_line(error)} (a file is missing,"
                " truncated or corrupt); resume from an earlier checkpoint (resume=path/to/checkpoint-N)"
            ) from None
        for group in self.optimizer.param_groups:
            group.update(lr=self.config.learning_rate, weight_decay=self.config.weight_decay)
        self.step = state["step"]

    # ------------------------------------------------------------------------------------------ distillation
    def train(self) -> Path:
        """Runs until `max_steps`; returns the last checkpoint folder (a loadable student pipeline)."""
        with locked_folder(self.output_dir, "distill", self.accelerator):
            return self._train()

    def _train(self) -> Path:
        config, accelerator = self.config, self.accelerator
        trajectories = cached_trajectories(self.teacher, config, self.recipe, accelerator)
        if self.resume_from is not None:
            self.load_checkpoint(self.resume_from)
            if self.step > config.max_steps:
                raise ValueError(
                    f"{self.resume_from} is at step {self.step}, beyond max_steps (--max-steps) {config.max_steps}"
                )
            logger.warning(f"Resumed from {self.resume_from} at step {self.step}.")
        if self.step >= config.max_steps:
            return self.save_checkpoint()
        device = accelerator.device
        # The teacher's states at the student's grid times (every stride-th teacher step: the grids are nested).
        states = trajectories["states"][:, :: self.recipe["num_inference_steps"] // config.num_inference_steps]
        times = PixelGenScheduler.time_grid(config.num_inference_steps, self.teacher.scheduler.config.timeshift)
        conditions = trajectories["conditions"]
        from tqdm.auto import tqdm

        progress = tqdm(
            total=config.max_steps, initial=self.step, unit="step", desc="distill",
            disable=not (self.progress and accelerator.is_main_process), dynamic_ncols=True,
        )  # fmt: skip
        log_path = self.output_dir / "distill_log.jsonl"
        window_start, window_loss, window_steps = time.perf_counter(), 0.0, 0
        checkpoint = None
        while self.step < config.max_steps:
            rows = torch.randint(len(states), (config.batch_size,), generator=self.generator)
            segment = torch.randint(config.num_inference_steps, (config.batch_size,), generator=self.generator)
            sample, t, target = distillation_targets(states[rows], times, segment, self.t_eps)
            with accelerator.autocast():
                prediction = self.transformer(
                    sample.to(device), t.to(device), conditions[rows].to(device), return_dict=False
                )[0]
            loss = (prediction.float() - target.to(device)).square().mean()
            accelerator.backward(loss)
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(self.parameters, config.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.ema.update(self.unwrapped)
            self.step += 1
            progress.update()
            window_loss, window_steps = window_loss + loss.detach().float(), window_steps + 1
            if self.step % config.log_every == 0 or self.step == config.max_steps:
                mean = accelerator.reduce(window_loss / window_steps, "mean").item()
                record = {
                    "step": self.step,
                    "loss": mean,
                    "steps_per_s": window_steps / (time.perf_counter() - window_start),
                }
                progress.set_postfix(loss=f"{mean:.4f}")
                if accelerator.is_main_process:
                    with open(log_path, "a") as log_file:
                        log_file.write(json.dumps(record) + "\n")
                window_start, window_loss, window_steps = time.perf_counter(), 0.0, 0
                if not math.isfinite(mean):
                    raise FloatingPointError(
                        f"distillation diverged: the loss is {mean} at step {self.step}; resume from the last"
                        " checkpoint with a lower --learning-rate"
                    )
            if self.step % config.checkpoint_every == 0 or self.step == config.max_steps:
                checkpoint = self.save_checkpoint()
        progress.close()
        return checkpoint if checkpoint is not None else self.save_checkpoint()


def distill(config: DistillationConfig, export: bool = True, progress: bool = True) -> Path:
    """Distils `config.teacher` into a K-step student. Returns `output_dir/student`, a self-contained folder (code
    included: it loads in plain diffusers with `trust_remote_code`), or with `export=False` the last checkpoint."""
    distiller = Distiller(config, progress=progress)
    checkpoint = distiller.train()
    if not export:
        return checkpoint
    from ..conversion.export import export_pipeline

    student_dir = Path(config.output_dir) / STUDENT_DIR
    if distiller.accelerator.is_main_process:
        export_pipeline(checkpoint, student_dir, overwrite=True)
        if config.lora_rank is not None:  # the adapter too, for `load_lora_weights` on the teacher
            adapter = "pytorch_lora_weights.safetensors"
            atomic_write_bytes(student_dir / adapter, (checkpoint / adapter).read_bytes())
    distiller.accelerator.wait_for_everyone()
    return student_dir
