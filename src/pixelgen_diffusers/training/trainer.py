# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The PixelGen trainer: one loop for one device or many (`accelerate launch`), for class-to-image and text-to-image
models, with EMA, sample grids, atomic checkpoints that are loadable pipeline folders, and bit-for-bit `--resume`."""

import dataclasses
import difflib
import inspect
import json
import logging
import math
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image
import torch
from safetensors.torch import load_file, save_file

from ..models.transformer_jit import PIXELGEN_PRESETS, PixelGenTransformer2DModel
from ..models.transformer_jit_t2i import PixelGenT2ITransformer2DModel
from ..pipelines.pipeline_pixelgen_c2i import PixelGenC2IPipeline
from ..pipelines.pipeline_pixelgen_t2i import PixelGenT2IPipeline
from ..schedulers.scheduling_pixelgen import PixelGenScheduler
from ..utils import (
    append_line,
    apply_umask,
    atomic_save_image,
    check_number,
    locked_folder,
    make_folder,
    naming_write_errors,
    one_line,
    replace_directory,
)
from ..utils.distributed import check_world_size
from .captions import CaptionEmbeddingCache, EmbeddedCaptionDataset, load_embedding, load_text_encoder
from .data import ImageCaptionDataset, ImageClassDataset, StepBatchSampler, is_caption_folder
from .distributed import (
    all_finite,
    gather_full_model,
    load_sharded_checkpoint,
    save_sharded_checkpoint,
    shard_for_training,
    shard_summary,
)
from .losses import EMA, PixelGenLoss, load_dino, load_lpips


logger = logging.getLogger(__name__)

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
MODEL_TYPES = ("c2i", "t2i")
DEFAULT_TEXT_ENCODER = "Qwen/Qwen3-1.7B"
# LoRA targets by default: attention projections and feed-forward layers of every block (peft suffix matching).
DEFAULT_LORA_TARGETS = {
    "c2i": ["attn.to_qkv", "attn.to_out", "ff.proj_in", "ff.proj_out"],
    "t2i": ["attn.to_qkv", "attn.to_added_kv", "attn.to_out", "ff.proj_in", "ff.proj_out"],
}
# The sampling recipe of a new model (upstream's evaluation settings per kind); a pretrained folder's own recipe wins.
DEFAULT_SAMPLING = {
    "c2i": dict(sampling_method="heun", sampling_timeshift=1.0, solver_order=2, num_inference_steps=50,
                guidance_scale=1.0, guidance_interval_min=0.0, guidance_interval_max=1.0),
    "t2i": dict(sampling_method="adam_lm", sampling_timeshift=3.0, solver_order=2, num_inference_steps=25,
                guidance_scale=4.0, guidance_interval_min=0.0, guidance_interval_max=1.0),
}  # fmt: skip
SAMPLING_FIELDS = tuple(DEFAULT_SAMPLING["c2i"])
# Seeds derived from the run's (seed + 1 + rank for dropout and noise, seed + epoch for the data order) must stay
# below torch's 2**64 limit: the run's seed is bounded with room to spare.
MAX_TRAINING_SEED = 2**63 - 1
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_DIR = "training_state"
SHARDED_STATE_DIR = "sharded"  # --fsdp: online weights, optimizer and EMAs, torch.distributed.checkpoint's layout
# Fields that may be None (off / keep all / unset / the pretrained folder's recipe).
OPTIONAL_FIELDS = ("checkpoints_total_limit", "adaptive_weight_start", "repa_layer", "lora_rank", "lora_alpha")
OPTIONAL_FIELDS += ("sampling_timeshift", "solver_order", "num_inference_steps", "guidance_scale")
OPTIONAL_FIELDS += ("guidance_interval_min", "guidance_interval_max", "eval_every")
# Fields a resume keeps (stored in every checkpoint, so a resume needs none of them): the architecture, and the seed
# (it decides the initial weights, the data order and the noise streams of the whole run).
ARCHITECTURE_FIELDS = ("pretrained", "preset", "model_config", "sample_size", "repa_layer", "model_type", "seed")


@dataclass
class TrainingConfig:
    r"""
    Everything a training run depends on; stored in every checkpoint.

    Model: `pretrained` (a pipeline or transformer folder, or Hub id, to fine-tune) or a fresh model from `preset`
    and/or `model_config` (constructor arguments of [`PixelGenTransformer2DModel`], e.g. `{"hidden_size": 128}`, or
    of [`PixelGenT2ITransformer2DModel`]); `num_classes` always comes from the data. `model_type` is `"c2i"` or
    `"t2i"`; by default the pretrained model's kind, else `"t2i"` for a captioned `data_dir` (a `metadata.jsonl` or
    `.txt` captions, see [`ImageCaptionDataset`]).

    Text-to-image: `text_encoder` is the Qwen3 encoder (a folder or Hub id holding it and its tokenizer, a pipeline
    folder with `text_encoder/` and `tokenizer/`, or a module with `tokenizer` given too); default: the pretrained
    folder's, else its `text_encoder_id`, else Qwen/Qwen3-1.7B. Checkpoints record where the encoder loads from
    (`text_encoder_id`); for a module, the pretrained folder's id or none. Captions are encoded once into
    `caption_cache_dir` (default `<output_dir>/caption_embeddings`) and dropped to the empty prompt with probability
    `caption_dropout`.

    Objective: upstream's defaults (see [`PixelGenLoss`]); `lpips` and `dino` are local paths, Hub ids or modules,
    and enable the perceptual terms; `repa_layer` enables REPA. Sampling settings (`sampling_method` ...
    `guidance_interval_max`) are used for the sample grids and stored as the defaults of the saved pipelines; those
    left `None` keep the pretrained folder's recipe (or the defaults of the model kind for a new model).
    """

    data_dir: str
    output_dir: str
    labels_file: str | None = None
    caption_column: str = "text"
    unconditional: bool = False
    model_type: str | None = None
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
    ema_decay: float | list[float] | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_target_modules: list[str] | None = None
    label_dropout: float = 0.1
    caption_dropout: float = 0.1
    text_encoder: str | torch.nn.Module | None = None
    tokenizer: object | None = None
    caption_cache_dir: str | None = None
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
    overwrite: bool = False
    sampling_method: str | None = None
    sampling_timeshift: float | None = None
    solver_order: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    guidance_interval_min: float | None = None
    guidance_interval_max: float | None = None
    eval_every: int | None = None
    eval_reference: str | None = None
    eval_num_samples: int = 1000
    eval_inception_weights: str | None = None
    fsdp: bool = False

    def __post_init__(self):
        """Every value is checked before any work, so a bad flag is one clear error, not NaN weights hours later.
        Errors name the field and its `pixelgen train` flag."""

        def check(name, **bounds):
            value = getattr(self, name)
            if value is not None or name not in OPTIONAL_FIELDS:
                check_number(f"{name} (--{name.replace('_', '-')})", value, **bounds)

        for name in ("max_steps", "batch_size", "log_every", "sample_every", "checkpoint_every"):
            check(name, integer=True, minimum=1)
        for name in ("num_inference_steps", "sample_size", "checkpoints_total_limit", "lora_rank", "eval_every"):
            check(name, integer=True, minimum=1)
        check("eval_num_samples", integer=True, minimum=2)
        if (self.eval_every is None) != (self.eval_reference is None):
            raise ValueError("eval_every (--eval-every) and eval_reference (--eval-reference) go together.")
        for name in ("num_workers", "adaptive_weight_start", "repa_layer"):
            check(name, integer=True, minimum=0)
        check("seed", integer=True, minimum=0, maximum=MAX_TRAINING_SEED)
        check("dino_layer", integer=True)
        check("solver_order", integer=True, minimum=1, maximum=4)
        check("learning_rate", minimum=0, exclusive_minimum=True)
        for name in ("weight_decay", "max_grad_norm", "lpips_weight", "dino_weight", "repa_weight"):
            check(name, minimum=0)
        for name in ("adam_beta1", "adam_beta2", "label_dropout", "percept_t_threshold"):
            check(name, minimum=0, maximum=1)
        if self.adam_beta1 == 1 or self.adam_beta2 == 1:
            raise ValueError("adam_beta1 and adam_beta2 must be below 1 (Adam divides by 1 - beta**step).")
        check("p_mean")
        for name in ("p_std", "timeshift", "noise_scale", "sampling_timeshift", "lora_alpha"):
            check(name, minimum=0, exclusive_minimum=True)
        check("t_eps", minimum=0, maximum=1, exclusive_minimum=True)
        # The saved pipelines' recipe (unset values keep the pretrained folder's): what would make a checkpoint
        # folder draw black images is refused now; the resolved recipe is checked again when a pipeline is built.
        check("guidance_scale")
        check("guidance_interval_min")
        check("guidance_interval_max")
        interval = (self.guidance_interval_min, self.guidance_interval_max)
        if None not in interval and interval[0] > interval[1]:
            raise ValueError(
                f"guidance_interval_min ({interval[0]}) must not exceed guidance_interval_max ({interval[1]})."
            )
        if self.sampling_method is not None:
            PixelGenScheduler.check_options(self.sampling_method)
        if self.model_type is not None and self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type is {self.model_type!r}; accepted: {', '.join(MODEL_TYPES)}.")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}.")
        if isinstance(self.text_encoder, torch.nn.Module) and self.tokenizer is None:
            raise ValueError("text_encoder is a module, so tokenizer must be given too.")
        for decay in self.ema_decays:
            if not (isinstance(decay, (int, float)) and 0 <= decay < 1):
                raise ValueError(f"ema_decay values must be numbers in [0, 1), got {self.ema_decay!r}.")
        if self.lora_rank is not None:
            if not (isinstance(self.lora_rank, int) and self.lora_rank > 0):
                raise ValueError(f"lora_rank must be a positive integer, got {self.lora_rank!r}.")
            if self.pretrained is None:
                raise ValueError("lora_rank is set but pretrained is not: a LoRA adapts a pretrained model.")
        elif self.lora_alpha is not None or self.lora_target_modules is not None:
            raise ValueError("lora_alpha and lora_target_modules need lora_rank (--lora-rank) to train a LoRA.")
        if self.lora_alpha is not None and not (math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
            raise ValueError(f"lora_alpha must be a positive number, got {self.lora_alpha!r}.")
        if self.fsdp:
            check_fsdp_options(self)
        if self.unconditional and (self.lora_rank is not None or self.labels_file is not None):
            raise ValueError(
                "unconditional training uses no labels and trains all weights: drop labels_file/lora_rank."
            )

        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision is {self.mixed_precision!r}; accepted: {', '.join(MIXED_PRECISION)}.")
        if self.preset is not None and self.preset not in PIXELGEN_PRESETS:
            raise ValueError(f"Unknown preset {self.preset!r}; available: {', '.join(PIXELGEN_PRESETS)}.")
        if self.pretrained is not None and (self.preset is not None or self.model_config):
            raise ValueError("Pass either pretrained (fine-tuning) or preset/model_config (a new model), not both.")
        if "num_classes" in self.model_config:
            raise ValueError("model_config must not set num_classes: it is the number of classes in the data.")
        if self.repa_layer is not None and self.dino is None:
            raise ValueError("repa_layer is set but dino is not: REPA aligns to DINOv2 features, pass --dino.")
        if not isinstance(self.model_config, dict):
            raise ValueError(f"model_config must be a dict, got {type(self.model_config).__name__}.")
        if self.pretrained is None and self.model_type != "t2i":
            check_architecture(self)
        if self.resume is not None and not isinstance(self.resume, str):
            raise ValueError(f"resume must be 'latest' or a checkpoint folder, got {self.resume!r}.")

    @property
    def ema_decays(self) -> tuple[float, ...]:
        """The EMA decays tracked; the first one is the saved pipeline's. Default: upstream's 0.9999, or 0 (the
        online weights) for a LoRA, whose short runs an EMA of 0.9999 would barely move."""
        if self.ema_decay is None:
            return (0.0,) if self.lora_rank is not None else (0.9999,)
        decays = (self.ema_decay,) if isinstance(self.ema_decay, (int, float)) else tuple(self.ema_decay)
        if not decays:
            raise ValueError("ema_decay is an empty list: give at least one decay.")
        return decays

    @property
    def is_lora(self) -> bool:
        return self.lora_rank is not None

    def to_json_dict(self) -> dict:
        """The config as JSON; backbones given as modules are recorded by class name."""
        values = {config_field.name: getattr(self, config_field.name) for config_field in dataclasses.fields(self)}
        for name in ("lpips", "dino", "text_encoder", "tokenizer"):
            if values[name] is not None and not isinstance(values[name], str):
                values[name] = f"<{type(values[name]).__name__} module>"
        return values


# ---------------------------------------------------------------------------------------------------- the model
def _transformer_subfolder(pretrained: str) -> str | None:
    """A transformer folder is used as is; a pipeline folder (or Hub id) through its `transformer/`."""
    return None if (Path(pretrained) / "config.json").is_file() else "transformer"


def pretrained_json(pretrained: str, filename: str) -> dict | None:
    """A JSON file of the pretrained pipeline folder (local or on the Hub), or None when it has none."""
    path = Path(pretrained) / filename
    if path.is_file():
        return json.loads(path.read_text())
    if Path(pretrained).exists():
        return None
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(pretrained, filename)).read_text())
    except Exception:  # a transformer-only repo, or no such file: no recipe to keep
        return None


def pretrained_model_type(pretrained: str) -> str:
    config = PixelGenTransformer2DModel.load_config(pretrained, subfolder=_transformer_subfolder(pretrained))
    return "t2i" if "txt_max_length" in config else "c2i"


def resolve_sampling(config: TrainingConfig, model_type: str) -> dict:
    """The saved pipelines' sampling recipe: what the config sets, else the pretrained folder's recipe (pipeline
    and scheduler config), else the model kind's defaults."""
    recipe = dict(DEFAULT_SAMPLING[model_type])
    if config.pretrained is not None:
        pipeline_config = pretrained_json(config.pretrained, "model_index.json") or {}
        scheduler_config = pretrained_json(config.pretrained, "scheduler/scheduler_config.json") or {}
        stored = {
            "sampling_method": scheduler_config.get("sampling_method"),
            "sampling_timeshift": scheduler_config.get("timeshift"),
            "solver_order": scheduler_config.get("solver_order"),
        }
        stored.update({name: pipeline_config.get(name) for name in SAMPLING_FIELDS if name in pipeline_config})
        recipe.update({name: value for name, value in stored.items() if value is not None})
    if config.unconditional:
        recipe["guidance_scale"] = 1.0  # the condition is the null class: nothing to guide towards
    recipe.update({name: getattr(config, name) for name in SAMPLING_FIELDS if getattr(config, name) is not None})
    return recipe


def check_fsdp_options(config: TrainingConfig) -> None:
    """What FSDP2 training (`fsdp`) does not cover, refused up front."""
    if config.lora_rank is not None:
        raise ValueError("fsdp (--fsdp) shards full fine-tunes; a LoRA (--lora-rank) trains few weights: use DDP.")
    if config.mixed_precision == "fp16":
        raise ValueError("mixed_precision (--mixed-precision) fp16 is not supported with fsdp (--fsdp); use bf16.")
    perceptual = config.lpips is not None or (config.dino is not None and config.dino_weight > 0)
    start = config.adaptive_weight_start
    if perceptual and start is not None and start < config.max_steps:
        raise ValueError(
            f"adaptive_weight_start (--adaptive-weight-start) {start} is within max_steps ({config.max_steps}): the"
            " adaptive perceptual weight is not supported with fsdp (--fsdp); set it beyond --max-steps"
        )


def new_model_arguments(config: TrainingConfig, num_classes: int | None = None) -> dict:
    """The constructor arguments of a new class-to-image model: the preset's, then `sample_size` and the class
    count, then `model_config`. A `depth` given without `in_context_start` gets depth // 3, the presets' ratio
    (JiT-B: 12 -> 4, L: 24 -> 8, H: 32 -> 10), not the default 8 that is out of range for shallow models."""
    arguments = dict(PIXELGEN_PRESETS[config.preset]) if config.preset else {}
    arguments["sample_size"] = config.sample_size
    if num_classes is not None:
        arguments["num_classes"] = num_classes
    arguments.update(config.model_config)
    depth = config.model_config.get("depth")
    if isinstance(depth, int) and not isinstance(depth, bool) and "in_context_start" not in config.model_config:
        arguments["in_context_start"] = depth // 3
    return arguments


def check_architecture(config: TrainingConfig) -> None:
    """Builds the new model on the `meta` device (no memory, no time): unknown or invalid model_config entries are
    a ValueError before any data is read."""
    accepted = [name for name in inspect.signature(PixelGenTransformer2DModel.__init__).parameters if name != "self"]
    text_to_image = inspect.signature(PixelGenT2ITransformer2DModel.__init__).parameters
    if config.model_type is None and any(
        name not in accepted and name in text_to_image for name in config.model_config
    ):
        return  # a text-to-image architecture; the model type comes from the data
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
            PixelGenTransformer2DModel(**new_model_arguments(config))
    except (TypeError, ValueError) as error:
        raise ValueError(f"model_config (with preset {config.preset} and sample_size): {error}") from None


def build_transformer(config: TrainingConfig, model_type: str, id2label: dict[int, str] | None = None):
    """The model to train: the pretrained one (with its class table fitted to `id2label`), or a new one."""
    num_classes = None if id2label is None else len(id2label)
    model_class = PixelGenT2ITransformer2DModel if model_type == "t2i" else PixelGenTransformer2DModel
    if config.pretrained is not None:
        subfolder = _transformer_subfolder(config.pretrained)
        transformer = model_class.from_pretrained(config.pretrained, subfolder=subfolder)
        if model_type == "c2i" and transformer.config.num_classes != num_classes:
            if config.is_lora:
                raise ValueError(
                    f"The pretrained model has {transformer.config.num_classes} classes but data_dir has"
                    f" {num_classes}: a LoRA keeps the pretrained classes; fine-tune all weights for a new class set."
                )
            pipeline_config = pretrained_json(config.pretrained, "model_index.json") or {}
            pretrained_labels = {int(k): v for k, v in pipeline_config.get("id2label", {}).items()}
            resize_class_embeddings(transformer, id2label, pretrained_labels)
        return transformer
    if model_type == "t2i":
        if config.preset is not None:
            raise ValueError(f"preset {config.preset!r} is a class-to-image architecture; use model_config for t2i.")
        transformer = PixelGenT2ITransformer2DModel(**{"sample_size": config.sample_size, **config.model_config})
        initialize_t2i_weights(transformer)
        return transformer
    transformer = PixelGenTransformer2DModel(**new_model_arguments(config, num_classes))
    initialize_weights(transformer)
    return transformer


@torch.no_grad()
def resize_class_embeddings(
    transformer: PixelGenTransformer2DModel, id2label: dict[int, str], pretrained_id2label: dict[int, str]
) -> None:
    """Refits the class table to a new class set: one row per class of `id2label` plus the null class, kept last
    with its pretrained row. A class whose name is a synonym of a pretrained class starts from that class's row; the
    others start from N(0, 0.02), JiT's initialisation. No class at all (`{}`) leaves only the null row: an
    unconditional model."""
    old_table = transformer.class_embedder.weight
    old_null = transformer.config.num_classes
    synonyms = {}
    for class_id, names in pretrained_id2label.items():
        for name in names.split(","):
            synonyms.setdefault(name.strip().lower(), class_id)
    table = torch.empty(len(id2label) + 1, old_table.shape[1], dtype=old_table.dtype, device=old_table.device)
    torch.nn.init.normal_(table, std=0.02)
    reused = 0
    for class_id, name in id2label.items():
        match = synonyms.get(name.strip().lower())
        if match is not None and match < old_null:
            table[class_id] = old_table[match]
            reused += 1
    table[-1] = old_table[old_null]
    transformer.class_embedder = torch.nn.Embedding.from_pretrained(table, freeze=False)
    transformer.register_to_config(num_classes=len(id2label))
    logger.warning(
        f"Class table refitted from {old_null} to {len(id2label)} classes (+ the pretrained null class):"
        f" {reused} start from the pretrained class of the same name, {len(id2label) - reused} are new."
    )


def _xavier_linears(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)


@torch.no_grad()
def initialize_weights(transformer: PixelGenTransformer2DModel) -> None:
    """JiT's initialisation of a new model: Xavier-uniform linears (and patch convs, as linears) with zero biases,
    N(0, 0.02) class/time embeddings and in-context positions, and zeroed adaLN modulations and output layer, so
    that every block starts as the identity."""
    _xavier_linears(transformer)
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


@torch.no_grad()
def initialize_t2i_weights(transformer: PixelGenT2ITransformer2DModel) -> None:
    """The same scheme for a new text-to-image model: Xavier-uniform linears with zero biases, N(0, 0.02) time
    embedding and text positions, zeroed adaLN modulations (image and text blocks) and output layer."""
    _xavier_linears(transformer)
    torch.nn.init.normal_(transformer.time_embedder.linear_1.weight, std=0.02)
    torch.nn.init.normal_(transformer.time_embedder.linear_2.weight, std=0.02)
    torch.nn.init.normal_(transformer.text_pos_embed, std=0.02)
    blocks = [*transformer.text_refiner_blocks, *transformer.transformer_blocks]
    for linear in [block.adaln_modulation for block in blocks] + [transformer.final_layer.proj_out]:
        torch.nn.init.zeros_(linear.weight)
        torch.nn.init.zeros_(linear.bias)


def add_lora(transformer, rank: int, alpha: float | None, targets: list[str], log: bool = True) -> None:
    """Freezes the model and adds a peft LoRA adapter of `rank` (scale `alpha / rank`, alpha defaulting to the
    rank) on the linear layers whose names end in `targets` (Gaussian A, zero B: training starts at the base model).
    A target naming no linear layer is a ValueError listing the accepted suffixes."""
    from peft import LoraConfig

    targets = list(targets)
    linear_names = [name for name, module in transformer.named_modules() if isinstance(module, torch.nn.Linear)]
    for target in targets:
        # peft adapts every module whose name ends in the target: all of them must be linear layers that the model
        # calls (a patch convolution is read through its weight, and would fail at the first step).
        others = [
            f"{name} ({type(module).__name__})"
            for name, module in transformer.named_modules()
            if (name == target or name.endswith(f".{target}")) and not isinstance(module, torch.nn.Linear)
        ]
        if others:
            specific = sorted({".".join(name.split(".")[-2:]) for name in linear_names if name.endswith(target)})
            raise ValueError(
                f"lora_target_modules has {target!r}, which also names {', '.join(others[:3])}: LoRA adapts only"
                " linear layers"
                + (f"; name them more precisely, e.g. {', '.join(map(repr, specific[:3]))}" if specific else "")
                + "."
            )
        if not any(name == target or name.endswith(f".{target}") for name in linear_names):
            suffixes = sorted({".".join(name.split(".")[-2:]) for name in linear_names})
            close = difflib.get_close_matches(target, suffixes, n=3)
            raise ValueError(
                f"lora_target_modules has {target!r}, which names no linear layer of the"
                f" {type(transformer).__name__}"
                + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
                + f"; its linear layers end in: {', '.join(suffixes)}."
            )
    transformer.requires_grad_(False)
    lora_config = LoraConfig(
        r=rank, lora_alpha=alpha if alpha is not None else rank, target_modules=targets, init_lora_weights="gaussian"
    )
    transformer.add_adapter(lora_config)
    trainable = sum(parameter.numel() for parameter in transformer.parameters() if parameter.requires_grad)
    total = sum(parameter.numel() for parameter in transformer.parameters())
    if log:
        logger.warning(
            f"LoRA rank {rank} on {', '.join(targets)}: {trainable:,} trainable parameters,"
            f" {100 * trainable / (total - trainable):.2f}% of the model's {total - trainable:,}."
        )


def make_pipeline(transformer, config: TrainingConfig, sampling: dict, id2label=None, text_encoder_id=None):
    """The pipeline a checkpoint is saved as, with the run's sampling recipe as its defaults: class-to-image with
    `id2label`, else text-to-image (without its text encoder, which loads from `text_encoder_id` when prompted)."""
    scheduler = PixelGenScheduler(
        sampling_method=sampling["sampling_method"],
        timeshift=sampling["sampling_timeshift"],
        solver_order=sampling["solver_order"],
    )
    settings = dict(
        num_inference_steps=sampling["num_inference_steps"],
        guidance_scale=sampling["guidance_scale"],
        guidance_interval_min=sampling["guidance_interval_min"],
        guidance_interval_max=sampling["guidance_interval_max"],
        noise_scale=config.noise_scale,
    )
    if id2label is not None:
        pipeline = PixelGenC2IPipeline(transformer, scheduler, id2label=id2label, **settings)
    else:
        pipeline = PixelGenT2IPipeline(transformer, scheduler, text_encoder_id=text_encoder_id, **settings)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def image_grid(images: list[PIL.Image.Image], rows: int) -> PIL.Image.Image:
    columns = math.ceil(len(images) / rows)
    width, height = images[0].size
    grid = PIL.Image.new("RGB", (columns * width, rows * height))
    for index, image in enumerate(images):
        grid.paste(image, ((index % columns) * width, (index // columns) * height))
    return grid


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
    ignored = ("resume", "output_dir", "overwrite")
    return {
        name: (recorded[name], current[name])
        for name in current
        if name in recorded and name not in ignored and recorded[name] != current[name]
    }


def _rng_state(generator: torch.Generator, loader_generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The random state a resume restores; `loader_generator` is the data order's (runs without a loader have none)."""
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(
    state: dict[str, torch.Tensor], generator: torch.Generator, loader_generator: torch.Generator | None = None
) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "loader" in state and loader_generator is not None:  # older checkpoints: no loader generator
        loader_generator.set_state(state["loader"])
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
        self.model_type = self._model_type()
        self._check_options_fit_the_model_type()
        self.sampling = resolve_sampling(config, self.model_type)
        self.evaluator = None
        if config.eval_every is not None:  # FID-N: the reference and weights are checked before any work
            if self.model_type == "t2i":
                raise ValueError("--eval-every scores class-to-image models (FID of class-balanced samples)")
            from ..evaluation.training_eval import TrainingEvaluator

            self.evaluator = TrainingEvaluator(
                config.eval_reference, config.eval_num_samples, config.batch_size, config.eval_inception_weights
            )
        self.id2label, self.text_encoder_id, empty_prompt_embeds = None, None, None
        if self.model_type == "t2i":
            images = ImageCaptionDataset(config.data_dir, self._sample_size(), config.caption_column)
            text_encoder, tokenizer, self.text_encoder_id = self._text_encoder()  # before building the model
        else:
            self.dataset = ImageClassDataset(
                config.data_dir, self._sample_size(), config.labels_file, unconditional=config.unconditional
            )
            self.id2label = self.dataset.id2label

        torch.manual_seed(config.seed)  # the same initial weights on every process
        transformer = build_transformer(config, self.model_type, self.id2label)
        if self.model_type == "t2i":
            embedding_files = self._cache_caption_embeddings(transformer, text_encoder, tokenizer, images.captions)
            text_encoder = tokenizer = None  # training steps only read the cache
            self.dataset = EmbeddedCaptionDataset(images, [embedding_files[caption] for caption in images.captions])
            empty_prompt_embeds = load_embedding(embedding_files[""])[None]
            # The grid's prompts: the first distinct captions of the data, with their cached embeddings.
            self.sample_prompts = list(dict.fromkeys(images.captions))[:4]
            self.sample_files = [embedding_files[caption] for caption in self.sample_prompts]
            self.empty_embedding_file = embedding_files[""]
        if config.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        if config.is_lora:
            self._add_lora(transformer)
        transformer.train()
        # Before the REPA hook is attached to `transformer`; the first EMA is the one the saved pipeline holds.
        self.emas = [EMA(transformer, decay) for decay in config.ema_decays]
        self.ema = self.emas[0]
        objective = PixelGenLoss(
            transformer,
            label_dropout=config.caption_dropout if self.model_type == "t2i" else config.label_dropout,
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
            empty_prompt_embeds=empty_prompt_embeds,
        )
        # FSDP2 on several processes: the model is sharded (not wrapped in DDP) before the optimizer is built on it.
        self.sharded = config.fsdp and self.accelerator.num_processes > 1
        if config.fsdp:
            check_world_size(self.accelerator.num_processes)
        if self.sharded:
            objective.to(self.accelerator.device)
            for ema in self.emas:
                ema.model.to(self.accelerator.device)
            projector = [objective.projector] if objective.projector is not None else []
            shard_for_training(transformer, self.emas, projector)
            if mixed_precision == "bf16":  # what accelerate's prepare does for DDP: float32 weights, bfloat16 compute
                autocast = torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16)
                objective.forward = autocast(objective.forward)
            print(
                f"Process {self.accelerator.process_index} of {self.accelerator.num_processes}: FSDP2,"
                f" {shard_summary(transformer)}",
                flush=True,
            )
        self.parameters = [parameter for parameter in objective.parameters() if parameter.requires_grad]
        optimizer = torch.optim.AdamW(
            self.parameters,
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.weight_decay,
        )
        if self.sharded:
            self.objective, self.optimizer = objective, self.accelerator.prepare(optimizer)
        else:
            self.objective, self.optimizer = self.accelerator.prepare(objective, optimizer)
        for ema in self.emas:
            ema.model.to(self.accelerator.device)
        rank = self.accelerator.process_index
        torch.manual_seed(config.seed + 1 + rank)  # dropout differs per process
        self.generator = torch.Generator(self.accelerator.device).manual_seed(config.seed + 1 + rank)
        # The data loader's own stream (its workers' seeds): starting its iterator must not draw from the global
        # stream that dropout uses, or a resumed run would drift from an uninterrupted one.
        self.loader_generator = torch.Generator().manual_seed(config.seed + 1 + rank)
        self.step = 0

    def _model_type(self) -> str:
        config = self.config
        if config.pretrained is not None:
            model_type = pretrained_model_type(config.pretrained)
            if config.model_type is not None and config.model_type != model_type:
                raise ValueError(
                    f"model_type is {config.model_type!r} but the pretrained model {config.pretrained!r} is"
                    f" {model_type!r}."
                )
            return model_type
        if config.model_type is not None:
            return config.model_type
        return "t2i" if is_caption_folder(config.data_dir) else "c2i"

    def _check_options_fit_the_model_type(self) -> None:
        """Options of the other model kind are mistakes, not no-ops."""
        config = self.config
        if self.model_type == "t2i":
            wrong = {"labels_file": config.labels_file is not None, "unconditional": config.unconditional}
        else:
            wrong = {name: getattr(config, name) is not None for name in ("text_encoder", "caption_cache_dir")}
        wrong = [name for name, is_set in wrong.items() if is_set]
        if wrong:
            kind = "text-to-image" if self.model_type == "t2i" else "class-to-image"
            raise ValueError(f"This is a {kind} run; {', '.join(wrong)} belong(s) to the other kind of model.")

    def _sample_size(self) -> int:
        config = self.config
        if config.pretrained is None:
            return config.model_config.get("sample_size", config.sample_size)
        subfolder = _transformer_subfolder(config.pretrained)
        return PixelGenTransformer2DModel.load_config(config.pretrained, subfolder=subfolder)["sample_size"]

    def _text_encoder(self):
        """The Qwen3 encoder and tokenizer of a text-to-image run (see `TrainingConfig`), and the id that the saved
        pipelines record as their `text_encoder_id`."""
        config = self.config
        pipeline_config = pretrained_json(config.pretrained, "model_index.json") if config.pretrained else None
        default_id = (pipeline_config or {}).get("text_encoder_id", DEFAULT_TEXT_ENCODER)
        if isinstance(config.text_encoder, torch.nn.Module):
            # An encoder given in memory has no id of its own: keep the fine-tuned folder's, else record none (not
            # the default Qwen3-1.7B, which may not fit the model).
            recorded_id = (pipeline_config or {}).get("text_encoder_id")
            return config.text_encoder.eval().requires_grad_(False), config.tokenizer, recorded_id
        if config.text_encoder is not None:
            source = str(config.text_encoder)
            return *load_text_encoder(source), source
        if config.pretrained is not None and (Path(config.pretrained) / "text_encoder").is_dir():
            # A folder that ships its encoder and names no other (the bundled demo): checkpoints load it from there.
            return *load_text_encoder(config.pretrained), default_id or str(Path(config.pretrained).resolve())
        return *load_text_encoder(default_id), default_id

    def _cache_caption_embeddings(self, transformer, text_encoder, tokenizer, captions: list[str]) -> dict[str, Path]:
        """Encodes the captions (and the empty prompt) not cached yet, on the main process first; returns each
        caption's embedding file. The encoder is released afterwards: training steps only read the cache."""
        pipeline = PixelGenT2IPipeline(transformer, PixelGenScheduler(), text_encoder, tokenizer)
        root = self.config.caption_cache_dir or self.output_dir / "caption_embeddings"
        cache = CaptionEmbeddingCache(root, pipeline)
        with self.accelerator.main_process_first():
            if self.accelerator.is_main_process:
                text_encoder.to(self.accelerator.device)
            cache.encode([*captions, ""], device=text_encoder.device)
        if self.accelerator.is_main_process:
            logger.info(f"Caption embeddings in {cache.folder}: {cache.hits} cached, {cache.misses} encoded.")
        self.caption_cache = cache
        files = {caption: cache.path(caption) for caption in {*captions, ""}}
        del pipeline, cache.pipeline, cache.text_encoder, cache.tokenizer, text_encoder
        return files

    def _add_lora(self, transformer) -> None:
        config = self.config
        targets = list(config.lora_target_modules or DEFAULT_LORA_TARGETS[self.model_type])
        add_lora(transformer, config.lora_rank, config.lora_alpha, targets, self.accelerator.is_main_process)

    def _save_lora(self, transformer, folder: Path) -> None:
        """The adapter of `transformer` as diffusers' `pytorch_lora_weights.safetensors`, with its peft config."""
        from peft.utils import get_peft_model_state_dict

        pipeline_class = PixelGenT2IPipeline if self.model_type == "t2i" else PixelGenC2IPipeline
        pipeline_class.save_lora_weights(
            folder,
            transformer_lora_layers=get_peft_model_state_dict(transformer),
            transformer_lora_adapter_metadata=transformer.peft_config["default"].to_dict(),
        )

    def make_pipeline(self, transformer):
        return make_pipeline(transformer, self.config, self.sampling, self.id2label, self.text_encoder_id)

    def ema_on_main_process(self) -> torch.nn.Module | None:
        """The first EMA's model, unsharded, on the main process; None on the others. With FSDP2 its weights are
        gathered, so every process must call it."""
        if self.sharded:
            return gather_full_model(self.ema.model, self.accelerator.device)
        return self.ema.model if self.accelerator.is_main_process else None

    @torch.no_grad()
    def save_sample_grid(self, path: Path) -> None:
        """One row per class (up to 10) or per prompt (the data's first 4 captions), four images each, from a fixed
        seed so grids are comparable across steps. Called by every process with FSDP2, by the main one otherwise."""
        transformer = self.ema_on_main_process()
        if transformer is None:
            return
        pipeline = self.make_pipeline(transformer)
        generator = torch.Generator(transformer.device).manual_seed(self.config.seed)
        # Sampling a grid takes as long as many training steps: say so, with the pipeline's own progress bar.
        from tqdm.auto import tqdm

        tqdm.write(f"step {self.step}: drawing the sample grid {path}", file=sys.stderr)
        pipeline.set_progress_bar_config(desc="sample grid", leave=False, dynamic_ncols=True)
        if self.model_type == "t2i":
            prompt_embeds = torch.stack([load_embedding(file) for file in self.sample_files])
            negative = load_embedding(self.empty_embedding_file)[None]
            images = pipeline(
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative,
                num_images_per_prompt=4,
                generator=generator,
            ).images
            rows = len(prompt_embeds)
        elif not self.id2label:  # unconditional: a 4 x 4 grid
            images = pipeline(num_images_per_prompt=16, generator=generator).images
            rows = 4
        else:
            class_ids = list(range(min(len(self.id2label), 10)))
            images = pipeline(class_ids, num_images_per_prompt=4, generator=generator).images
            rows = len(class_ids)
        make_folder(path.parent)
        atomic_save_image(image_grid(images, rows=rows), path)

    @property
    def unwrapped(self) -> PixelGenLoss:
        return self.accelerator.unwrap_model(self.objective)

    # ------------------------------------------------------------------------------------------ checkpoints
    def _is_checkpointed(self, name: str) -> bool:
        """Online state saved for resuming: not the frozen backbones, and in a LoRA run not the frozen base model."""
        if name.startswith(("lpips.", "dino.")):
            return False
        return not (self.config.is_lora and name.startswith("transformer.") and ".lora_" not in name)

    def _trainable_state_dict(self) -> dict[str, torch.Tensor]:
        state = self.unwrapped.state_dict()
        return {
            name: tensor.detach().cpu().contiguous() for name, tensor in state.items() if self._is_checkpointed(name)
        }

    def save_checkpoint(self) -> Path:
        """Writes everything into a new, uniquely named temporary folder (created exclusively, so a planted file or
        link is never written through), then renames it to `checkpoint-<step>`, replacing a folder of that name (an
        older run's, when a run is resumed from an earlier checkpoint into the same folder). A run killed or failing
        mid-save leaves the previous checkpoints intact."""
        accelerator = self.accelerator
        final = self.output_dir / f"checkpoint-{self.step}"
        if not all_finite(self.ema.model):
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
            # A full disk names the checkpoint being written, not only the library's error.
            with naming_write_errors(final):
                if accelerator.is_main_process:
                    (temporary / STATE_DIR).mkdir()
                accelerator.wait_for_everyone()
                rank = accelerator.process_index
                torch.save(
                    _rng_state(self.generator, self.loader_generator), temporary / STATE_DIR / f"rng_state_{rank}.pt"
                )
                if self.config.fsdp:  # each process writes its shards; the pipeline holds the gathered EMA
                    sharded_state = temporary / STATE_DIR / SHARDED_STATE_DIR
                    save_sharded_checkpoint(sharded_state, self.unwrapped, self.optimizer.optimizer, self.emas)
                    ema_model = self.ema_on_main_process()
                    if accelerator.is_main_process:
                        self.make_pipeline(ema_model).save_pretrained(temporary)
                elif accelerator.is_main_process:
                    if self.config.is_lora:  # only the adapter: the base model is the pretrained folder
                        self._save_lora(self.ema.model, temporary)
                    else:
                        self.make_pipeline(self.ema.model).save_pretrained(temporary)
                    save_file(self._trainable_state_dict(), temporary / STATE_DIR / "model.safetensors")
                    for index, ema in enumerate(self.emas):
                        if index > 0 or self.config.is_lora:  # float32, for resuming and `pixelgen export --ema INDEX`
                            save_file(ema.state_dict(), temporary / STATE_DIR / f"ema_{index}.safetensors")
                    torch.save(self.optimizer.state_dict(), temporary / STATE_DIR / "optimizer.pt")
                if accelerator.is_main_process:
                    state = {
                        "step": self.step,
                        "num_processes": accelerator.num_processes,
                        "dataset_size": len(self.dataset),
                        "ema_decays": list(self.config.ema_decays),
                        "config": self.config.to_json_dict(),
                    }
                    (temporary / STATE_DIR / "state.json").write_text(json.dumps(state, indent=2, allow_nan=False))
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    apply_umask(temporary)  # like every other file of the run (mkdtemp's folder is owner-only)
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
        saved_decays = state.get("ema_decays", [state["config"]["ema_decay"]])
        if list(saved_decays) != list(self.config.ema_decays):
            raise ValueError(
                f"Checkpoint {checkpoint} tracks EMA decays {saved_decays}, this run {list(self.config.ema_decays)}:"
                " resume with the same --ema-decay values."
            )
        sharded_state = state_dir / SHARDED_STATE_DIR
        if sharded_state.is_dir():  # written with --fsdp by any number of processes, resharded for this run
            load_sharded_checkpoint(sharded_state, self.unwrapped, self.optimizer.optimizer, self.emas)
        elif self.sharded:
            raise ValueError(
                f"Checkpoint {checkpoint} was written without --fsdp: resume it without --fsdp (or on one process)"
            )
        else:
            online = load_file(state_dir / "model.safetensors")
            missing, unexpected = self.unwrapped.load_state_dict(online, strict=False)
            missing = [name for name in missing if self._is_checkpointed(name)]
            if missing or unexpected:
                raise ValueError(
                    f"Checkpoint {checkpoint} does not match this run's model: missing {missing[:5]},"
                    f" unexpected {unexpected[:5]} (different architecture or REPA setting?)."
                )
            for index, ema in enumerate(self.emas):
                if index == 0 and not self.config.is_lora:
                    ema.model.load_state_dict(
                        load_file(checkpoint / "transformer" / "diffusion_pytorch_model.safetensors")
                    )
                else:
                    ema.load_state_dict(load_file(state_dir / f"ema_{index}.safetensors"))
            optimizer_state = torch.load(state_dir / "optimizer.pt", map_location="cpu", weights_only=True)
            self.optimizer.load_state_dict(optimizer_state)
        for group in self.optimizer.param_groups:  # the run's settings, not the ones saved with the optimiser
            group.update(
                lr=self.config.learning_rate,
                betas=(self.config.adam_beta1, self.config.adam_beta2),
                weight_decay=self.config.weight_decay,
            )
        rng_file = state_dir / f"rng_state_{self.accelerator.process_index}.pt"
        if rng_file.is_file():
            _set_rng_state(torch.load(rng_file, weights_only=True), self.generator, self.loader_generator)
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

    def _make_room_for_a_new_run(self) -> None:
        """A new run (no `resume`) into a folder that holds another run's checkpoints, log or sample grids would
        overwrite its same-numbered checkpoints and mix the logs (and a later `--resume latest` would pick the wrong
        run): refused, unless `overwrite`, which removes them first. Links are removed, never followed."""
        previous = [path for path in list_checkpoints(self.output_dir) if not path.is_symlink()]  # a link: replaced
        previous += [
            path
            for path in (self.output_dir / "train_log.jsonl", self.output_dir / "samples")
            if path.exists() or path.is_symlink()
        ]
        if not previous:
            return
        if not self.config.overwrite:
            names = ", ".join(path.name for path in previous[:3]) + (", ..." if len(previous) > 3 else "")
            raise ValueError(
                f"output_dir {self.output_dir} holds another run ({names}); continue it with --resume latest, choose"
                " another --output-dir, or pass --overwrite to delete it and start anew"
            )
        logger.warning(f"--overwrite: deleting the previous run in {self.output_dir} ({len(previous)} entries).")
        for path in previous:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()

    def _train(self) -> Path:
        config, accelerator = self.config, self.accelerator
        if accelerator.is_main_process:  # temporary folders of a run that was killed mid-save (we hold the lock)
            for stale in self.output_dir.glob(".checkpoint-*.tmp"):
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale)
                else:
                    stale.unlink()
        if accelerator.is_main_process:
            for name in ("train_log.jsonl", "samples"):  # checked again at each write; refused before any work
                if (self.output_dir / name).is_symlink():
                    raise ValueError(
                        f"{self.output_dir / name} is a symbolic link; remove it (a run never writes through a link)"
                    )
            if config.resume is None:
                self._make_room_for_a_new_run()
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
                    append_line(self.output_dir / "train_log.jsonl", json.dumps(record))
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
            generator=self.loader_generator,
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
        for images, conditions in _batches(loader):
            images = images.to(accelerator.device, non_blocking=True)
            conditions = conditions.to(accelerator.device, non_blocking=True)
            losses = self.objective(images, conditions, generator=self.generator, step=self.step)
            accelerator.backward(losses["loss"])
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(self.parameters, config.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            for ema in self.emas:
                ema.update(self.unwrapped.transformer)
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
                    append_line(log_path, json.dumps(record))
                window_start, window_steps, window_losses = time.perf_counter(), 0, {}
                if not math.isfinite(means["loss"]):  # every process sees the same reduced mean, so all stop
                    raise FloatingPointError(
                        f"training diverged: the loss is {means['loss']} at step {self.step}; resume from the last"
                        " checkpoint with a lower --learning-rate (or --max-grad-norm)"
                    )
            if self.step % config.sample_every == 0 and (accelerator.is_main_process or self.sharded):
                grid_path = self.output_dir / "samples" / f"step-{self.step:07d}.png"
                self.save_sample_grid(grid_path)
            ema_model = None
            if self.evaluator is not None and self.step % config.eval_every == 0:
                ema_model = self.ema_on_main_process()
            if ema_model is not None:
                scores = self.evaluator(self.make_pipeline(ema_model))
                progress.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
                with open(log_path, "a") as log_file:
                    log_file.write(json.dumps({"step": self.step, **scores}) + "\n")
            if self.step % config.checkpoint_every == 0 or self.step == config.max_steps:
                checkpoint = self.save_checkpoint()
        progress.close()
        accelerator.wait_for_everyone()
        return checkpoint if checkpoint is not None else self.save_checkpoint()


def _batches(loader):
    """The loader's batches. A ValueError raised in a worker process (bad data) comes back wrapped with the worker's
    traceback in its message; it is raised again with the original message alone, for a one-line error."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except ValueError as error:
            message = str(error)
            if "Original Traceback" not in message:
                raise
            last = message.strip().splitlines()[-1]
            raise ValueError(last.removeprefix("ValueError: ")) from error
        yield batch


def train(config: TrainingConfig) -> Path:
    """Trains a PixelGen class-to-image or text-to-image model; returns the final checkpoint, a loadable pipeline
    folder whose transformer holds the EMA weights."""
    return Trainer(config).train()
