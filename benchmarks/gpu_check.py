"""One-shot GPU check of PixelGen sampling speed at the real shapes, with random weights (nothing is downloaded).

Cases (H100 targets in brackets):
  * xl: PixelGen-XL/16 at 256 px, bf16, batch 64, Heun 50 with CFG 2.25 on (0.1, 0.9], timeshift 2: eager,
    regional compile (`compile_repeated_blocks`) and whole-model compile [>= 12 images/s];
  * xl-batch1: the same recipe at batch 1, whole model compiled with CUDA graphs (`mode="reduce-overhead"`, static
    shapes) [<= 0.25 s per image];
  * xxl-t2i: PixelGen-XXL/16-T2I at 512 px, bf16, batch 16, Adams-Bashforth 2 with 25 steps, CFG 4, timeshift 3
    (random prompt embeddings in place of Qwen3's), eager and regional compile [>= 4 images/s];
  * student: the 4-step student shape (`pixelgen distill`): XL, batch 64 and batch 1, Euler 4, no guidance pass.
Each reports images/s, seconds per run, transformer rows run, peak memory, and MFU: the FLOPs of the rows run
(counted with torch's FlopCounterMode on one forward) over the time and the card's dense bf16 peak (`--peak-tflops`,
known for H100/H200). `--upstream-repo DIR` (a checkout of Zehong-Ma/PixelGen) adds upstream's own eager sampler on
the XL case, through benchmarks/benchmark_sampling.py. Cases run in order and are skipped once `--budget` seconds
are spent, so the whole check ends within 8 minutes.

    python benchmarks/gpu_check.py --json gpu_check.json
    python benchmarks/gpu_check.py --tiny --json tiny.json     # the same code paths on CPU in seconds (a test)
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from pixelgen_diffusers import PixelGenC2IPipeline, PixelGenScheduler, PixelGenTransformer2DModel
from pixelgen_diffusers.models.transformer_jit_t2i import PixelGenT2ITransformer2DModel
from pixelgen_diffusers.pipelines.pipeline_pixelgen_t2i import PixelGenT2IPipeline
from pixelgen_diffusers.utils import atomic_write_json


# Dense bf16 tensor-core peaks (NVIDIA data sheets, SXM parts), TFLOP/s.
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
XXL_T2I = dict(sample_size=512, patch_size=16, hidden_size=1536, depth=16, num_heads=24, num_text_blocks=4,
               txt_embed_dim=2048, txt_max_length=128, bottleneck_dim=256)  # fmt: skip
TINY_C2I = dict(sample_size=32, patch_size=8, hidden_size=64, depth=2, num_heads=2, in_context_len=4,
                in_context_start=1)  # fmt: skip
TINY_T2I = dict(sample_size=32, patch_size=8, hidden_size=64, depth=2, num_heads=2, num_text_blocks=1,
                txt_embed_dim=16, txt_max_length=8, bottleneck_dim=16)  # fmt: skip
TARGETS = {"xl images_per_s": 12.0, "xl-batch1 seconds_per_image": 0.25, "xxl-t2i images_per_s": 4.0}


def randomized(transformer, device, dtype):
    """Random, non-degenerate weights (zero-initialised layers would make the prediction trivial)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in transformer.parameters():
            parameter.normal_(0, 0.02)
    return transformer.to(device, dtype).eval()


def compiled(transformer, mode: str | None, tiny: bool):
    """A compiled copy: `blocks` (regional), `model` (whole), `graphs` (whole, CUDA graphs). `tiny` traces with
    the eager backend, so the CPU run exercises dynamo on the same code in seconds."""
    if mode is None:
        return transformer
    transformer = copy.deepcopy(transformer)  # regional compile works in place, on the blocks
    options = {"backend": "eager"} if tiny else {}
    if mode == "graphs":
        transformer.compile(fullgraph=True, dynamic=False, **(options or {"mode": "reduce-overhead"}))
    elif mode == "model":
        transformer.compile(fullgraph=True, **options)
    else:
        transformer.compile_repeated_blocks(fullgraph=True, **options)
    return transformer


def flops_per_row(transformer, inputs) -> float:
    """FLOPs of one transformer row, counted on a forward of `inputs`."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        transformer(*inputs)
    return counter.get_total_flops() / len(inputs[0])


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_runs(run, device, repeats: int) -> dict:
    """A warm-up run (compiles), then the best of `repeats` timed runs; peak memory over the timed runs."""
    start = time.perf_counter()
    run()
    synchronize(device)
    warmup = time.perf_counter() - start
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.device(device).type == "cuda" else None
    return {"seconds": best, "warmup_seconds": warmup, "peak_memory_gib": peak}


def measure(name, pipeline, call, batch, device, repeats, peak_tflops, row_flops) -> dict:
    """Times `pipeline(**call)`, counts the transformer rows it runs, and derives images/s and MFU."""
    rows = []
    predict = pipeline.predict_clean_image  # counted here: a hook on a compiled model would be traced into it

    def counted(latents, t, condition, negative_condition, *args):
        rows.append(len(latents) * (1 if negative_condition is None else 2))
        return predict(latents, t, condition, negative_condition, *args)

    pipeline.predict_clean_image = counted
    with torch.no_grad():
        result = time_runs(lambda: pipeline(**call, output_type="latent"), device, repeats)
    rows_per_run = sum(rows) // (repeats + 1)
    result.update(rows_per_run=rows_per_run, images_per_s=batch / result["seconds"])
    result["seconds_per_image"] = result["seconds"] / batch
    result["tflops_per_s"] = rows_per_run * row_flops / result["seconds"] / 1e12
    result["mfu"] = result["tflops_per_s"] / peak_tflops if peak_tflops else None
    mfu = f", MFU {result['mfu']:.1%}" if result["mfu"] is not None else ""
    memory = f", peak {result['peak_memory_gib']:.1f} GiB" if result["peak_memory_gib"] is not None else ""
    print(f"{name:<26} {result['images_per_s']:8.2f} img/s {result['seconds']:8.3f} s/run"
          f" {rows_per_run:6d} rows{mfu}{memory} (warm-up {result['warmup_seconds']:.1f} s)", flush=True)  # fmt: skip
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU, float32, eager-backend compile")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds; later cases are skipped past it")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per case (best)")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: known cards)")
    parser.add_argument("--upstream-repo", help="a checkout of Zehong-Ma/PixelGen: also time upstream's sampler")
    args = parser.parse_args(argv)
    device = args.device or ("cpu" if args.tiny else "cuda")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; use --tiny for the CPU run")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    card = torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu"
    peak = args.peak_tflops or next((value for key, value in PEAK_TFLOPS.items() if key in card), None)
    if not args.tiny:
        torch.backends.cuda.matmul.allow_tf32 = True
    start_time = time.perf_counter()
    batch, batch_t2i = (2, 2) if args.tiny else (64, 16)
    heun_steps, adams_steps = (3, 3) if args.tiny else (50, 25)
    results = {"device": card, "torch": torch.__version__, "dtype": str(dtype), "tiny": args.tiny, "cases": {}}
    results["peak_tflops"] = peak

    def over_budget(name):
        if time.perf_counter() - start_time > args.budget:
            results["cases"][name] = {"skipped": f"time budget of {args.budget:.0f} s spent"}
            print(f"{name:<26} skipped (budget)", flush=True)
            return True
        return False

    # ----------------------------------------------------------------------------------- PixelGen-XL/16, C2I
    if args.tiny:
        xl = PixelGenTransformer2DModel(**TINY_C2I, num_classes=10)
    else:
        xl = PixelGenTransformer2DModel.from_preset("PixelGen-XL/16", sample_size=256)
    xl = randomized(xl, device, dtype)
    size = xl.config.sample_size
    row_flops = flops_per_row(xl, (torch.randn(2, 3, size, size, device=device, dtype=dtype),
                                   torch.rand(2, device=device), torch.tensor([1, 2], device=device)))  # fmt: skip
    results["xl_gflops_per_row"] = row_flops / 1e9

    def xl_pipeline(transformer, method="heun", steps=heun_steps, guidance=2.25):
        scheduler = PixelGenScheduler(sampling_method=method, timeshift=2.0)
        pipeline = PixelGenC2IPipeline(transformer, scheduler, num_inference_steps=steps, guidance_scale=guidance,
                                       guidance_interval_min=0.1, guidance_interval_max=0.9)  # fmt: skip
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def xl_call(rows):
        noise = torch.randn(rows, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        return dict(class_labels=[i % 10 for i in range(rows)], latents=noise)

    for mode in (None, "blocks", "model"):
        name = f"xl {mode or 'eager'}"
        if not over_budget(name):
            pipeline = xl_pipeline(compiled(xl, mode, args.tiny))
            results["cases"][name] = measure(name, pipeline, xl_call(batch), batch, device, args.repeats, peak,
                                             row_flops)  # fmt: skip
    if args.upstream_repo and not over_budget("xl upstream eager"):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from benchmark_sampling import upstream_runner

        options = argparse.Namespace(upstream_repo=args.upstream_repo, device=device, dtype=str(dtype).split(".")[1],
                                     sampler="heun", steps=heun_steps, guidance_scale=2.25)  # fmt: skip
        call = xl_call(batch)
        net, run = upstream_runner(xl_pipeline(xl), options, call["latents"], call["class_labels"])
        timing = time_runs(run, device, args.repeats)
        timing["images_per_s"] = batch / timing["seconds"]
        results["cases"]["xl upstream eager"] = timing
        print(f"{'xl upstream eager':<26} {timing['images_per_s']:8.2f} img/s {timing['seconds']:8.3f} s/run")
    if not over_budget("xl-batch1 cuda-graphs"):
        pipeline = xl_pipeline(compiled(xl, "graphs", args.tiny))
        results["cases"]["xl-batch1 cuda-graphs"] = measure("xl-batch1 cuda-graphs", pipeline, xl_call(1), 1, device,
                                                            max(args.repeats, 3), peak, row_flops)  # fmt: skip

    # --------------------------------------------------------------------------- the 4-step student shape
    for name, mode, rows in (("student eager", None, batch), ("student blocks", "blocks", batch),
                             ("student-batch1 cuda-graphs", "graphs", 1)):  # fmt: skip
        if not over_budget(name):
            pipeline = xl_pipeline(compiled(xl, mode, args.tiny), method="euler", steps=4, guidance=1.0)
            results["cases"][name] = measure(name, pipeline, xl_call(rows), rows, device, max(args.repeats, 3), peak,
                                             row_flops)  # fmt: skip
    del xl

    # ------------------------------------------------------------------------------ PixelGen-XXL/16-T2I
    if not over_budget("xxl-t2i eager"):
        xxl = randomized(PixelGenT2ITransformer2DModel(**(TINY_T2I if args.tiny else XXL_T2I)), device, dtype)
        config = xxl.config
        size = config.sample_size
        generator = torch.Generator().manual_seed(0)
        embeds = torch.randn(batch_t2i, config.txt_max_length, config.txt_embed_dim, generator=generator)
        call = dict(prompt_embeds=embeds.to(device, dtype), negative_prompt_embeds=torch.zeros_like(embeds[:1]).to(
            device, dtype), latents=torch.randn(batch_t2i, 3, size, size, generator=generator).to(device))  # fmt: skip
        xxl_row_flops = flops_per_row(xxl, (call["latents"][:2].to(dtype), torch.rand(2, device=device),
                                            call["prompt_embeds"][:2]))  # fmt: skip
        results["xxl_gflops_per_row"] = xxl_row_flops / 1e9
        for mode in (None, "blocks"):
            name = f"xxl-t2i {mode or 'eager'}"
            if over_budget(name):
                continue
            scheduler = PixelGenScheduler(sampling_method="adam_lm", timeshift=3.0, solver_order=2)
            pipeline = PixelGenT2IPipeline(compiled(xxl, mode, args.tiny), scheduler, num_inference_steps=adams_steps,
                                           guidance_scale=4.0, text_encoder_id=None)  # fmt: skip
            pipeline.set_progress_bar_config(disable=True)
            results["cases"][name] = measure(name, pipeline, call, batch_t2i, device, args.repeats, peak,
                                             xxl_row_flops)  # fmt: skip

    cases = results["cases"]
    best_xl = max((cases[n].get("images_per_s", 0) for n in ("xl eager", "xl blocks", "xl model") if n in cases),
                  default=None)  # fmt: skip
    results["against_targets"] = {
        "xl images_per_s": best_xl,
        "xl-batch1 seconds_per_image": cases.get("xl-batch1 cuda-graphs", {}).get("seconds_per_image"),
        "xxl-t2i images_per_s": max(
            (cases[n].get("images_per_s", 0) for n in ("xxl-t2i eager", "xxl-t2i blocks") if n in cases), default=None
        ),  # fmt: skip
        "targets": TARGETS,
    }
    results["total_seconds"] = time.perf_counter() - start_time
    print(f"total {results['total_seconds']:.0f} s on {card}", flush=True)
    if args.json:
        atomic_write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
