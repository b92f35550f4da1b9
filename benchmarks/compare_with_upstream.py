"""Faithfulness against upstream's own code: our transformers and pipelines vs upstream's `JiT`, `JiT_T2I`,
`HeunSamplerJiT`, `EulerSamplerJiT` and `AdamLMSamplerJiT`, loaded from a local checkout of Zehong-Ma/PixelGen (nothing
of it ships here; it needs `einops`). Float32, CPU, random weights converted with the package's own key maps, the same
noise; prints the max abs difference of every forward and sample (the README's parity table).

    OMP_NUM_THREADS=1 python benchmarks/compare_with_upstream.py --upstream-repo /path/to/PixelGen
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

from pixelgen_diffusers import (
    PixelGenC2IPipeline,
    PixelGenScheduler,
    PixelGenT2IPipeline,
)
from pixelgen_diffusers.conversion.architecture import build_transformer
from pixelgen_diffusers.conversion.keys import C2I, T2I


C2I_CONFIG = dict(input_size=64, patch_size=8, hidden_size=64, depth=4, num_heads=2, num_classes=10, in_context_len=8,
                  in_context_start=1)  # fmt: skip
T2I_CONFIG = dict(input_size=64, patch_size=8, in_channels=3, hidden_size=64, num_blocks=3, num_groups=2,
                  num_text_blocks=2, txt_embed_dim=48, txt_max_length=16, bottleneck_dim=32)  # fmt: skip
BATCH = 4


def load_upstream(repo: Path):
    """Upstream's modules from the checkout, with its `@torch.compile` decorators and `.cuda()` calls disabled."""
    sys.path.insert(0, str(repo))
    torch.compile = lambda fn=None, *args, **kwargs: fn if fn is not None else (lambda f: f)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self

    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, repo / path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    from src.diffusion.base.guidance import simple_guidance_fn
    from src.diffusion.flow_matching.adam_sampling import AdamLMSamplerJiT
    from src.diffusion.flow_matching.sampling import EulerSamplerJiT, HeunSamplerJiT
    from src.diffusion.flow_matching.scheduling import LinearScheduler

    samplers = {"heun": HeunSamplerJiT, "euler": EulerSamplerJiT, "adam_lm": AdamLMSamplerJiT}
    jit = load("upstream_jit", "src/models/transformer/JiT.py")
    jit_t2i = load("upstream_jit_t2i", "src/models/transformer/JiT_T2I.py")
    return jit, jit_t2i, samplers, LinearScheduler, simple_guidance_fn


def randomized(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere (upstream zero-initialises the adaLN and output layers), fixed tables kept."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if name != "pos_embed":
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return net.eval()


def ours_from(kind, net, config: dict):
    state_dict = {kind.key_map.to_diffusers(key): value for key, value in net.state_dict().items()}
    return build_transformer(kind, config, state_dict)


def upstream_sample(samplers, scheduler_class, guidance_fn, net_fn, noise, condition, uncondition, recipe):
    extra = {"exact_henu": True} if recipe["solver"] == "heun" else {}
    if recipe["solver"] == "adam_lm":
        extra = {"order": recipe.get("order", 2)}
    sampler = samplers[recipe["solver"]](
        scheduler=scheduler_class(), guidance_fn=guidance_fn, num_steps=recipe["steps"], guidance=recipe["cfg"],
        guidance_interval_min=recipe["interval"][0], guidance_interval_max=recipe["interval"][1],
        timeshift=recipe["shift"], **extra,
    )  # fmt: skip
    with torch.no_grad():
        return sampler(net_fn, noise, condition, uncondition)


def ours_sample(pipe, condition: dict, noise, recipe):
    return pipe(
        **condition, latents=noise, num_inference_steps=recipe["steps"], guidance_scale=recipe["cfg"],
        guidance_interval_min=recipe["interval"][0], guidance_interval_max=recipe["interval"][1],
        sampling_method=recipe["solver"], timeshift=recipe["shift"], solver_order=recipe.get("order"),
        output_type="latent",
    ).images  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream-repo", required=True, help="local checkout of Zehong-Ma/PixelGen")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    jit, jit_t2i, samplers, scheduler_class, guidance_fn = load_upstream(Path(args.upstream_repo))
    rows = []

    # Class-to-image: both patch embeddings for the forward, the plain one (PixelGen-XL's) for sampling.
    generator = torch.Generator().manual_seed(0)
    size = C2I_CONFIG["input_size"]
    x, t = torch.randn(BATCH, 3, size, size, generator=generator), torch.rand(BATCH, generator=generator)
    y = torch.tensor([0, 3, 7, C2I_CONFIG["num_classes"]])
    for bottleneck_dim in (None, 16):
        bottleneck = {"use_bottleneck": bottleneck_dim is not None, "bottleneck_dim": bottleneck_dim or 0}
        net = randomized(jit.JiT(**C2I_CONFIG, **bottleneck), seed=1)
        config = dict(sample_size=size, patch_size=8, hidden_size=64, depth=4, num_heads=2, num_classes=10,
                      in_context_len=8, in_context_start=1, bottleneck_dim=bottleneck_dim)  # fmt: skip
        ours = ours_from(C2I, net, config)
        embedding = "plain" if bottleneck_dim is None else "bottleneck"
        rows.append((f"c2i forward ({embedding} embedding)", (ours(x, t, y).sample - net(x, t, y)).abs().max()))
    net = randomized(jit.JiT(**C2I_CONFIG, use_bottleneck=False, bottleneck_dim=0), seed=1)
    ours = ours_from(C2I, net, dict(config, bottleneck_dim=None))
    pipe = PixelGenC2IPipeline(ours, PixelGenScheduler())
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn(BATCH, 3, size, size, generator=generator)
    labels = [0, 3, 7, 9]
    condition = torch.tensor(labels)
    uncondition = torch.full_like(condition, C2I_CONFIG["num_classes"])
    c2i_recipes = {
        "c2i Heun 50, CFG 2.25 on (0.1, 0.9], s = 2 (the XL recipe)": dict(solver="heun", steps=50, cfg=2.25),
        "c2i Euler 50": dict(solver="euler", steps=50, cfg=2.25),
        "c2i Euler 7": dict(solver="euler", steps=7, cfg=2.25),
        **{
            f"c2i Adams-Bashforth 25, CFG 4, order {order}": dict(solver="adam_lm", steps=25, cfg=4.0, order=order)
            for order in (1, 2, 3, 4)
        },
    }
    magnitude = 0.0
    for label, recipe in c2i_recipes.items():
        recipe = {"interval": (0.1, 0.9), "shift": 2.0, **recipe}
        expected = upstream_sample(samplers, scheduler_class, guidance_fn, net, noise, condition, uncondition, recipe)
        actual = ours_sample(pipe, {"class_labels": labels}, noise, recipe)
        magnitude = max(magnitude, expected.abs().max().item())
        rows.append((label, (actual - expected).abs().max()))

    # Text-to-image: random text features stand in for Qwen3's (the encoder is not what is compared here).
    net = randomized(jit_t2i.JiT_T2I(**T2I_CONFIG), seed=2)
    config = dict(sample_size=64, patch_size=8, in_channels=3, hidden_size=64, depth=3, num_heads=2, num_text_blocks=2,
                  txt_embed_dim=48, txt_max_length=16, bottleneck_dim=32)  # fmt: skip
    ours = ours_from(T2I, net, config)
    text = torch.randn(BATCH, 16, 48, generator=generator)
    negative = torch.randn(BATCH, 16, 48, generator=generator)
    rows.append(("t2i forward", (ours(x, t, text).sample - net(x, t, text)).abs().max()))
    pipe = PixelGenT2IPipeline(ours, PixelGenScheduler(), None, None)
    pipe.set_progress_bar_config(disable=True)
    t2i_recipes = {
        "t2i Adams-Bashforth 25, CFG 4, order 2, s = 3 (the T2I recipe)": dict(solver="adam_lm", steps=25, order=2),
        "t2i Euler 20": dict(solver="euler", steps=20),
        "t2i Heun 10": dict(solver="heun", steps=10),
    }
    for label, recipe in t2i_recipes.items():
        recipe = {"cfg": 4.0, "interval": (0.0, 1.0), "shift": 3.0, **recipe}
        expected = upstream_sample(samplers, scheduler_class, guidance_fn, net, noise, text, negative, recipe)
        prompts = {"prompt_embeds": text, "negative_prompt_embeds": negative, "noise_scale": 1.0}
        actual = ours_sample(pipe, prompts, noise, recipe)
        magnitude = max(magnitude, expected.abs().max().item())
        rows.append((label, (actual - expected).abs().max()))

    print("| check | max abs difference |\n|---|---|")
    for label, difference in rows:
        print(f"| {label} | {difference.item():.1e} |")
    print(f"\nsamples of magnitude up to {magnitude:.1f}")


if __name__ == "__main__":
    main()
