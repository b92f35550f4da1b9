"""Tiny real components shared by the tests (real classes at tiny sizes; nothing is mocked)."""

import tokenizers
import torch
from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3Model

from pixelgen_diffusers import PixelGenC2IPipeline, PixelGenScheduler, PixelGenTransformer2DModel
from pixelgen_diffusers.models.transformer_jit_t2i import PixelGenT2ITransformer2DModel
from pixelgen_diffusers.pipelines.pipeline_pixelgen_t2i import PixelGenT2IPipeline


# Tolerances that follow from float32 arithmetic (eps = 1.2e-7), so the suite holds on any x86 CPU:
# - One forward against an independent formula: the two sum in different orders, so each output differs by a few ulps
#   of the reductions behind it (hidden sizes <= 64 here); 1e-5 absolute and relative is ~20 ulps at |x| = 4.
# - Two sampling runs that differ only in how the work is laid out (batch shape, the guided halves split into two
#   calls, buffers re-read from a saved folder): the GEMM kernels and their summation orders differ with the shapes and
#   the alignment, each forward moves by a few ulps and the solver carries that over its steps. Measured 1.8e-6 to
#   6.3e-6 on AVX2 and AVX-512 CPUs; the bound is the package's parity bar with upstream, 1e-4, which is still far
#   below what any real change moves (a skipped block or a wrong step moves samples by > 1e-2).
FORWARD_TOLERANCE = dict(rtol=1e-5, atol=1e-5)
LAYOUT_TOLERANCE = dict(rtol=0.0, atol=1e-4)


TINY_C2I = dict(
    sample_size=32,
    patch_size=8,
    hidden_size=32,
    depth=2,
    num_heads=2,
    num_classes=10,
    in_context_len=4,
    in_context_start=1,
)
TINY_ID2LABEL = {i: f"shape {i}, synonym {i}" for i in range(10)} | {3: "golden retriever, retriever"}


def tiny_transformer(seed: int = 0, bottleneck_dim: int | None = None, randomize: bool = True, **overrides):
    """A 2-block class-to-image transformer. With `randomize`, zero-initialised adaLN/output layers get random
    weights too, so that every path of the network affects the output."""
    torch.manual_seed(seed)
    model = PixelGenTransformer2DModel(**{**TINY_C2I, "bottleneck_dim": bottleneck_dim, **overrides})
    if randomize:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(torch.randn_like(parameter) * 0.2)
    return model.eval()


def tiny_c2i_pipeline(sampling_method: str = "heun", timeshift: float = 2.0, **pipeline_config):
    transformer = tiny_transformer()
    scheduler = PixelGenScheduler(sampling_method=sampling_method, timeshift=timeshift)
    pipe = PixelGenC2IPipeline(transformer, scheduler, id2label=TINY_ID2LABEL, **pipeline_config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------------------------
# Text-to-image (PixelGenT2ITransformer2DModel, PixelGenT2IPipeline, tiny Qwen3 encoder and byte-level tokenizer)
# ---------------------------------------------------------------------------------------------------------------------

# 4x4 patch grid, 8 text tokens; txt_embed_dim 24 > the tiny Qwen width 16, so encoding zero-pads the features.
TINY_T2I = dict(
    sample_size=32,
    patch_size=8,
    hidden_size=32,
    depth=2,
    num_heads=2,
    num_text_blocks=2,
    txt_embed_dim=24,
    txt_max_length=8,
    bottleneck_dim=16,
)


def tiny_t2i_transformer(seed: int = 0, randomize: bool = True, **overrides):
    """A 2+2-block text-to-image transformer; with `randomize`, every parameter gets random weights."""
    torch.manual_seed(seed)
    model = PixelGenT2ITransformer2DModel(**{**TINY_T2I, **overrides})
    if randomize:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(torch.randn_like(parameter) * 0.2)
    return model.eval()


def tiny_qwen3(seed: int = 0):
    """A 2-layer Qwen3Model over the 257-token byte vocabulary of `tiny_qwen_tokenizer`."""
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=257,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=64,
    )
    return Qwen3Model(config).eval()


def tiny_qwen_tokenizer():
    """Byte-level BPE without merges (one token per byte) plus "<|endoftext|>" as the pad token, built offline."""
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab = {character: index for index, character in enumerate(alphabet)} | {"<|endoftext|>": len(alphabet)}
    return Qwen2Tokenizer(vocab=vocab, merges=[])


def tiny_t2i_pipeline(
    sampling_method: str = "adam_lm", timeshift: float = 3.0, with_text_encoder: bool = True, **pipeline_config
):
    transformer = tiny_t2i_transformer(**pipeline_config.pop("transformer_overrides", {}))
    scheduler = PixelGenScheduler(sampling_method=sampling_method, timeshift=timeshift, solver_order=2)
    text_encoder, tokenizer = (tiny_qwen3(), tiny_qwen_tokenizer()) if with_text_encoder else (None, None)
    pipe = PixelGenT2IPipeline(transformer, scheduler, text_encoder, tokenizer, **pipeline_config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------------------------
# Conversion: tiny checkpoints in the upstream formats (PixelGen Lightning .ckpt, JiT .pth), keys and shapes exactly as
# upstream JiT.py / JiT_T2I.py name them (reference sections 2.4, 2.5 and 3.4)
# ---------------------------------------------------------------------------------------------------------------------

# The upstream YAML arguments (`model.denoiser.init_args`) of TINY_C2I.
TINY_UPSTREAM_C2I = dict(
    input_size=32, patch_size=8, hidden_size=32, depth=2, num_heads=2, num_classes=10, in_context_len=4,
    in_context_start=1,
)  # fmt: skip


def upstream_c2i_state_dict(
    seed: int = 0,
    input_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    depth: int = 2,
    num_heads: int = 2,
    num_classes: int = 10,
    in_context_len: int = 4,
    bottleneck_dim: int | None = None,
    mlp_ratio: float = 4.0,
    device: str = "cpu",
    **unused,
) -> dict[str, torch.Tensor]:
    """An upstream `JiT` state dict (no prefix) with random values; `device="meta"` gives shapes only."""
    generator = torch.Generator().manual_seed(seed)

    def tensor(*shape):
        if device == "meta":
            return torch.empty(shape, device="meta")
        return torch.randn(shape, generator=generator) * 0.2

    hidden, head_dim, grid = hidden_size, hidden_size // num_heads, input_size // patch_size
    ffn = int(int(hidden * mlp_ratio) * 2 / 3)
    state_dict = {
        "pos_embed": tensor(1, grid * grid, hidden),
        "t_embedder.mlp.0.weight": tensor(hidden, 256),
        "t_embedder.mlp.0.bias": tensor(hidden),
        "t_embedder.mlp.2.weight": tensor(hidden, hidden),
        "t_embedder.mlp.2.bias": tensor(hidden),
        "y_embedder.embedding_table.weight": tensor(num_classes + 1, hidden),
    }
    if in_context_len:
        state_dict["in_context_posemb"] = tensor(1, in_context_len, hidden)
    if bottleneck_dim is None:
        state_dict["x_embedder.proj1.weight"] = tensor(hidden, 3, patch_size, patch_size)
        state_dict["x_embedder.proj1.bias"] = tensor(hidden)
    else:
        state_dict["x_embedder.proj1.weight"] = tensor(bottleneck_dim, 3, patch_size, patch_size)
        state_dict["x_embedder.proj2.weight"] = tensor(hidden, bottleneck_dim, 1, 1)
        state_dict["x_embedder.proj2.bias"] = tensor(hidden)
    for n in range(depth):
        state_dict |= {
            f"blocks.{n}.norm1.weight": tensor(hidden),
            f"blocks.{n}.attn.q_norm.weight": tensor(head_dim),
            f"blocks.{n}.attn.k_norm.weight": tensor(head_dim),
            f"blocks.{n}.attn.qkv.weight": tensor(3 * hidden, hidden),
            f"blocks.{n}.attn.qkv.bias": tensor(3 * hidden),
            f"blocks.{n}.attn.proj.weight": tensor(hidden, hidden),
            f"blocks.{n}.attn.proj.bias": tensor(hidden),
            f"blocks.{n}.norm2.weight": tensor(hidden),
            f"blocks.{n}.mlp.w12.weight": tensor(2 * ffn, hidden),
            f"blocks.{n}.mlp.w12.bias": tensor(2 * ffn),
            f"blocks.{n}.mlp.w3.weight": tensor(hidden, ffn),
            f"blocks.{n}.mlp.w3.bias": tensor(hidden),
            f"blocks.{n}.adaLN_modulation.1.weight": tensor(6 * hidden, hidden),
            f"blocks.{n}.adaLN_modulation.1.bias": tensor(6 * hidden),
        }
    state_dict |= {
        "final_layer.norm_final.weight": tensor(hidden),
        "final_layer.linear.weight": tensor(patch_size * patch_size * 3, hidden),
        "final_layer.linear.bias": tensor(patch_size * patch_size * 3),
        "final_layer.adaLN_modulation.1.weight": tensor(2 * hidden, hidden),
        "final_layer.adaLN_modulation.1.bias": tensor(2 * hidden),
    }
    return state_dict


def upstream_lightning_checkpoint(ema: dict, online: dict, hidden_size: int = 32) -> dict:
    """A PixelGen Lightning checkpoint: `LightningModel.state_dict()` (EMA, online and the REPA projector
    H -> H -> H -> 768) under `state_dict`, plus Lightning's bookkeeping entries."""
    generator = torch.Generator().manual_seed(123)
    projector = {}
    for index, (fan_out, fan_in) in zip(
        (0, 2, 4), ((hidden_size, hidden_size), (hidden_size, hidden_size), (768, hidden_size))
    ):
        projector[f"diffusion_trainer.proj.0.{index}.weight"] = torch.randn(fan_out, fan_in, generator=generator)
        projector[f"diffusion_trainer.proj.0.{index}.bias"] = torch.randn(fan_out, generator=generator)
    state_dict = {f"denoiser.{k}": v for k, v in online.items()} | {f"ema_denoiser.{k}": v for k, v in ema.items()}
    return {
        "epoch": 79,
        "global_step": 400000,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": state_dict | projector,
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 79}}}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "weight_decay": 0.0}]}],
        "lr_schedulers": [],
    }


def upstream_jit_checkpoint(online: dict, ema1: dict, ema2: dict, args=None) -> dict:
    """An original JiT `checkpoint-*.pth`: three weight copies with the `net.` prefix, optimizer state and epoch;
    `args` (an argparse.Namespace, as JiT saves it) makes the file need pickle."""
    checkpoint = {
        "model": {f"net.{k}": v for k, v in online.items()},
        "model_ema1": {f"net.{k}": v for k, v in ema1.items()},
        "model_ema2": {f"net.{k}": v for k, v in ema2.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 5e-5}]},
        "epoch": 599,
    }
    if args is not None:
        checkpoint["args"] = args
    return checkpoint


def upstream_c2i_yaml(
    path,
    sampler: str = "HeunSamplerJiT",
    sampler_args: str = "exact_henu: true\n      num_steps: 3\n      guidance: 2.25\n      timeshift: 2.0\n"
    "      guidance_interval_min: 0.1\n      guidance_interval_max: 0.9",
    noise_scale: float = 1.0,
    **init_args,
):
    """A config in the layout of upstream `configs_c2i/*.yaml` (anchors included) for a tiny model."""
    arguments = {**TINY_UPSTREAM_C2I, "in_channels": 3, "mlp_ratio": 4.0, "attn_drop": 0.0, "proj_drop": 0.0}
    arguments |= init_args
    if arguments.get("bottleneck_dim") is None:
        arguments.pop("bottleneck_dim", None)
        arguments["use_bottleneck"] = False
    lines = "\n".join(
        f"      {key}: &hidden_dim {value}"
        if key == "hidden_size"
        else f"      {key}: {str(value).lower() if isinstance(value, bool) else value}"
        for key, value in arguments.items()
    )
    text = f"""# lightning.pytorch==2.4.0
seed_everything: true
model:
  vae:
    class_path: src.models.autoencoder.pixel.PixelAE
    init_args:
       scale: 1.0
  denoiser:
    class_path: src.models.transformer.JiT.JiT
    init_args:
{lines}
  conditioner:
    class_path: src.models.conditioner.class_label.LabelConditioner
    init_args:
      num_classes: {arguments["num_classes"]}
  diffusion_trainer:
    class_path: src.diffusion.flow_matching.training_repa_JiT_LPIPS_DINO_NoiseGating.REPATrainer
    init_args:
      proj_denoiser_dim: *hidden_dim
      proj_hidden_dim: *hidden_dim
      proj_encoder_dim: 768
      scheduler: &scheduler src.diffusion.flow_matching.scheduling.LinearScheduler
  diffusion_sampler:
    class_path: src.diffusion.flow_matching.{"adam_sampling" if sampler.startswith("AdamLM") else "sampling"}.{sampler}
    init_args:
      {sampler_args}
      scheduler: *scheduler
      guidance_fn: src.diffusion.base.guidance.simple_guidance_fn
data:
  pred_dataset:
    class_path: src.data.dataset.randn.ClassLabelRandomNDataset
    init_args:
      num_classes: {arguments["num_classes"]}
      max_num_instances: 50000
      noise_scale: {noise_scale}
      latent_shape:
        - 3
        - {arguments["input_size"]}
        - {arguments["input_size"]}
"""
    path.write_text(text)
    return path


def reference_c2i_name(upstream_key: str) -> str:
    """The diffusers name of an upstream JiT tensor, spelled out here independently of the converter's table."""
    renames = [
        ("in_context_posemb", "in_context_pos_embed"),
        ("t_embedder.mlp.0.", "time_embedder.linear_1."),
        ("t_embedder.mlp.2.", "time_embedder.linear_2."),
        ("y_embedder.embedding_table.", "class_embedder."),
        ("x_embedder.proj1.", "patch_embedder.proj_in."),
        ("x_embedder.proj2.", "patch_embedder.proj_out."),
        ("final_layer.norm_final.", "final_layer.norm."),
        ("final_layer.linear.", "final_layer.proj_out."),
        ("final_layer.adaLN_modulation.1.", "final_layer.adaln_modulation."),
        (".attn.qkv.", ".attn.to_qkv."),
        (".attn.q_norm.", ".attn.norm_q."),
        (".attn.k_norm.", ".attn.norm_k."),
        (".attn.proj.", ".attn.to_out."),
        (".mlp.w12.", ".ff.proj_in."),
        (".mlp.w3.", ".ff.proj_out."),
        (".adaLN_modulation.1.", ".adaln_modulation."),
    ]
    name = "transformer_" + upstream_key if upstream_key.startswith("blocks.") else upstream_key
    for old, new in renames:
        name = name.replace(old, new)
    return name


def reference_c2i_transformer(upstream: dict, bottleneck_dim: int | None = None, **overrides):
    """The float32 reference model: TINY_C2I built directly, weights loaded by `reference_c2i_name`."""
    model = PixelGenTransformer2DModel(**{**TINY_C2I, "bottleneck_dim": bottleneck_dim, **overrides})
    model.load_state_dict({reference_c2i_name(key): value for key, value in upstream.items()}, strict=True)
    return model.eval()


# A process in which `import pixelgen_diffusers` fails, so a model folder must load with plain diffusers.
BLOCK_PACKAGE = """
import importlib.abc, sys
class _BlockPixelGen(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pixelgen_diffusers":
            raise ImportError("pixelgen_diffusers is blocked in this process")
sys.meta_path.insert(0, _BlockPixelGen())
try:
    import pixelgen_diffusers
    raise SystemExit("pixelgen_diffusers is importable; the blocker failed")
except ImportError:
    pass
"""


def run_python(code: str, *args, cwd, block_package: bool = True, timeout: float = 300):
    """Runs `code` in a fresh interpreter (remote-code modules cached under `cwd`); fails the test on an error."""
    import os
    import subprocess
    import sys
    import textwrap

    env = {
        **os.environ,
        "HF_MODULES_CACHE": str(cwd / "hf_modules"),
        "HF_HUB_OFFLINE": "1",
        "DIFFUSERS_VERBOSITY": "error",
        "TRANSFORMERS_VERBOSITY": "error",
    }
    source = (BLOCK_PACKAGE if block_package else "") + textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, "-c", source, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


# The upstream YAML arguments (`model.denoiser.init_args` of configs_t2i/*.yaml) of TINY_T2I.
TINY_UPSTREAM_T2I = dict(
    patch_size=8, input_size=32, in_channels=3, hidden_size=32, num_blocks=2, num_groups=2, txt_embed_dim=24,
    txt_max_length=8, bottleneck_dim=16, num_text_blocks=2,
)  # fmt: skip


def upstream_t2i_state_dict(seed: int = 0, **overrides) -> dict[str, torch.Tensor]:
    """An upstream `JiT_T2I` state dict (no prefix, keys and shapes as reference section 3.4) with random values."""
    arguments = {**TINY_UPSTREAM_T2I, **overrides}
    generator = torch.Generator().manual_seed(seed)

    def tensor(*shape):
        return torch.randn(shape, generator=generator) * 0.2

    hidden, head_dim = arguments["hidden_size"], arguments["hidden_size"] // arguments["num_groups"]
    patch_dim = arguments["in_channels"] * arguments["patch_size"] ** 2
    tokens = (arguments["input_size"] // arguments["patch_size"]) ** 2
    state_dict = {
        "pos_embed": tensor(1, tokens, hidden),
        "y_pos_embedding": tensor(1, arguments["txt_max_length"], hidden),
        "x_embedder.proj1.weight": tensor(arguments["bottleneck_dim"], patch_dim),
        "x_embedder.proj2.weight": tensor(hidden, arguments["bottleneck_dim"]),
        "x_embedder.proj2.bias": tensor(hidden),
        "t_embedder.mlp.0.weight": tensor(hidden, 256),
        "t_embedder.mlp.0.bias": tensor(hidden),
        "t_embedder.mlp.2.weight": tensor(hidden, hidden),
        "t_embedder.mlp.2.bias": tensor(hidden),
        "y_embedder.proj.weight": tensor(hidden, arguments["txt_embed_dim"]),
        "y_embedder.proj.bias": tensor(hidden),
        "y_embedder.norm.weight": tensor(hidden),
    }
    for n in range(arguments["num_blocks"]):
        state_dict |= {
            f"blocks.{n}.norm1.weight": tensor(hidden),
            f"blocks.{n}.attn.qkv_x.weight": tensor(3 * hidden, hidden),
            f"blocks.{n}.attn.kv_y.weight": tensor(2 * hidden, hidden),
            f"blocks.{n}.attn.q_norm.weight": tensor(head_dim),
            f"blocks.{n}.attn.k_norm.weight": tensor(head_dim),
            f"blocks.{n}.attn.proj.weight": tensor(hidden, hidden),
            f"blocks.{n}.attn.proj.bias": tensor(hidden),
            f"blocks.{n}.norm2.weight": tensor(hidden),
            f"blocks.{n}.mlp.w12.weight": tensor(8 * hidden, hidden),
            f"blocks.{n}.mlp.w3.weight": tensor(hidden, 4 * hidden),
            f"blocks.{n}.adaLN_modulation.0.weight": tensor(6 * hidden, hidden),
            f"blocks.{n}.adaLN_modulation.0.bias": tensor(6 * hidden),
        }
    for n in range(arguments["num_text_blocks"]):
        state_dict |= {
            f"text_refine_blocks.{n}.norm1.weight": tensor(hidden),
            f"text_refine_blocks.{n}.attn.qkv.weight": tensor(3 * hidden, hidden),
            f"text_refine_blocks.{n}.attn.q_norm.weight": tensor(head_dim),
            f"text_refine_blocks.{n}.attn.k_norm.weight": tensor(head_dim),
            f"text_refine_blocks.{n}.attn.proj.weight": tensor(hidden, hidden),
            f"text_refine_blocks.{n}.attn.proj.bias": tensor(hidden),
            f"text_refine_blocks.{n}.norm2.weight": tensor(hidden),
            f"text_refine_blocks.{n}.mlp.w12.weight": tensor(8 * hidden, hidden),
            f"text_refine_blocks.{n}.mlp.w3.weight": tensor(hidden, 4 * hidden),
            f"text_refine_blocks.{n}.adaLN_modulation.0.weight": tensor(6 * hidden, hidden),
            f"text_refine_blocks.{n}.adaLN_modulation.0.bias": tensor(6 * hidden),
        }
    state_dict |= {
        "final_layer.linear.weight": tensor(patch_dim, hidden),
        "final_layer.linear.bias": tensor(patch_dim),
    }
    return state_dict


def reference_t2i_name(upstream_key: str) -> str:
    """The diffusers name of an upstream JiT_T2I tensor, spelled out independently of the converter's table."""
    renames = [
        ("y_pos_embedding", "text_pos_embed"),
        ("x_embedder.proj1.", "patch_embedder.proj_in."),
        ("x_embedder.proj2.", "patch_embedder.proj_out."),
        ("t_embedder.mlp.0.", "time_embedder.linear_1."),
        ("t_embedder.mlp.2.", "time_embedder.linear_2."),
        ("y_embedder.", "text_embedder."),
        ("text_refine_blocks.", "text_refiner_blocks."),
        (".attn.qkv_x.", ".attn.to_qkv."),
        (".attn.qkv.", ".attn.to_qkv."),
        (".attn.kv_y.", ".attn.to_added_kv."),
        (".attn.q_norm.", ".attn.norm_q."),
        (".attn.k_norm.", ".attn.norm_k."),
        (".attn.proj.", ".attn.to_out."),
        (".mlp.w12.", ".ff.proj_in."),
        (".mlp.w3.", ".ff.proj_out."),
        (".adaLN_modulation.0.", ".adaln_modulation."),
        ("final_layer.linear.", "final_layer.proj_out."),
    ]
    name = "transformer_" + upstream_key if upstream_key.startswith("blocks.") else upstream_key
    for old, new in renames:
        name = name.replace(old, new)
    return name


def upstream_t2i_yaml(path, num_steps: int = 3, text_encoder: str = "Qwen/Qwen3-1.7B", **init_args):
    """A config in the layout of upstream `configs_t2i/sft_res512.yaml` for a tiny model."""
    arguments = {**TINY_UPSTREAM_T2I, **init_args}
    lines = "\n".join(f"      {key}: {value}" for key, value in arguments.items())
    text = f"""# lightning.pytorch==2.4.0
seed_everything: true
tags:
  exp: &exp sftpix512ema
model:
  vae:
    class_path: src.models.autoencoder.pixel.PixelAE
  denoiser:
    class_path: src.models.transformer.JiT_T2I.JiT_T2I
    init_args:
{lines}
  conditioner:
    class_path: src.models.conditioner.qwen3_text_encoder.Qwen3TextEncoder
    init_args:
      weight_path: {text_encoder}
      embed_dim: &txt_embed_dim {arguments["txt_embed_dim"]}
      max_length: {arguments["txt_max_length"]}
  diffusion_sampler:
    class_path: src.diffusion.flow_matching.adam_sampling.AdamLMSamplerJiT
    init_args:
      num_steps: {num_steps}
      guidance: 4.0
      timeshift: 3.0 # 3.0 for geneval
      order: 2
      scheduler: src.diffusion.flow_matching.scheduling.LinearScheduler
      guidance_fn: src.diffusion.base.guidance.simple_guidance_fn
"""
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Training: tiny perceptual backbones (a random DINOv2 and a random VGG-style LPIPS trunk) and a tiny image folder
# ---------------------------------------------------------------------------------------------------------------------

TINY_TRAIN_MODEL = dict(patch_size=8, hidden_size=32, depth=3, num_heads=2, in_context_len=4, in_context_start=1)


def tiny_dino(seed: int = 0):
    """A 2-layer transformers Dinov2Model (width 16, patch 2) with random weights."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        patch_size=2,
        image_size=8,
    )
    return Dinov2Model(config).eval()


def tiny_lpips(seed: int = 0):
    """An LPIPS module on a VGG-16-shaped trunk 4-8 channels wide, with random trunk and (non-negative) head."""
    from pixelgen_diffusers.training import LPIPS

    torch.manual_seed(seed)
    model = LPIPS(channels=(4, 4, 8, 8, 8))
    with torch.no_grad():
        for lin in model.lins:
            lin.weight.abs_()
    return model.eval()


def write_tiny_image_folder(root, num_classes: int = 2, per_class: int = 4, size: int = 40, seed: int = 0):
    """`root/class_<k>/<i>.png` of random RGB noise images, `size` x `size`."""
    import numpy as np
    import PIL.Image

    rng = np.random.default_rng(seed)
    for class_id in range(num_classes):
        folder = root / f"class_{class_id}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            PIL.Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


# Captioned images for text-to-image training: solid colours, so a tiny model learns the caption -> colour map fast.
TINY_CAPTION_COLOURS = {"a red square": (220, 30, 30), "a blue square": (30, 30, 220)}
TINY_T2I_TRAIN_MODEL = dict(
    patch_size=8, hidden_size=32, depth=2, num_heads=2, num_text_blocks=1, txt_embed_dim=24, txt_max_length=8,
    bottleneck_dim=16,
)  # fmt: skip


def write_tiny_caption_folder(root, layout: str = "metadata", per_caption: int = 4, size: int = 36, seed: int = 0):
    """Solid-colour images with a little noise, captioned by `TINY_CAPTION_COLOURS`; `layout` is "metadata" (a
    metadata.jsonl with `file_name` and `text`) or "txt" (one caption file beside each image)."""
    import json

    import numpy as np
    import PIL.Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for caption_index, (caption, colour) in enumerate(TINY_CAPTION_COLOURS.items()):
        for index in range(per_caption):
            pixels = np.clip(np.array(colour) + rng.integers(-20, 21, size=(size, size, 3)), 0, 255).astype(np.uint8)
            name = f"{caption_index}_{index}.png"
            PIL.Image.fromarray(pixels).save(root / name)
            if layout == "txt":
                (root / name).with_suffix(".txt").write_text(caption + "\n")
            rows.append({"file_name": name, "text": caption})
    if layout == "metadata":
        (root / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root
