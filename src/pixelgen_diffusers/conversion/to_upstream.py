# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Model folders -> upstream PixelGen checkpoints (`pixelgen convert --to upstream FOLDER OUT.ckpt`).

The inverse of `convert_checkpoint`, through the same tables: `KeyMap.to_upstream` renames every tensor, the
`ModelKind.yaml_fields` give the denoiser's `init_args`, and `upstream_config.UPSTREAM_SAMPLERS` the sampler class.
The checkpoint has upstream's Lightning layout (`state_dict` with `ema_denoiser.*`, which upstream's `predict`, its
`app.py` and `ModelLoader` read, and `denoiser.*`, the same tensors stored once), and the YAML beside it holds the
`class_path` / `init_args` of the denoiser, conditioner and sampler with the folder's sampling recipe. Converting
the pair back gives the folder's tensors and configs unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..utils import atomic_write, atomic_write_bytes
from .keys import MODEL_KINDS, ModelKind
from .model_folder import ConversionError, stored_dtype
from .upstream_config import UPSTREAM_SAMPLERS


if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline


# Upstream's module paths (`class_path` in its YAML configs) for what a converted folder needs.
UPSTREAM_DENOISERS = {"c2i": "src.models.transformer.JiT.JiT", "t2i": "src.models.transformer.JiT_T2I.JiT_T2I"}
UPSTREAM_SAMPLER_MODULES = {
    "HeunSamplerJiT": "src.diffusion.flow_matching.sampling",
    "EulerSamplerJiT": "src.diffusion.flow_matching.sampling",
    "AdamLMSamplerJiT": "src.diffusion.flow_matching.adam_sampling",
}
LINEAR_SCHEDULER = "src.diffusion.flow_matching.scheduling.LinearScheduler"
LIGHTNING_VERSION = "2.4.0"  # the version upstream's configs were written with


def model_kind(transformer) -> ModelKind:
    name = type(transformer).__name__
    for kind in MODEL_KINDS.values():
        if kind.transformer_class == name:
            return kind
    raise ConversionError(f"the folder's transformer is a {name}, which has no upstream PixelGen counterpart")


def upstream_state_dict(transformer: torch.nn.Module, kind: ModelKind) -> dict[str, torch.Tensor]:
    """The transformer's tensors under upstream's names (`KeyMap.to_upstream`); a tensor without an upstream name
    (e.g. an unfused LoRA layer) is an error."""
    state_dict = transformer.state_dict()
    if kind.name == "c2i" and transformer.config.in_context_len == 0:
        state_dict.pop("in_context_pos_embed", None)  # upstream creates no table when there are no in-context tokens
    unmapped = sorted(key for key in state_dict if kind.key_map.to_upstream(key) is None)
    if unmapped:
        hint = (
            " (LoRA layers: fuse them first, pipe.fuse_lora(); pipe.unload_lora_weights())"
            if any("lora" in key for key in unmapped)
            else ""
        )
        shown = ", ".join(unmapped[:5]) + (", ..." if len(unmapped) > 5 else "")
        raise ConversionError(f"tensors with no upstream name: {shown}{hint}")
    return {kind.key_map.to_upstream(key): tensor.detach().cpu().contiguous() for key, tensor in state_dict.items()}


def upstream_config(pipeline: DiffusionPipeline, kind: ModelKind) -> dict:
    """Upstream's YAML (as a dict) for the pipeline: the denoiser's `init_args` from the transformer config (through
    `kind.yaml_fields`), the conditioner, and the sampler with the pipeline's stored sampling recipe."""
    transformer = pipeline.transformer.config
    init_args = {argument: transformer[field] for argument, (field, _) in kind.yaml_fields.items()}
    if kind.name == "c2i" and transformer.bottleneck_dim is None:
        del init_args["bottleneck_dim"]
        init_args["use_bottleneck"] = False

    scheduler, config = pipeline.scheduler.config, pipeline.config
    sampler_class = {method: name for name, method in UPSTREAM_SAMPLERS.items()}[scheduler.sampling_method]
    sampler_args = {
        "num_steps": config.num_inference_steps,
        "guidance": config.guidance_scale,
        "timeshift": scheduler.timeshift,
        "guidance_interval_min": config.guidance_interval_min,
        "guidance_interval_max": config.guidance_interval_max,
        "scheduler": LINEAR_SCHEDULER,
        "guidance_fn": "src.diffusion.base.guidance.simple_guidance_fn",
    }
    if sampler_class == "AdamLMSamplerJiT":
        sampler_args["order"] = scheduler.solver_order
    else:
        sampler_args["w_scheduler"] = LINEAR_SCHEDULER
    if sampler_class == "HeunSamplerJiT":
        sampler_args["exact_henu"] = True  # the exact Heun solver, which PixelGenScheduler implements

    size = transformer.sample_size
    if kind.name == "c2i":
        conditioner = {
            "class_path": "src.models.conditioner.class_label.LabelConditioner",
            "init_args": {"num_classes": transformer.num_classes},
        }
        pred_dataset = {
            "class_path": "src.data.dataset.randn.ClassLabelRandomNDataset",
            "init_args": {
                "num_classes": transformer.num_classes,
                "max_num_instances": 50000,
                "noise_scale": config.noise_scale,
                "latent_shape": [transformer.in_channels, size, size],
            },
        }
    else:
        if config.noise_scale != 1.0:
            raise ConversionError(
                f"the folder's noise_scale {config.noise_scale} has no place in upstream's text-to-image config"
            )
        conditioner = {
            "class_path": "src.models.conditioner.qwen3_text_encoder.Qwen3TextEncoder",
            "init_args": {
                "weight_path": config.get("text_encoder_id") or "Qwen/Qwen3-1.7B",
                "embed_dim": transformer.txt_embed_dim,
                "max_length": transformer.txt_max_length,
            },
        }
        pred_dataset = {
            "class_path": "src.data.dataset.geneval.GenEvalDataset",
            "init_args": {
                "meta_json_path": "./evaluations/geneval/evaluation_metadata.jsonl",
                "num_samples_per_instance": 4,
                "latent_shape": [transformer.in_channels, size, size],
            },
        }
    return {
        "model": {
            "vae": {"class_path": "src.models.autoencoder.pixel.PixelAE", "init_args": {"scale": 1.0}},
            "denoiser": {"class_path": UPSTREAM_DENOISERS[kind.name], "init_args": init_args},
            "conditioner": conditioner,
            "diffusion_sampler": {
                "class_path": f"{UPSTREAM_SAMPLER_MODULES[sampler_class]}.{sampler_class}",
                "init_args": sampler_args,
            },
        },
        "data": {"pred_dataset": pred_dataset, "pred_batch_size": 32, "pred_num_workers": 1},
    }


def _load(source) -> DiffusionPipeline:
    """A pipeline object as it is; a folder with the installed classes, the transformer in its stored dtype."""
    import torch
    from diffusers import DiffusionPipeline

    from .hub import load_package_pipeline

    if isinstance(source, DiffusionPipeline):
        return source
    folder = Path(source)
    if not folder.is_dir():
        raise ConversionError(f"model folder {folder} does not exist (or is not a folder)")
    dtypes = {"transformer": stored_dtype(folder / "transformer") or torch.float32, "default": torch.float32}
    skip = {"text_encoder": None} if (folder / "text_encoder").is_dir() else {}  # upstream's conditioner loads it
    return load_package_pipeline(folder, dtype=dtypes, **skip)


def convert_to_upstream(
    source: str | Path | DiffusionPipeline,
    output_file: str | Path,
    *,
    overwrite: bool = False,
    verbose: bool = False,
) -> tuple[Path, Path]:
    """Writes a model folder (or pipeline object, e.g. after `fuse_lora`) as an upstream PixelGen checkpoint.

    Args:
        source: a model folder of ours (converted, exported, fine-tuned) or a pipeline object.
        output_file: the checkpoint to write (`.ckpt`); the YAML goes beside it (same name, `.yaml`), and for
            class names that are not ImageNet's, a `.labels.json` to give back to `pixelgen convert --labels`.
        overwrite: replace existing output files.

    Returns:
        The checkpoint and YAML paths. Each file is written to a temporary name and renamed into place.

    Raises:
        ConversionError: (before anything is written) an existing output without `overwrite`, a folder that does
            not load, or a model with tensors or settings upstream's classes have no place for.
    """
    import json

    import torch
    import yaml

    from .labels import imagenet_id2label

    output_file = Path(output_file).expanduser()
    if output_file.suffix != ".ckpt":
        raise ConversionError(f"the upstream checkpoint must be a .ckpt file, got {output_file}")
    config_file = output_file.with_suffix(".yaml")
    labels_file = output_file.with_suffix(".labels.json")
    if not overwrite:
        for path in (output_file, config_file):
            if path.exists() or path.is_symlink():
                raise ConversionError(f"{path} exists; pass --overwrite to replace it")
    if not output_file.parent.is_dir():
        raise ConversionError(f"the folder of {output_file} does not exist")

    pipeline = _load(source)
    kind = model_kind(pipeline.transformer)
    state_dict = upstream_state_dict(pipeline.transformer, kind)
    config = upstream_config(pipeline, kind)
    id2label = getattr(pipeline, "id2label", None)
    labels = None
    if kind.name == "c2i" and id2label and id2label != imagenet_id2label():
        labels = {str(key): value for key, value in sorted(id2label.items())}

    # Lightning's layout: both weight copies (the same tensors, which torch.save stores once).
    checkpoint = {
        "state_dict": {
            **{f"denoiser.{key}": tensor for key, tensor in state_dict.items()},
            **{f"ema_denoiser.{key}": tensor for key, tensor in state_dict.items()},
        },
        "pytorch-lightning_version": LIGHTNING_VERSION,
        "epoch": 0,
        "global_step": 0,
    }
    with atomic_write(output_file) as file:
        torch.save(checkpoint, file)
    header = f"# lightning.pytorch=={LIGHTNING_VERSION}\n# written by pixelgen convert --to upstream\n"
    atomic_write_bytes(config_file, (header + yaml.safe_dump(config, sort_keys=False)).encode())
    if labels is not None:
        atomic_write_bytes(labels_file, (json.dumps(labels, indent=2) + "\n").encode())
    if verbose:
        parameters = sum(tensor.numel() for tensor in state_dict.values())
        extra = f" and {labels_file.name} (convert back with --labels)" if labels is not None else ""
        print(
            f"Wrote {output_file} ({kind.upstream_class}, {parameters:,} values as ema_denoiser.* / denoiser.*),"
            f" {config_file.name}{extra}"
        )
    return output_file, config_file
