# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Named stock schedulers and caches for the command line (`--scheduler NAME`, `--cache NAME[:VALUE]`) and the demo
evaluation: each name builds the diffusers object with the settings that fit a PixelGen pipeline. torch and
diffusers are imported only when an object is built, so that argument checks stay fast."""

import argparse
import difflib
import math


# --scheduler NAME -> (diffusers class name, extra config). "pixelgen" keeps the model's PixelGenScheduler.
SCHEDULERS = {
    "pixelgen": None,
    "flow-match-euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "flow-match-heun": ("FlowMatchHeunDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}),
    "dpm-solver": ("DPMSolverMultistepScheduler", {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}),
}

# --cache NAME[:VALUE] -> what VALUE sets, and its default.
CACHES = {
    "first-block": ("threshold", 0.1),
    "mag": ("threshold", 0.06),
    "sea": ("threshold", 0.25),
    "taylorseer": ("cache interval", 2),
    "pyramid-attention-broadcast": ("attention skip range", 2),
    "faster": ("attention skip range", 2),
}


def _check_name(kind: str, name: str, accepted) -> None:
    if name not in accepted:
        matches = difflib.get_close_matches(name, list(accepted), n=2)
        hint = f" Did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
        raise ValueError(f"Unknown {kind} {name!r}; accepted: {', '.join(accepted)}.{hint}")


def make_scheduler(name: str, pipeline, timeshift: float | None = None):
    """The stock scheduler `name`, shifted by `timeshift` (default: the model's PixelGenScheduler timeshift, so the
    time grid keeps the model's recipe), or the model's own scheduler for `"pixelgen"`."""
    import diffusers

    _check_name("scheduler", name, SCHEDULERS)
    if SCHEDULERS[name] is None:
        return pipeline.scheduler
    class_name, extra = SCHEDULERS[name]
    if timeshift is None:
        timeshift = pipeline.scheduler.config.get("timeshift", 1.0)
    shift_name = "shift" if class_name.startswith("FlowMatch") else "flow_shift"
    return getattr(diffusers, class_name)(**extra, **{shift_name: timeshift})


def parse_cache(spec: str) -> tuple[str, float]:
    """`"first-block:0.2"` -> ("first-block", 0.2); the value defaults per cache (see `CACHES`)."""
    name, _, value = spec.partition(":")
    _check_name("cache", name, CACHES)
    what, default = CACHES[name]
    if not value:
        return name, default
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"--cache {spec!r}: the {what} after ':' must be a number, got {value!r}.") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"--cache {spec!r}: the {what} must be a finite number >= 0, got {value}.")
    if what != "threshold" and (number != int(number) or number < 1):
        raise ValueError(f"--cache {spec!r}: the {what} must be a positive integer, got {value}.")
    return name, number


def make_cache_config(name: str, value: float, pipeline, num_evaluations: int | None = None, mag_ratios=None):
    """A diffusers cache config for `pipeline.transformer.enable_cache`. MagCache needs the model's magnitude ratios
    over the `num_evaluations` evaluations of a run (see `calibrate_mag_ratios`)."""
    import torch
    from diffusers.hooks import (
        FasterCacheConfig,
        FirstBlockCacheConfig,
        MagCacheConfig,
        PyramidAttentionBroadcastConfig,
        SeaCacheConfig,
        TaylorSeerCacheConfig,
    )

    _check_name("cache", name, CACHES)
    clock = lambda: pipeline.current_timestep  # noqa: E731  (diffusers' 1000 = noise convention)
    if name == "first-block":
        return FirstBlockCacheConfig(threshold=value)
    if name == "sea":
        return SeaCacheConfig(threshold=value)
    if name == "mag":
        if mag_ratios is None or num_evaluations is None:
            raise ValueError("MagCache needs the model's magnitude ratios: calibrate them with calibrate_mag_ratios.")
        return MagCacheConfig(threshold=value, mag_ratios=mag_ratios, num_inference_steps=num_evaluations)
    if name == "taylorseer":
        return TaylorSeerCacheConfig(cache_interval=int(value), taylor_factors_dtype=torch.float32)
    if name == "pyramid-attention-broadcast":
        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=int(value), current_timestep_callback=clock
        )
    return FasterCacheConfig(
        spatial_attention_block_skip_range=int(value),
        tensor_format="BCHW",
        attention_weight_callback=lambda module: 0.5,
        current_timestep_callback=clock,
    )


def calibrate_mag_ratios(pipeline, **call_kwargs) -> list[float]:
    """MagCache's magnitude ratios for this model and recipe: one uncached run, and per evaluation the mean over
    tokens of |r_i| / |r_(i-1)|, r being the residual the block stack adds to the conditional rows (MagCache's
    calibration formula; the first ratio is 1)."""
    import torch

    conditions = {key: call_kwargs.pop(key) for key in ("class_labels", "prompt") if key in call_kwargs}
    condition = next(iter(conditions.values()))
    num_images = (len(condition) if isinstance(condition, list) else 1) * call_kwargs.get("num_images_per_prompt", 1)
    blocks = pipeline.transformer.transformer_blocks
    stack_inputs, ratios, previous_norm = [], [], []

    def record_ratio(module, args, output):
        residual = (output - stack_inputs.pop())[-num_images:].float()  # conditional rows come last
        norm = torch.linalg.norm(residual, dim=-1)
        ratios.append((norm / (previous_norm[-1] + 1e-8)).mean().item() if previous_norm else 1.0)
        previous_norm[:] = [norm]

    handles = [
        blocks[0].register_forward_pre_hook(lambda module, args: stack_inputs.append(args[0])),
        blocks[-1].register_forward_hook(record_ratio),
    ]
    try:
        with torch.no_grad():
            pipeline(**conditions, output_type="latent", **call_kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return ratios


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--scheduler` and `--cache`, shared by `pixelgen generate` and `pixelgen sample`."""
    parser.add_argument(
        "--scheduler",
        default="pixelgen",
        metavar="NAME",
        help=f"diffusers scheduler: {', '.join(SCHEDULERS)} (default pixelgen: the model's PixelGenScheduler; the"
        " stock ones keep the model's timeshift as their shift)",
    )
    parser.add_argument(
        "--cache",
        metavar="NAME[:VALUE]",
        help=f"diffusers cache: {', '.join(CACHES)}; VALUE is the threshold (first-block, mag, sea) or the skip"
        " interval (taylorseer, pyramid-attention-broadcast, faster)",
    )


def check_arguments(args: argparse.Namespace) -> None:
    """Checks `--scheduler` and `--cache` before anything is loaded."""
    _check_name("scheduler", args.scheduler, SCHEDULERS)
    if args.scheduler != "pixelgen" and getattr(args, "sampler", None) is not None:
        raise ValueError("--sampler chooses PixelGenScheduler's solver; leave it out with --scheduler")
    if args.cache:
        parse_cache(args.cache)
        if getattr(args, "compile", None):
            raise ValueError(
                f"--cache and --compile cannot be combined: diffusers' cache hooks run outside torch.compile"
                f" (torch.compiler.disable), which --compile's full-graph compile refuses; drop --cache {args.cache}"
                f" or --compile"
            )


def apply_arguments(pipeline, args: argparse.Namespace, call_kwargs: dict, calibration_kwargs: dict) -> None:
    """Puts the `--scheduler` on `pipeline` and enables the `--cache` on its transformer. A stock scheduler takes a
    `timeshift` in `call_kwargs` as its shift (removed from `call_kwargs`). MagCache first calibrates its ratios
    with one uncached run of `calibration_kwargs` (a condition and a generator) and the sampling settings."""
    check_arguments(args)
    if args.scheduler != "pixelgen":
        pipeline.scheduler = make_scheduler(args.scheduler, pipeline, call_kwargs.pop("timeshift", None))
    if args.cache:
        name, value = parse_cache(args.cache)
        ratios = num_evaluations = None
        if name == "mag":
            ratios = calibrate_mag_ratios(pipeline, **calibration_kwargs, **call_kwargs)
            num_evaluations = len(ratios)
        pipeline.transformer.enable_cache(make_cache_config(name, value, pipeline, num_evaluations, ratios))
