# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""What the upstream run says about sampling: the evaluation recipes (`RECOMMENDED_SETTINGS`), the upstream YAML's
`diffusion_sampler`, and original JiT's saved sampling arguments, each turned into `SamplingDefaults`; and reading the
upstream YAML itself. yaml and the pipelines are imported where they are used."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..utils import one_line
from .keys import T2I, ModelKind
from .model_folder import ConversionError


@dataclasses.dataclass(frozen=True)
class SamplingDefaults:
    """A sampling recipe: written to the scheduler config (method, shift, order) and the pipeline config (the rest)."""

    sampling_method: str
    num_inference_steps: int
    guidance_scale: float
    guidance_interval_min: float
    guidance_interval_max: float
    timeshift: float
    noise_scale: float = 1.0
    solver_order: int = 2

    def check(self) -> "SamplingDefaults":
        """A recipe that would make the written folder fail or draw black images is refused before any folder is
        written: the pipeline's and the scheduler's own checks, run on these values (here, not at construction, so
        that importing this module needs no torch)."""
        from ..pipelines.pipeline_pixelgen_c2i import PixelGenC2IPipeline
        from ..schedulers.scheduling_pixelgen import PixelGenScheduler

        PixelGenScheduler.check_options(self.sampling_method, self.timeshift, self.solver_order)
        PixelGenC2IPipeline.check_sampling_defaults(
            self.num_inference_steps,
            self.guidance_scale,
            self.guidance_interval_min,
            self.guidance_interval_max,
            self.noise_scale,
        )
        return self

    def scheduler_config(self) -> dict:
        return dict(sampling_method=self.sampling_method, timeshift=self.timeshift, solver_order=self.solver_order)

    def pipeline_config(self) -> dict:
        return dict(
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            guidance_interval_min=self.guidance_interval_min,
            guidance_interval_max=self.guidance_interval_max,
            noise_scale=self.noise_scale,
        )


# The upstream evaluation recipes (reference section 4.4).
RECOMMENDED_SETTINGS = {
    # configs_c2i/PixelGen_XL.yaml: FID 1.83 with the 160-epoch weights.
    "PixelGen-XL/16": SamplingDefaults("heun", 50, 2.25, 0.1, 0.9, timeshift=2.0),
    # configs_c2i/PixelGen_Large.yaml (the paper's Table 1); also used for JiT models, with JiT's noise scale.
    "PixelGen-L/16": SamplingDefaults("euler", 50, 1.0, 0.1, 1.0, timeshift=1.0),
    # configs_t2i/sft_res512.yaml (GenEval) and app.py.
    "PixelGen-XXL/16-T2I": SamplingDefaults("adam_lm", 25, 4.0, 0.0, 1.0, timeshift=3.0, solver_order=2),
}
# Original JiT trains and samples larger images with proportionally larger noise; PixelGen always uses 1.0.
JIT_NOISE_SCALE = {256: 1.0, 512: 2.0, 1024: 4.0}

UPSTREAM_SAMPLERS = {"HeunSamplerJiT": "heun", "EulerSamplerJiT": "euler", "AdamLMSamplerJiT": "adam_lm"}
# Original JiT's sampling arguments (main_jit.py), saved with its checkpoints -> the SamplingDefaults field each sets.
JIT_SAMPLING_ARGS = {
    "sampling_method": "sampling_method",
    "num_sampling_steps": "num_inference_steps",
    "cfg": "guidance_scale",
    "interval_min": "guidance_interval_min",
    "interval_max": "guidance_interval_max",
    "noise_scale": "noise_scale",
}


def read_upstream_config(path: str | Path) -> dict:
    """The upstream Lightning/jsonargparse YAML as a dict (anchors resolved)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"--config file not found: {path}")
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConversionError(f"cannot read --config {path}: {one_line(error)}") from None
    model = config.get("model") if isinstance(config, dict) else None
    denoiser = model.get("denoiser") if isinstance(model, dict) else None
    if not isinstance(denoiser, dict) or "class_path" not in denoiser:
        raise ConversionError(f"--config {path.name} is not a PixelGen config: it has no model.denoiser.class_path")
    return config


def sampling_from_config(upstream_config: dict, config_name: str = "--config") -> tuple[SamplingDefaults, list[str]]:
    """The YAML's `diffusion_sampler` (with upstream's constructor defaults) and its prediction noise scale."""
    sampler = upstream_config.get("model", {}).get("diffusion_sampler")
    if not isinstance(sampler, dict) or "class_path" not in sampler:
        raise ConversionError(f"{config_name} has no model.diffusion_sampler.class_path")
    class_name = str(sampler["class_path"]).rsplit(".", 1)[-1]
    if class_name not in UPSTREAM_SAMPLERS:
        raise ConversionError(
            f"{config_name} model.diffusion_sampler is {class_name}; supported: {', '.join(UPSTREAM_SAMPLERS)}"
        )
    args = sampler.get("init_args") or {}
    notes = []
    guidance = args.get("guidance", 1.0)
    if not isinstance(guidance, (int, float)):
        raise ConversionError(f"{config_name} diffusion_sampler guidance must be one number, got {guidance!r}")
    if class_name == "HeunSamplerJiT" and not args.get("exact_henu", False):
        notes.append("the YAML's Heun sampler has exact_henu false; the exact Heun solver is used instead")
    if args.get("last_step") is not None:
        notes.append(f"the YAML's last_step {args['last_step']} is ignored (the grid ends at t = 1 - 1/N)")
    noise_scale = 1.0
    for dataset in ("pred_dataset", "eval_dataset"):
        dataset_args = (upstream_config.get("data", {}).get(dataset) or {}).get("init_args") or {}
        if "noise_scale" in dataset_args:
            noise_scale = dataset_args["noise_scale"]
            if isinstance(noise_scale, bool) or not isinstance(noise_scale, (int, float)):
                raise ConversionError(f"{config_name} data.{dataset}.init_args.noise_scale must be a number")
            noise_scale = float(noise_scale)
            break
    values = {
        "num_steps": args.get("num_steps", 250),  # upstream BaseSampler's default
        "guidance": guidance,
        "guidance_interval_min": args.get("guidance_interval_min", 0.0),
        "guidance_interval_max": args.get("guidance_interval_max", 1.0),
        "timeshift": args.get("timeshift", 1.0),
        "order": args.get("order", 2),
    }
    for key, value in values.items():
        integer = key in ("num_steps", "order")
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            kind = "an integer" if integer else "a number"
            raise ConversionError(f"{config_name} diffusion_sampler {key} must be {kind}, got {value!r}")
    try:
        defaults = SamplingDefaults(
            sampling_method=UPSTREAM_SAMPLERS[class_name],
            num_inference_steps=values["num_steps"],
            guidance_scale=float(guidance),
            guidance_interval_min=float(values["guidance_interval_min"]),
            guidance_interval_max=float(values["guidance_interval_max"]),
            timeshift=float(values["timeshift"]),
            noise_scale=noise_scale,
            solver_order=values["order"],
        ).check()
    except ValueError as error:  # NaN, infinite or out-of-range values would make the folder draw black images
        raise ConversionError(f"{config_name} model.diffusion_sampler: {error}") from None
    return defaults, notes


def recommended_defaults(
    kind: ModelKind, preset: str | None, family: str, config: dict
) -> tuple[SamplingDefaults, str]:
    """The upstream evaluation recipe for a model converted without its YAML."""
    if kind is T2I:
        return RECOMMENDED_SETTINGS["PixelGen-XXL/16-T2I"], "recommended table: PixelGen-XXL/16-T2I"
    if family == "pixelgen" and (preset == "PixelGen-XL/16" or config.get("bottleneck_dim") is None):
        return RECOMMENDED_SETTINGS["PixelGen-XL/16"], "recommended table: PixelGen-XL/16"
    defaults = RECOMMENDED_SETTINGS["PixelGen-L/16"]
    if family == "jit":
        size = config["sample_size"]
        noise_scale = JIT_NOISE_SCALE.get(size, max(1.0, size / 256))
        return dataclasses.replace(defaults, noise_scale=noise_scale), f"recommended table: JiT at {size}px"
    return defaults, "recommended table: PixelGen-L/16"


def defaults_from_jit_args(defaults: SamplingDefaults, jit_args: dict) -> tuple[SamplingDefaults, list[str]]:
    """The sampling recipe an original JiT checkpoint carries in its saved arguments (the one its own evaluation
    used), over `defaults`; JiT's time grid is unshifted. Returns the recipe and the arguments it took."""
    changes, taken = {}, []
    for argument, field in JIT_SAMPLING_ARGS.items():
        value = jit_args.get(argument)
        if value is None:
            continue
        if field == "sampling_method":
            value = str(value).lower()
            if value not in ("heun", "euler"):
                raise ConversionError(
                    f"the checkpoint's args.sampling_method {value!r} is not a JiT sampler (heun, euler)"
                )
        else:
            value = int(value) if field == "num_inference_steps" else float(value)
        changes[field] = value
        taken.append(argument)
    if taken:
        changes["timeshift"] = 1.0
    return dataclasses.replace(defaults, **changes), taken
