"""Sampling throughput of PixelGenC2IPipeline: images/s and transformer rows, eager vs compiled.

CPU, small model (seconds):
    python benchmarks/benchmark_sampling.py --preset tiny --device cpu --steps 10
GPU, PixelGen-XL/16 at full size with random weights (the recommended Heun-50, CFG 2.25 on [0.1, 0.9] recipe):
    python benchmarks/benchmark_sampling.py --preset PixelGen-XL/16 --device cuda --dtype bfloat16 --batch 16 --compile
Against upstream's own sampler and model on the same weights and noise (needs a local checkout of
Zehong-Ma/PixelGen; nothing of it ships here), reporting the speed ratio and the max abs difference:
    python benchmarks/benchmark_sampling.py --preset tiny --upstream-repo /path/to/PixelGen
"""

import argparse
import importlib.util
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from pixelgen_diffusers import PixelGenC2IPipeline, PixelGenScheduler, PixelGenTransformer2DModel


SMALL_PRESETS = {
    "tiny": dict(sample_size=64, patch_size=8, hidden_size=192, depth=6, num_heads=3, in_context_len=8,
                 in_context_start=2),
    # PixelGen-XL's token count (256 px, patch 16) at a CPU-friendly width and depth.
    "small": dict(sample_size=256, patch_size=16, hidden_size=384, depth=8, num_heads=6, in_context_len=32,
                  in_context_start=2),
}  # fmt: skip
UPSTREAM_TO_OURS = [
    (r"^in_context_posemb$", "in_context_pos_embed"),
    (r"^t_embedder\.mlp\.0\.", "time_embedder.linear_1."),
    (r"^t_embedder\.mlp\.2\.", "time_embedder.linear_2."),
    (r"^y_embedder\.embedding_table\.", "class_embedder."),
    (r"^x_embedder\.proj1\.", "patch_embedder.proj_in."),
    (r"^x_embedder\.proj2\.", "patch_embedder.proj_out."),
    (r"^blocks\.", "transformer_blocks."),
    (r"\.attn\.qkv\.", ".attn.to_qkv."),
    (r"\.attn\.q_norm\.", ".attn.norm_q."),
    (r"\.attn\.k_norm\.", ".attn.norm_k."),
    (r"\.attn\.proj\.", ".attn.to_out."),
    (r"\.mlp\.w12\.", ".ff.proj_in."),
    (r"\.mlp\.w3\.", ".ff.proj_out."),
    (r"\.adaLN_modulation\.1\.", ".adaln_modulation."),
    (r"^final_layer\.norm_final\.", "final_layer.norm."),
    (r"^final_layer\.linear\.", "final_layer.proj_out."),
]


def build_pipeline(args) -> PixelGenC2IPipeline:
    torch.manual_seed(0)
    if args.preset in SMALL_PRESETS:
        transformer = PixelGenTransformer2DModel(**SMALL_PRESETS[args.preset])
    else:
        transformer = PixelGenTransformer2DModel.from_preset(args.preset)
    with torch.no_grad():  # random, non-degenerate weights (the zero-initialised layers would make x_hat trivial)
        for parameter in transformer.parameters():
            parameter.normal_(0, 0.02)
    transformer = transformer.to(args.device, getattr(torch, args.dtype)).eval()
    scheduler = PixelGenScheduler(sampling_method=args.sampler, timeshift=2.0)
    pipe = PixelGenC2IPipeline(transformer, scheduler, guidance_scale=args.guidance_scale, guidance_interval_min=0.1,
                               guidance_interval_max=0.9, num_inference_steps=args.steps)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(runners: dict, args) -> dict:
    """Runs each callable once to warm up, then `repeats` rounds alternating between them (so drifting clock speed
    or background load hits all alike); returns each one's median seconds per run."""
    for run in runners.values():
        run()
    times = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            synchronize(args.device)
            start = time.perf_counter()
            run()
            synchronize(args.device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def count_rows(module: torch.nn.Module, run) -> tuple[int, torch.Tensor]:
    rows = []
    handle = module.register_forward_pre_hook(lambda _, inputs: rows.append(inputs[0].shape[0]))
    output = run()
    handle.remove()
    return sum(rows), output


def ours_runner(pipe, noise, labels):
    return lambda: pipe(labels, latents=noise, output_type="latent").images


def upstream_runner(pipe, args, noise, labels):
    """Upstream's JiT and HeunSamplerJiT/EulerSamplerJiT/AdamLMSamplerJiT, loaded from a local checkout."""
    repo = Path(args.upstream_repo)
    sys.path.insert(0, str(repo))
    torch.compile = lambda fn=None, *a, **k: fn if fn is not None else (lambda f: f)  # upstream decorates blocks
    if not args.device.startswith("cuda"):
        torch.Tensor.cuda = lambda self, *a, **k: self  # upstream builds its RoPE tables with .cuda()
    spec = importlib.util.spec_from_file_location("upstream_jit", repo / "src/models/transformer/JiT.py")
    upstream_jit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(upstream_jit)
    from src.diffusion.base.guidance import simple_guidance_fn
    from src.diffusion.flow_matching.adam_sampling import AdamLMSamplerJiT
    from src.diffusion.flow_matching.sampling import EulerSamplerJiT, HeunSamplerJiT
    from src.diffusion.flow_matching.scheduling import LinearScheduler

    config = pipe.transformer.config
    net = upstream_jit.JiT(input_size=config.sample_size, patch_size=config.patch_size, hidden_size=config.hidden_size,
                           depth=config.depth, num_heads=config.num_heads, num_classes=config.num_classes,
                           use_bottleneck=config.bottleneck_dim is not None, bottleneck_dim=config.bottleneck_dim or 0,
                           in_context_len=config.in_context_len, in_context_start=config.in_context_start)  # fmt: skip
    ours = pipe.transformer.state_dict()
    upstream_state = {}
    for key in net.state_dict():
        mapped = key
        for pattern, replacement in UPSTREAM_TO_OURS:
            mapped = re.sub(pattern, replacement, mapped)
        upstream_state[key] = ours[mapped]
    net.load_state_dict(upstream_state)
    net = net.to(args.device, getattr(torch, args.dtype)).eval()
    sampler_class = {"heun": HeunSamplerJiT, "euler": EulerSamplerJiT, "adam_lm": AdamLMSamplerJiT}[args.sampler]
    extra = {"exact_henu": True} if args.sampler == "heun" else {}
    sampler = sampler_class(scheduler=LinearScheduler(), guidance_fn=simple_guidance_fn, num_steps=args.steps,
                            guidance=args.guidance_scale, guidance_interval_min=0.1, guidance_interval_max=0.9,
                            timeshift=2.0, **extra)  # fmt: skip
    condition = torch.tensor(labels, device=args.device)
    uncondition = torch.full_like(condition, config.num_classes)

    def run():
        with torch.no_grad():
            return sampler(lambda x, t, y: net(x.to(net.pos_embed.dtype), t, y).float(), noise, condition, uncondition)

    return net, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="'tiny', 'small' or a preset name such as PixelGen-XL/16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sampler", default="heun", choices=["heun", "euler", "adam_lm"])
    parser.add_argument("--guidance-scale", type=float, default=2.25)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--compile", action="store_true", help="also time compile_repeated_blocks()")
    parser.add_argument("--upstream-repo", help="local checkout of Zehong-Ma/PixelGen to compare against")
    args = parser.parse_args()

    pipe = build_pipeline(args)
    size = pipe.transformer.config.sample_size
    noise = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(args.device)
    labels = [i % pipe.transformer.config.num_classes for i in range(args.batch)]
    print(
        f"{args.preset} {size}px, batch {args.batch}, {args.sampler} {args.steps} steps, {args.dtype}, {args.device}"
    )

    runners = {"ours": ours_runner(pipe, noise, labels)}
    rows, sample = count_rows(pipe.transformer, runners["ours"])
    if args.upstream_repo:
        net, runners["upstream"] = upstream_runner(pipe, args, noise, labels)
        upstream_rows, upstream_sample = count_rows(net, runners["upstream"])
    seconds = measure(runners, args)
    print(f"pixelgen-diffusers eager   : {args.batch / seconds['ours']:8.3f} images/s  {rows} transformer rows/run")
    if args.upstream_repo:
        print(
            f"upstream PixelGen          : {args.batch / seconds['upstream']:8.3f} images/s  {upstream_rows} rows/run"
        )
        print(f"speed-up (same run)        : {seconds['upstream'] / seconds['ours']:8.2f}x")
        print(f"max |ours - upstream|      : {(sample - upstream_sample).abs().max().item():.2e}")
    if args.compile:
        pipe.transformer.compile_repeated_blocks(fullgraph=True)
        compiled = measure({"compiled": runners["ours"]}, args)["compiled"]
        speed_up = seconds["ours"] / compiled
        print(f"pixelgen-diffusers compiled: {args.batch / compiled:8.3f} images/s ({speed_up:.2f}x eager)")


if __name__ == "__main__":
    main()
