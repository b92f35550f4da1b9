"""Sampling speed of PixelGenC2IPipeline, eager and compiled, optionally side by side with upstream's own sampler and
model (a local checkout of Zehong-Ma/PixelGen; nothing of it ships here, and it needs `einops`) on the same weights
and noise.

Reported, each as the median of `--repeats` rounds that alternate between the contenders (so drifting clock speed or
background load hits all alike), in wall-clock and in process CPU time (the fairer measure on a shared machine):
  * per forward: one transformer forward at the guided row count (2 x batch), ours vs upstream's, and on CPU the
    share of upstream's forward spent in the GEMM and attention kernels (the same work in both implementations) with
    the ceiling it sets;
  * end to end: the whole sampling run, ours eager, ours compiled (`--compile blocks model`; the first run, which
    compiles, is reported separately with the number of graphs and not counted) and upstream's eager one, with the
    max abs difference of the samples.

The XL recipe (Heun 50, CFG 2.25 on (0.1, 0.9], timeshift 2) on XL's 256 tokens, one CPU thread:
    OMP_NUM_THREADS=1 python benchmarks/benchmark_sampling.py --preset small --batch 1 --compile blocks model \\
        --upstream-repo /path/to/PixelGen
A 64 px / patch 8 / width 256 / depth 8 model with 32 in-context tokens at batch 8:
    OMP_NUM_THREADS=1 python benchmarks/benchmark_sampling.py --preset small-64px --batch 8 --compile blocks model \\
        --upstream-repo /path/to/PixelGen
GPU, PixelGen-XL/16 at full size with random weights:
    python benchmarks/benchmark_sampling.py --preset PixelGen-XL/16 --device cuda --dtype bfloat16 --batch 16 \\
        --compile blocks model
"""

import argparse
import copy
import importlib.util
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch
from torch._dynamo.utils import counters

from pixelgen_diffusers import PixelGenC2IPipeline, PixelGenScheduler, PixelGenTransformer2DModel


SMALL_PRESETS = {
    "tiny": dict(sample_size=64, patch_size=8, hidden_size=192, depth=6, num_heads=3, in_context_len=8,
                 in_context_start=2),
    # PixelGen-XL's token count (256 px, patch 16) at a CPU-friendly width and depth.
    "small": dict(sample_size=256, patch_size=16, hidden_size=384, depth=8, num_heads=6, in_context_len=32,
                  in_context_start=2),
    # Few tokens (64 + 32 in-context), where per-op overheads and elementwise work weigh most.
    "small-64px": dict(sample_size=64, patch_size=8, hidden_size=256, depth=8, num_heads=4, in_context_len=32,
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
    return recipe_pipeline(transformer.to(args.device, getattr(torch, args.dtype)).eval(), args)


def recipe_pipeline(transformer: PixelGenTransformer2DModel, args) -> PixelGenC2IPipeline:
    """The sampling recipe of the command line (XL's by default: CFG on (0.1, 0.9], timeshift 2)."""
    scheduler = PixelGenScheduler(sampling_method=args.sampler, timeshift=2.0)
    pipe = PixelGenC2IPipeline(transformer, scheduler, guidance_scale=args.guidance_scale, guidance_interval_min=0.1,
                               guidance_interval_max=0.9, num_inference_steps=args.steps)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(runners: dict, args, repeats: int) -> dict:
    """Runs each callable once to warm up (compiling, for compiled ones; that time is returned separately), then
    `repeats` rounds alternating between them; returns each one's median wall and CPU seconds per run."""
    warmup = {}
    for name, run in runners.items():
        start = time.perf_counter()
        run()
        synchronize(args.device)
        warmup[name] = time.perf_counter() - start
    wall, cpu = {name: [] for name in runners}, {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            synchronize(args.device)
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            run()
            synchronize(args.device)
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    return {
        name: {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name]), "warmup": warmup[name]}
        for name in runners
    }


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
    if not args.device.startswith("cuda"):
        torch.Tensor.cuda = lambda self, *a, **k: self  # upstream builds its RoPE tables with .cuda()
    # Upstream decorates its block's forward with @torch.compile: disabled while its module is imported (its eager
    # model is the reference), and restored at once, or our compiled pipelines would silently run eagerly.
    compile_function = torch.compile
    torch.compile = lambda fn=None, *a, **k: fn if fn is not None else (lambda f: f)
    try:
        spec = importlib.util.spec_from_file_location("upstream_jit", repo / "src/models/transformer/JiT.py")
        upstream_jit = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(upstream_jit)
    finally:
        torch.compile = compile_function
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


def compiled_pipeline(pipe: PixelGenC2IPipeline, mode: str, args) -> PixelGenC2IPipeline:
    """A pipeline on a copy of the transformer (same weights), compiled whole ("model") or per block ("blocks")."""
    transformer = copy.deepcopy(pipe.transformer)
    if mode == "model":
        transformer.compile(fullgraph=True)
    else:
        transformer.compile_repeated_blocks(fullgraph=True)
    return recipe_pipeline(transformer, args)


# The kernels whose work no rewrite of the model changes: the matrix products (with the bias copy inside `addmm`),
# the patch convolution, and the attention kernel.
FIXED_WORK_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::mkldnn_convolution",
                  "aten::_scaled_dot_product_flash_attention_for_cpu")  # fmt: skip


def fixed_work_seconds(forward, repeats: int = 3) -> tuple[float, float]:
    """CPU seconds per forward spent in FIXED_WORK_OPS, and in the whole forward, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(repeats):
            forward()
    events = profiler.key_averages()
    fixed = sum(event.cpu_time_total for event in events if event.key in FIXED_WORK_OPS)
    total = sum(event.self_cpu_time_total for event in events)
    return fixed / repeats / 1e6, total / repeats / 1e6


def ratio_line(label: str, slow: dict, fast: dict) -> str:
    return f"{label:<44}: {slow['wall'] / fast['wall']:5.2f}x wall, {slow['cpu'] / fast['cpu']:5.2f}x CPU"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, and each option's default."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--preset", default="tiny", help=f"{', '.join(SMALL_PRESETS)} or a name like PixelGen-XL/16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sampler", default="heun", choices=["heun", "euler", "adam_lm"])
    parser.add_argument("--guidance-scale", type=float, default=2.25)
    parser.add_argument("--repeats", type=int, default=5, help="timed end-to-end rounds (median)")
    parser.add_argument("--forward-repeats", type=int, default=15, help="timed single-forward rounds (median)")
    parser.add_argument(
        "--compile", nargs="*", choices=["blocks", "model"], default=[], help="also time compiled pipelines"
    )
    parser.add_argument("--upstream-repo", help="local checkout of Zehong-Ma/PixelGen to compare against")
    args = parser.parse_args()
    if args.compile == []:
        args.compile = ["blocks"] if "--compile" in sys.argv else []

    pipe = build_pipeline(args)
    config = pipe.transformer.config
    size = config.sample_size
    noise = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(args.device)
    labels = [i % config.num_classes for i in range(args.batch)]
    print(
        f"{args.preset} {size}px, batch {args.batch}, {args.sampler} {args.steps} steps, CFG {args.guidance_scale} on"
        f" (0.1, 0.9], {args.dtype}, {args.device}, {torch.get_num_threads()} thread(s), torch {torch.__version__}"
    )
    print(f"load average before: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")

    runners = {"ours": ours_runner(pipe, noise, labels)}
    rows, samples = count_rows(pipe.transformer, runners["ours"])
    samples = {"ours": samples}
    net = None
    if args.upstream_repo:
        net, runners["upstream"] = upstream_runner(pipe, args, noise, labels)
        upstream_rows, samples["upstream"] = count_rows(net, runners["upstream"])

    # Per forward: the guided row count, same inputs.
    forward_ceiling = None
    if net is not None:
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(2 * args.batch, 3, size, size, generator=generator).to(args.device, pipe.transformer.dtype)
        t = torch.rand(2 * args.batch, generator=generator).to(args.device)
        y = torch.tensor(labels + [config.num_classes] * args.batch, device=args.device)
        with torch.no_grad():
            forwards = {"ours": lambda: pipe.transformer(x, t, y).sample, "upstream": lambda: net(x, t, y)}
            forward_difference = (forwards["ours"]() - forwards["upstream"]()).abs().max().item()
            forward_times = measure(forwards, args, args.forward_repeats)
        print(f"\nper forward ({2 * args.batch} rows, median of {args.forward_repeats})")
        for name, timing in forward_times.items():
            print(f"  {name:<9}: {timing['wall'] * 1e3:9.1f} ms wall {timing['cpu'] * 1e3:9.1f} ms CPU")
        print("  " + ratio_line("ours vs upstream", forward_times["upstream"], forward_times["ours"]))
        print(f"  max |ours - upstream| of the forward: {forward_difference:.2e}")
        if args.device == "cpu":
            # A bound for any implementation that calls the same GEMM and attention kernels: upstream's forward time
            # over the time those kernels take, as if all other work (norms, RoPE, modulation, copies) were free.
            with torch.no_grad():
                fixed, total = fixed_work_seconds(forwards["upstream"])
                ours_fixed, ours_total = fixed_work_seconds(forwards["ours"])
            print(
                f"  GEMM + attention kernels (profiler): upstream {fixed * 1e3:.1f} of {total * 1e3:.1f} ms"
                f" ({fixed / total:.0%}), ours {ours_fixed * 1e3:.1f} of {ours_total * 1e3:.1f} ms"
                f" ({ours_fixed / ours_total:.0%})"
            )
            forward_ceiling = total / fixed
            print(f"  ceiling with everything else free: {forward_ceiling:.2f}x per forward")

    graphs = {}
    for mode in args.compile:
        name = f"ours compiled ({mode})"
        runners[name] = ours_runner(compiled_pipeline(pipe, mode, args), noise, labels)
        # Compile now (the warm-up run, untimed) and count the graphs a whole run makes, with the Inductor backend.
        counters.clear()
        start = time.perf_counter()
        runners[name]()
        graphs[name] = (counters["stats"]["unique_graphs"], time.perf_counter() - start)
    seconds = measure(runners, args, args.repeats)
    for name in runners:
        if name.startswith("ours compiled"):
            samples[name] = runners[name]()
    print(f"\nend to end (median of {args.repeats})")
    for name, timing in seconds.items():
        line = f"  {name:<24}: {timing['wall']:8.2f} s wall {timing['cpu']:8.2f} s CPU"
        line += f" {args.batch / timing['wall']:7.3f} img/s"
        if name in graphs:
            line += f"  (first run, compile included: {graphs[name][1]:.1f} s; {graphs[name][0]} graph(s))"
        print(line)
    print(f"  transformer rows per run: ours {rows}" + (f", upstream {upstream_rows}" if net is not None else ""))
    if forward_ceiling is not None:
        print(f"  ceiling with everything but GEMM + attention free: {forward_ceiling * upstream_rows / rows:.2f}x")
    for name in runners:
        if name.startswith("ours compiled"):
            print("  " + ratio_line(f"{name} vs ours eager", seconds["ours"], seconds[name]))
    if net is not None:
        for name in runners:
            if name != "upstream":
                print("  " + ratio_line(f"{name} vs upstream eager", seconds["upstream"], seconds[name]))
        for name in samples:
            if name != "upstream":
                difference = (samples[name] - samples["upstream"]).abs().max().item()
                print(f"  max |{name} - upstream| of the samples: {difference:.2e}")
    for name in samples:
        if name.startswith("ours compiled"):
            print(f"  max |{name} - ours eager|: {(samples[name] - samples['ours']).abs().max().item():.2e}")
    print(f"load average after: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
