# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The PixelGen trainer: one loop for one device or many (`accelerate launch`), with EMA, sample grids, atomic
checkpoints that are loadable pipeline folders, and bit-for-bit `--resume`."""

import argparse
import dataclasses
import difflib
import inspect
import json
import logging
import math
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image
import torch
from safetensors.torch import load_file, save_file

from ..pipeline_pixelgen_c2i import PixelGenC2IPipeline
from ..scheduling_pixelgen import PixelGenScheduler
from ..transformer_jit import PIXELGEN_PRESETS, PixelGenTransformer2DModel
from ..utils import atomic_save_image, check_number, locked_folder, one_line, replace_directory
from .data import ImageClassDataset, StepBatchSampler
from .losses import EMA, PixelGenLoss, load_dino, load_lpips


logger = logging.getLogger(__name__)

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_DIR = "training_state"


@dataclass
class TrainingConfig:
    r"""
    Everything a training run depends on; stored in every checkpoint.

    Model: `pretrained` (a pipeline or transformer folder, or Hub id, to fine-tune) or a fresh model from `preset`
    and/or `model_config` (constructor arguments of [`PixelGenTransformer2DModel`], e.g. `{"hidden_size": 128}`);
    `num_classes` always comes from the data. Objective: upstream's defaults (see [`PixelGenLoss`]); `lpips` and
    `dino` are local paths, Hub ids or modules, and enable the perceptual terms; `repa_layer` enables REPA.
    Sampling settings (`sampling_method` ... `guidance_interval_max`) are used for the sample grids and stored as
    the defaults of the saved pipelines.
    """

    data_dir: str
    output_dir: str
    labels_file: str | None = None
    pretrained: str | None = None
    preset: str | None = None
    model_config: dict = field(default_factory=dict)
    sample_size: int = 256
    max_steps: int = 100_000
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    ema_decay: float = 0.9999
    label_dropout: float = 0.1
    p_mean: float = -0.8
    p_std: float = 0.8
    timeshift: float = 1.0
    t_eps: float = 0.05
    noise_scale: float = 1.0
    lpips: str | torch.nn.Module | None = None
    lpips_weight: float = 0.1
    dino: str | torch.nn.Module | None = None
    dino_weight: float = 0.01
    dino_layer: int = -1
    percept_t_threshold: float = 0.3
    repa_layer: int | None = None
    repa_weight: float = 0.5
    adaptive_weight_start: int | None = 400_000
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0
    num_workers: int = 2
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 5000
    checkpoints_total_limit: int | None = None
    resume: str | None = None
    sampling_method: str = "heun"
    sampling_timeshift: float = 1.0
    num_inference_steps: int = 50
    guidance_scale: float = 1.0
    guidance_interval_min: float = 0.0
    guidance_interval_max: float = 1.0

    def __post_init__(self):
        """Every value is checked before any work, so a bad flag is one clear error, not NaN weights hours later.
        Errors name the field and its `pixelgen train` flag."""

        def check(name, **bounds):
            value = getattr(self, name)
            if value is not None or name not in OPTIONAL_FIELDS:
                check_number(f"{name} (--{name.replace('_', '-')})", value, **bounds)

        for name in ("max_steps", "batch_size", "log_every", "sample_every", "checkpoint_every"):
            check(name, integer=True, minimum=1)
        check("num_inference_steps", integer=True, minimum=1)
        check("sample_size", integer=True, minimum=1)
        check("checkpoints_total_limit", integer=True, minimum=1)
        for name in ("seed", "num_workers", "adaptive_weight_start", "repa_layer"):
            check(name, integer=True, minimum=0)
        check("dino_layer", integer=True)
        check("learning_rate", minimum=0, exclusive_minimum=True)
        for name in ("weight_decay", "max_grad_norm", "lpips_weight", "dino_weight", "repa_weight"):
            check(name, minimum=0)
        for name in ("adam_beta1", "adam_beta2", "ema_decay", "label_dropout", "percept_t_threshold"):
            check(name, minimum=0, maximum=1)
        if self.adam_beta1 == 1 or self.adam_beta2 == 1:
            raise ValueError("adam_beta1 and adam_beta2 must be below 1 (Adam divides by 1 - beta**step).")
        check("p_mean")
        for name in ("p_std", "timeshift", "noise_scale", "sampling_timeshift"):
            check(name, minimum=0, exclusive_minimum=True)
        check("t_eps", minimum=0, maximum=1, exclusive_minimum=True)
        # The saved pipelines' defaults: what would make a checkpoint folder draw black images is refused now.
        PixelGenScheduler.check_options(self.sampling_method, self.sampling_timeshift)
        PixelGenC2IPipeline.check_sampling_defaults(
            self.num_inference_steps,
            self.guidance_scale,
            self.guidance_interval_min,
            self.guidance_interval_max,
            self.noise_scale,
        )
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision is {self.mixed_precision!r}; accepted: {', '.join(MIXED_PRECISION)}.")
        if self.preset is not None and self.preset not in PIXELGEN_PRESETS:
            raise ValueError(f"Unknown preset {self.preset!r}; available: {', '.join(PIXELGEN_PRESETS)}.")
        if self.pretrained is not None and (self.preset is not None or self.model_config):
            raise ValueError("Pass either pretrained (fine-tuning) or preset/model_config (a new model), not both.")
        if not isinstance(self.model_config, dict):
            raise ValueError(f"model_config must be a dict, got {type(self.model_config).__name__}.")
        if "num_classes" in self.model_config:
            raise ValueError("model_config must not set num_classes: it is the number of classes in the data.")
        if self.pretrained is None:
            check_architecture(self)
        if self.repa_layer is not None and self.dino is None:
            raise ValueError("repa_layer is set but dino is not: REPA aligns to DINOv2 features, pass --dino.")
        if self.resume is not None and not isinstance(self.resume, str):
            raise ValueError(f"resume must be 'latest' or a checkpoint folder, got {self.resume!r}.")

    def to_json_dict(self) -> dict:
        """The config as JSON; backbones given as modules are recorded by class name."""
        values = {config_field.name: getattr(self, config_field.name) for config_field in dataclasses.fields(self)}
        for name in ("lpips", "dino"):
            if isinstance(values[name], torch.nn.Module):
                values[name] = f"<{type(values[name]).__name__} module>"
        return values


# Fields that may be None (off / keep all / unset).
OPTIONAL_FIELDS = ("checkpoints_total_limit", "adaptive_weight_start", "repa_layer")
# Fields a resume keeps (stored in every checkpoint, so a resume needs none of them): the architecture, and the seed
# (it decides the initial weights, the data order and the noise streams of the whole run).
ARCHITECTURE_FIELDS = ("pretrained", "preset", "model_config", "sample_size", "repa_layer", "seed")


# ---------------------------------------------------------------------------------------------------- the model
def transformer_arguments(config: TrainingConfig, num_classes: int) -> dict:
    """Constructor arguments of a new model: the preset, the sample size, the data's classes, then model_config."""
    arguments = dict(PIXELGEN_PRESETS[config.preset]) if config.preset else {}
    arguments.update(sample_size=config.sample_size, num_classes=num_classes)
    arguments.update(config.model_config)
    return arguments


def check_architecture(config: TrainingConfig) -> None:
    """Builds the new model on the `meta` device (no memory, no time): unknown or invalid model_config entries are
    a ValueError before any data is read."""
    accepted = [name for name in inspect.signature(PixelGenTransformer2DModel.__init__).parameters if name != "self"]
    unknown = [name for name in config.model_config if name not in accepted]
    if unknown:
        matches = difflib.get_close_matches(unknown[0], accepted, n=1)
        hint = f" (did you mean {matches[0]!r}?)" if matches else ""
        raise ValueError(
            f"model_config has {unknown[0]!r}{hint}, which is not a PixelGenTransformer2DModel argument; accepted: "
            f"{', '.join(name for name in accepted if name != 'num_classes')}."
        )
    try:
        with torch.device("meta"):
            PixelGenTransformer2DModel(**transformer_arguments(config, num_classes=1))
    except (TypeError, ValueError) as error:
        raise ValueError(f"model_config (with preset {config.preset} and sample_size): {error}") from None


def build_transformer(config: TrainingConfig, num_classes: int) -> PixelGenTransformer2DModel:
    if config.pretrained is not None:
        path = Path(config.pretrained)
        subfolder = "transformer" if not (path / "config.json").is_file() else None
        transformer = PixelGenTransformer2DModel.from_pretrained(config.pretrained, subfolder=subfolder)
        if transformer.config.num_classes != num_classes:
            raise ValueError(
                f"The pretrained model has {transformer.config.num_classes} classes but data_dir has {num_classes};"
                " they must match."
            )
        return transformer
    transformer = PixelGenTransformer2DModel(**transformer_arguments(config, num_classes))
    initialize_weights(transformer)
    return transformer


@torch.no_grad()
def initialize_weights(transformer: PixelGenTransformer2DModel) -> None:
    """JiT's initialisation of a new model: Xavier-uniform linears (and patch convs, as linears) with zero biases,
    N(0, 0.02) class/time embeddings and in-context positions, and zeroed adaLN modulations and output layer, so
    that every block starts as the identity."""
    for module in transformer.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    for conv in (transformer.patch_embedder.proj_in, transformer.patch_embedder.proj_out):
        if conv is not None:
            torch.nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
            if conv.bias is not None:
                torch.nn.init.zeros_(conv.bias)
    torch.nn.init.normal_(transformer.class_embedder.weight, std=0.02)
    torch.nn.init.normal_(transformer.time_embedder.linear_1.weight, std=0.02)
    torch.nn.init.normal_(transformer.time_embedder.linear_2.weight, std=0.02)
    torch.nn.init.normal_(transformer.in_context_pos_embed, std=0.02)
    zeroed = [block.adaln_modulation for block in transformer.transformer_blocks]
    zeroed += [transformer.final_layer.adaln_modulation, transformer.final_layer.proj_out]
    for linear in zeroed:
        torch.nn.init.zeros_(linear.weight)
        torch.nn.init.zeros_(linear.bias)


def make_pipeline(transformer, config: TrainingConfig, id2label: dict[int, str]) -> PixelGenC2IPipeline:
    """The pipeline a checkpoint is saved as, with the run's sampling settings as its defaults."""
    scheduler = PixelGenScheduler(sampling_method=config.sampling_method, timeshift=config.sampling_timeshift)
    pipeline = PixelGenC2IPipeline(
        transformer,
        scheduler,
        id2label=id2label,
        num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale,
        guidance_interval_min=config.guidance_interval_min,
        guidance_interval_max=config.guidance_interval_max,
        noise_scale=config.noise_scale,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def image_grid(images: list[PIL.Image.Image], rows: int) -> PIL.Image.Image:
    columns = math.ceil(len(images) / rows)
    width, height = images[0].size
    grid = PIL.Image.new("RGB", (columns * width, rows * height))
    for index, image in enumerate(images):
        grid.paste(image, ((index % columns) * width, (index // columns) * height))
    return grid


@torch.no_grad()
def save_sample_grid(transformer, config: TrainingConfig, id2label: dict[int, str], path: Path) -> None:
    """One row per class (up to 10), four images each, from a fixed seed so grids are comparable across steps."""
    pipeline = make_pipeline(transformer, config, id2label)
    class_ids = list(range(min(len(id2label), 10)))
    generator = torch.Generator(transformer.device).manual_seed(config.seed)
    images = pipeline(class_ids, num_images_per_prompt=4, generator=generator).images
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_image(image_grid(images, rows=len(class_ids)), path)


# ---------------------------------------------------------------------------------------------- checkpointing
def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (incomplete saves live under temporary names and are never listed)."""
    if not output_dir.is_dir():
        return []
    found = [(int(match[1]), path) for path in output_dir.iterdir() if (match := CHECKPOINT_PATTERN.match(path.name))]
    return [path for _, path in sorted(found)]


def resolve_resume(resume: str, output_dir: Path) -> Path | None:
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume)
    if not (path / STATE_DIR / "state.json").is_file():
        raise ValueError(f"resume {resume!r} is not a checkpoint folder (no {STATE_DIR}/state.json); or use 'latest'.")
    return path


def read_training_state(checkpoint: Path) -> dict:
    """A checkpoint's `training_state/state.json` (step, process count, dataset size, the run's config)."""
    path = checkpoint / STATE_DIR / "state.json"
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not isinstance(state.get("step"), int) or "config" not in state:
            raise ValueError("it lacks the step or the config")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(
            f"cannot resume from {checkpoint}: {path} is unreadable ({one_line(error)}); resume from an earlier"
            " checkpoint (--resume path/to/checkpoint-N)"
        ) from None
    return state


def config_for_resume(config: TrainingConfig, recorded: dict, explicit: set[str] | None = None) -> TrainingConfig:
    """The config a resumed run uses: the checkpoint's architecture (a field left at its default, or not given on
    the command line, takes the recorded value; a different one is refused) and everything else as given now.
    `explicit`: the fields the user set (the CLI knows); fields not in it are taken from the checkpoint."""
    defaults = TrainingConfig(data_dir="", output_dir="")
    values = {}
    for config_field in dataclasses.fields(TrainingConfig):
        name = config_field.name
        given = getattr(config, name)
        if name not in recorded or name in ("resume", "output_dir"):
            values[name] = given
        elif explicit is not None:
            values[name] = given if name in explicit else recorded[name]
        elif name in ARCHITECTURE_FIELDS and given == getattr(defaults, name):
            values[name] = recorded[name]
        else:
            values[name] = given
        if name in ARCHITECTURE_FIELDS and values[name] != recorded[name]:
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"{name} ({flag}) is {values[name]!r}, but the checkpoint's run has {recorded[name]!r}; a resume keeps"
                f" the architecture and the seed (omit {flag}), or start a new run in another --output-dir"
            )
    return dataclasses.replace(config, **values)


def changed_settings(config: TrainingConfig, recorded: dict) -> dict[str, tuple]:
    """Fields whose value differs from the checkpoint's run: name -> (recorded, now)."""
    current = config.to_json_dict()
    ignored = ("resume", "output_dir")
    return {
        name: (recorded[name], current[name])
        for name in current
        if name in recorded and name not in ignored and recorded[name] != current[name]
    }


def _rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Trainer:
    """Builds the run from a [`TrainingConfig`] and trains; `train(config)` is the one-call form."""

    def __init__(self, config: TrainingConfig):
        from accelerate import Accelerator

        self.resume_from, self.resumed_changes = None, {}
        if config.resume is not None:
            self.resume_from = resolve_resume(config.resume, Path(config.output_dir))
            if self.resume_from is not None:
                recorded = read_training_state(self.resume_from)["config"]
                config = config_for_resume(config, recorded)
                self.resumed_changes = changed_settings(config, recorded)
        self.config = config
        mixed_precision = config.mixed_precision
        if mixed_precision == "auto":
            mixed_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        self.accelerator = Accelerator(mixed_precision=mixed_precision)
        self.output_dir = Path(config.output_dir)
        self.dataset = ImageClassDataset(config.data_dir, self._sample_size(), config.labels_file)
        self.id2label = self.dataset.id2label

        torch.manual_seed(config.seed)  # the same initial weights on every process
        transformer = build_transformer(config, len(self.id2label))
        if config.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        transformer.train()
        self.ema = EMA(transformer, config.ema_decay)  # before the REPA hook is attached to `transformer`
        objective = PixelGenLoss(
            transformer,
            label_dropout=config.label_dropout,
            p_mean=config.p_mean,
            p_std=config.p_std,
            timeshift=config.timeshift,
            t_eps=config.t_eps,
            noise_scale=config.noise_scale,
            lpips=load_lpips(config.lpips) if config.lpips is not None else None,
            lpips_weight=config.lpips_weight,
            dino=load_dino(config.dino) if config.dino is not None else None,
            dino_weight=config.dino_weight,
            dino_layer=config.dino_layer,
            percept_t_threshold=config.percept_t_threshold,
            repa_layer=config.repa_layer,
            repa_weight=config.repa_weight,
            adaptive_weight_start=config.adaptive_weight_start,
        )
        self.parameters = [parameter for parameter in objective.parameters() if parameter.requires_grad]
        optimizer = torch.optim.AdamW(
            self.parameters,
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.weight_decay,
        )
        self.objective, self.optimizer = self.accelerator.prepare(objective, optimizer)
        self.ema.model.to(self.accelerator.device)
        rank = self.accelerator.process_index
        torch.manual_seed(config.seed + 1 + rank)  # dropout differs per process
        self.generator = torch.Generator(self.accelerator.device).manual_seed(config.seed + 1 + rank)
        self.step = 0

    def _sample_size(self) -> int:
        config = self.config
        if config.pretrained is None:
            return config.model_config.get("sample_size", config.sample_size)
        path = Path(config.pretrained)
        subfolder = "transformer" if not (path / "config.json").is_file() else None
        return PixelGenTransformer2DModel.load_config(config.pretrained, subfolder=subfolder)["sample_size"]

    @property
    def unwrapped(self) -> PixelGenLoss:
        return self.accelerator.unwrap_model(self.objective)

    # ------------------------------------------------------------------------------------------ checkpoints
    def _trainable_state_dict(self) -> dict[str, torch.Tensor]:
        frozen = ("lpips.", "dino.")
        state = self.unwrapped.state_dict()
        return {
            name: tensor.detach().cpu().contiguous() for name, tensor in state.items() if not name.startswith(frozen)
        }

    def save_checkpoint(self) -> Path:
        """Writes everything into a new, uniquely named temporary folder (created exclusively, so a planted file or
        link is never written through), then renames it to `checkpoint-<step>`, replacing a folder of that name (an
        older run's, when a run is resumed from an earlier checkpoint into the same folder). A run killed or failing
        mid-save leaves the previous checkpoints intact."""
        accelerator = self.accelerator
        final = self.output_dir / f"checkpoint-{self.step}"
        if not all(torch.isfinite(parameter).all() for parameter in self.ema.model.parameters()):
            raise FloatingPointError(
                f"training diverged: the weights hold NaN or infinite values at step {self.step}, so no checkpoint is"
                " written; resume from the last checkpoint with a lower --learning-rate (or --max-grad-norm)"
            )
        temporary = None
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            temporary = tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.output_dir)
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            temporary = broadcast_object_list([temporary])[0]
        temporary = Path(temporary)
        try:
            if accelerator.is_main_process:
                (temporary / STATE_DIR).mkdir()
            accelerator.wait_for_everyone()
            rank = accelerator.process_index
            torch.save(_rng_state(self.generator), temporary / STATE_DIR / f"rng_state_{rank}.pt")
            if accelerator.is_main_process:
                make_pipeline(self.ema.model, self.config, self.id2label).save_pretrained(temporary)
                save_file(self._trainable_state_dict(), temporary / STATE_DIR / "model.safetensors")
                torch.save(self.optimizer.state_dict(), temporary / STATE_DIR / "optimizer.pt")
                state = {
                    "step": self.step,
                    "num_processes": accelerator.num_processes,
                    "dataset_size": len(self.dataset),
                    "config": self.config.to_json_dict(),
                }
                (temporary / STATE_DIR / "state.json").write_text(json.dumps(state, indent=2, allow_nan=False))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                replace_directory(temporary, final)
                self._prune_checkpoints(keep=final)
        except BaseException:
            if accelerator.is_main_process:
                shutil.rmtree(temporary, ignore_errors=True)
            raise
        accelerator.wait_for_everyone()
        return final

    def _prune_checkpoints(self, keep: Path) -> None:
        """Keeps `keep` (the checkpoint just saved) and the newest others, `checkpoints_total_limit` in all."""
        limit = self.config.checkpoints_total_limit
        if limit is not None:
            others = [path for path in list_checkpoints(self.output_dir) if path.name != keep.name]
            for old in others[: max(0, len(others) - (limit - 1))]:
                shutil.rmtree(old)

    def load_checkpoint(self, checkpoint: Path) -> None:
        """Restores the online and EMA weights, the optimiser, the random states and the step; a file that cannot be
        read (truncated, missing) is a ValueError naming it. Changed settings then apply (see `train`)."""
        try:
            self._load_checkpoint(checkpoint)
        except ValueError:
            raise
        except Exception as error:  # torch/safetensors report damaged files with many exception types
            raise ValueError(
                f"cannot resume from {checkpoint}: {type(error).__name__}: {one_line(error)} (a file is missing,"
                " truncated or corrupt); resume from an earlier checkpoint (--resume path/to/checkpoint-N)"
            ) from None

    def _load_checkpoint(self, checkpoint: Path) -> None:
        state_dir = checkpoint / STATE_DIR
        state = read_training_state(checkpoint)
        if state["num_processes"] != self.accelerator.num_processes or state["dataset_size"] != len(self.dataset):
            logger.warning(
                f"Resuming with {self.accelerator.num_processes} processes and {len(self.dataset)} images, saved"
                f" with {state['num_processes']} and {state['dataset_size']}: the run continues, but not"
                " bit-for-bit (the data order and per-process random streams differ)."
            )
        missing, unexpected = self.unwrapped.load_state_dict(load_file(state_dir / "model.safetensors"), strict=False)
        missing = [name for name in missing if not name.startswith(("lpips.", "dino."))]
        if missing or unexpected:
            raise ValueError(
                f"Checkpoint {checkpoint} does not match this run's model: missing {missing[:5]},"
                f" unexpected {unexpected[:5]} (different architecture or REPA setting?)."
            )
        ema_weights = load_file(checkpoint / "transformer" / "diffusion_pytorch_model.safetensors")
        self.ema.model.load_state_dict(ema_weights)
        self.optimizer.load_state_dict(torch.load(state_dir / "optimizer.pt", map_location="cpu", weights_only=True))
        for group in self.optimizer.param_groups:  # the run's settings, not the ones saved with the optimiser
            group.update(
                lr=self.config.learning_rate,
                betas=(self.config.adam_beta1, self.config.adam_beta2),
                weight_decay=self.config.weight_decay,
            )
        rng_file = state_dir / f"rng_state_{self.accelerator.process_index}.pt"
        if rng_file.is_file():
            _set_rng_state(torch.load(rng_file, weights_only=True), self.generator)
        self.step = state["step"]

    # --------------------------------------------------------------------------------------------- training
    def train(self) -> Path:
        """Runs until `max_steps` and returns the last checkpoint folder."""
        with locked_folder(self.output_dir, "train", self.accelerator):
            try:
                return self._train()
            finally:
                if getattr(self, "_progress", None) is not None:
                    self._progress.close()  # ends the bar's line, so an error message starts on a line of its own

    def _train(self) -> Path:
        config, accelerator = self.config, self.accelerator
        if accelerator.is_main_process:  # temporary folders of a run that was killed mid-save (we hold the lock)
            for stale in self.output_dir.glob(".checkpoint-*.tmp"):
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale)
                else:
                    stale.unlink()
        if config.resume is not None:
            checkpoint = self.resume_from
            if checkpoint is None:
                logger.warning(f"No checkpoint in {self.output_dir} to resume from; starting a new run.")
            else:
                self.load_checkpoint(checkpoint)
                if self.step > config.max_steps:
                    raise ValueError(
                        f"{checkpoint} is at step {self.step}, beyond max_steps (--max-steps) {config.max_steps}; "
                        "raise --max-steps, or resume from an earlier checkpoint"
                    )
                if accelerator.is_main_process:
                    logger.warning(f"Resumed from {checkpoint} at step {self.step}.")
                    record = {"step": self.step, "resumed_from": str(checkpoint), "changed": self.resumed_changes}
                    with open(self.output_dir / "train_log.jsonl", "a") as log_file:
                        log_file.write(json.dumps(record) + "\n")
                    for name, (before, now) in self.resumed_changes.items():
                        logger.warning(
                            f"Changed on resume and applied from step {self.step}: {name} {before!r} -> {now!r}."
                        )
        if self.step >= config.max_steps:
            return self.save_checkpoint()

        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if self.dataset.num_skipped:
                logger.warning(f"{self.dataset.num_skipped} unreadable image(s) were skipped.")
        sampler = StepBatchSampler(
            len(self.dataset),
            config.batch_size,
            config.max_steps,
            start_step=self.step,
            seed=config.seed,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
        )
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=config.num_workers,
            pin_memory=accelerator.device.type == "cuda",
            persistent_workers=config.num_workers > 0,
        )
        from tqdm.auto import tqdm

        progress = self._progress = tqdm(
            total=config.max_steps,
            initial=self.step,
            unit="step",
            desc="train",
            disable=not accelerator.is_main_process,
            dynamic_ncols=True,
        )
        log_path = self.output_dir / "train_log.jsonl"
        window_start, window_steps, window_losses = time.perf_counter(), 0, {}
        self.objective.train()
        checkpoint = None
        for images, class_labels in loader:
            images = images.to(accelerator.device, non_blocking=True)
            class_labels = class_labels.to(accelerator.device, non_blocking=True)
            losses = self.objective(images, class_labels, generator=self.generator, step=self.step)
            accelerator.backward(losses["loss"])
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(self.parameters, config.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.ema.update(self.unwrapped.transformer)
            self.step += 1
            progress.update()
            window_steps += 1
            for name, value in losses.items():
                window_losses[name] = window_losses.get(name, 0.0) + value.detach().float()

            if self.step % config.log_every == 0 or self.step == config.max_steps:
                elapsed = time.perf_counter() - window_start
                means = {
                    name: accelerator.reduce(total / window_steps, "mean").item()
                    for name, total in window_losses.items()
                }
                record = {"step": self.step, **means, "steps_per_s": window_steps / elapsed}
                progress.set_postfix(loss=f"{means['loss']:.4f}", steps_per_s=f"{record['steps_per_s']:.2f}")
                if accelerator.is_main_process:
                    with open(log_path, "a") as log_file:
                        log_file.write(json.dumps(record) + "\n")
                window_start, window_steps, window_losses = time.perf_counter(), 0, {}
                if not math.isfinite(means["loss"]):  # every process sees the same reduced mean, so all stop
                    raise FloatingPointError(
                        f"training diverged: the loss is {means['loss']} at step {self.step}; resume from the last"
                        " checkpoint with a lower --learning-rate (or --max-grad-norm)"
                    )
            if self.step % config.sample_every == 0 and accelerator.is_main_process:
                grid_path = self.output_dir / "samples" / f"step-{self.step:07d}.png"
                save_sample_grid(self.ema.model, config, self.id2label, grid_path)
            if self.step % config.checkpoint_every == 0 or self.step == config.max_steps:
                checkpoint = self.save_checkpoint()
        progress.close()
        accelerator.wait_for_everyone()
        return checkpoint if checkpoint is not None else self.save_checkpoint()


def train(config: TrainingConfig) -> Path:
    """Trains a PixelGen class-to-image model; returns the final checkpoint, a loadable pipeline folder whose
    transformer holds the EMA weights."""
    return Trainer(config).train()


# ------------------------------------------------------------------------------------------------------------ CLI
def _json_object(text: str) -> dict:
    """A JSON object given inline or as a path to a .json file."""
    source = Path(text).read_text() if text.endswith(".json") and Path(text).is_file() else text
    try:
        value = json.loads(source)
    except json.JSONDecodeError as error:
        raise ValueError(f"--model-config must be a JSON object or a .json file, got {text!r}: {error}") from error
    if not isinstance(value, dict):
        raise ValueError(f"--model-config must be a JSON object, got {text!r}.")
    return value


def add_parser(subparsers) -> None:
    """Registers `pixelgen train`."""
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a class-to-image model on a folder of images",
        description="Train a PixelGen class-to-image model with upstream's recipe (x-prediction flow matching, EMA,"
        " optional LPIPS / P-DINO / REPA). Multi-GPU: `accelerate launch -m pixelgen_diffusers.cli train ...`."
        " Options not given take TrainingConfig's defaults, or on --resume the checkpoint's values.",
        argument_default=argparse.SUPPRESS,  # only the options given are passed on (see run_from_args)
    )
    arg = parser.add_argument
    arg("--data-dir", help="images, one sub-folder per class (or see --labels-file); on --resume, the checkpoint's")
    arg("--output-dir", required=True, help="checkpoints, sample grids and train_log.jsonl go here")
    arg("--labels-file", help="JSON {path: label} or `path,label` lines, paths relative to --data-dir")
    arg("--pretrained", help="pipeline or transformer folder (or Hub id) to fine-tune")
    arg("--preset", choices=sorted(PIXELGEN_PRESETS), help="architecture of a new model")
    arg("--model-config", type=_json_object, help="constructor overrides, e.g. '{\"hidden_size\": 128}'")
    arg("--sample-size", type=int, help="image size of a new model")
    arg("--max-steps", type=int)
    arg("--batch-size", type=int, help="per process")
    arg("--learning-rate", type=float)
    arg("--weight-decay", type=float)
    arg("--adam-beta1", type=float)
    arg("--adam-beta2", type=float)
    arg("--max-grad-norm", type=float, help="0 disables clipping")
    arg("--ema-decay", type=float)
    arg("--label-dropout", type=float)
    arg("--p-mean", type=float)
    arg("--p-std", type=float)
    arg("--timeshift", type=float, help="training time shift")
    arg("--noise-scale", type=float)
    arg("--lpips", help="LPIPS weights: file, folder or Hub id (lpips' VGG state dict, or VGG-16 + vgg.pth)")
    arg("--lpips-weight", type=float)
    arg("--dino", help="DINOv2 (transformers Dinov2Model) folder or Hub id, e.g. facebook/dinov2-base")
    arg("--dino-weight", type=float, help="P-DINO weight")
    arg("--dino-layer", type=int)
    arg("--percept-t-threshold", type=float, help="noise gate")
    arg("--repa-layer", type=int, help="enable REPA on this block's input tokens (upstream: 8); needs --dino")
    arg("--repa-weight", type=float)
    arg("--adaptive-weight-start", type=int)
    arg("--mixed-precision", choices=MIXED_PRECISION)
    arg("--gradient-checkpointing", action="store_true")
    arg("--seed", type=int)
    arg("--num-workers", type=int)
    arg("--log-every", type=int)
    arg("--sample-every", type=int)
    arg("--checkpoint-every", type=int)
    arg("--checkpoints-total-limit", type=int)
    arg("--resume", help="'latest' (in --output-dir) or a checkpoint folder")
    arg("--sampling-method", choices=("heun", "euler", "adam_lm"))
    arg("--sampling-timeshift", type=float)
    arg("--num-inference-steps", type=int)
    arg("--guidance-scale", type=float)
    arg("--guidance-interval-min", type=float)
    arg("--guidance-interval-max", type=float)
    parser.set_defaults(func=run_from_args)


def run_from_args(args) -> int:
    """Options given on the command line override; the others are TrainingConfig's defaults, or, when resuming,
    the values recorded in the checkpoint (so `--resume latest` needs only --output-dir)."""
    names = {config_field.name for config_field in dataclasses.fields(TrainingConfig)}
    given = {name: value for name, value in vars(args).items() if name in names}
    if given.get("resume") is not None:
        checkpoint = resolve_resume(given["resume"], Path(given["output_dir"]))
        if checkpoint is not None:
            recorded = read_training_state(checkpoint)["config"]
            kept = {
                name: value
                for name, value in recorded.items()
                if name in names and name not in ("resume", "output_dir")
            }
            given = {**kept, **given}
    if not given.get("data_dir"):
        raise ValueError("--data-dir is required (a resumed run takes the one recorded in its checkpoint)")
    checkpoint = train(TrainingConfig(**given))
    print(f"Final checkpoint: {checkpoint}")
    return 0
