"""Text-to-image: PixelGenT2ITransformer2DModel against formulas, PixelGenT2IPipeline against a reference sampler."""

import io
import math

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from components import (
    FORWARD_TOLERANCE,
    TINY_T2I,
    tiny_qwen3,
    tiny_qwen_tokenizer,
    tiny_t2i_pipeline,
    tiny_t2i_transformer,
)
from diffusers.models.attention_dispatch import attention_backend
from transformers import AutoTokenizer, Qwen3Model

from pixelgen_diffusers.models.transformer_jit_t2i import PixelGenT2IRotaryPosEmbed, PixelGenT2ITransformer2DModel
from pixelgen_diffusers.pipelines.pipeline_pixelgen_t2i import PixelGenT2IPipeline


BATCH = 2
TEXT_SHAPE = (TINY_T2I["txt_max_length"], TINY_T2I["txt_embed_dim"])
IMAGE_SHAPE = (3, TINY_T2I["sample_size"], TINY_T2I["sample_size"])


def random_inputs(batch: int = BATCH, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, *IMAGE_SHAPE, generator=generator)
    timestep = torch.rand(batch, generator=generator)
    text = torch.randn(batch, *TEXT_SHAPE, generator=generator)
    return pixels, timestep, text


# ------------------------------------------------------------------------------------------ independent reference
def reference_sincos_table(width: int, grid: int) -> torch.Tensor:
    """Token h * grid + w: [sin(w w_k), cos(w w_k)] then [sin(h w_k), cos(h w_k)], w_k = 10000^(-k / (width / 4))."""
    quarter = width // 4
    table = torch.zeros(grid * grid, width, dtype=torch.float64)
    omega = torch.tensor([10000.0 ** (-k / quarter) for k in range(quarter)], dtype=torch.float64)
    for h in range(grid):
        for w in range(grid):
            table[h * grid + w] = torch.cat(
                [(w * omega).sin(), (w * omega).cos(), (h * omega).sin(), (h * omega).cos()]
            )
    return table.float()


def reference_rope_angles(head_dim: int, grid: int) -> torch.Tensor:
    """(grid**2, head_dim / 2): pair j turns by column (even j) or row (odd j) times 10000^(-4 (j // 2) / head_dim),
    positions spaced grid / (grid - 1) apart."""
    step = grid / (grid - 1)
    angles = torch.zeros(grid * grid, head_dim // 2)
    for h in range(grid):
        for w in range(grid):
            for j in range(head_dim // 2):
                position = (w if j % 2 == 0 else h) * step
                angles[h * grid + w, j] = position * 10000.0 ** (-4 * (j // 2) / head_dim)
    return angles


def reference_forward(model, pixels, timestep, text):
    """The T2I forward pass written from the architecture description, in float32, with its own patchify, RoPE
    (complex numbers), attention (explicit softmax) and unpatchify."""
    config = model.config
    weights = {name: tensor.detach().float() for name, tensor in model.state_dict().items()}
    batch, channels, size, _ = pixels.shape
    patch, width, heads = config.patch_size, config.hidden_size, config.num_heads
    grid, head_dim = size // patch, config.hidden_size // config.num_heads

    def linear(x, name):
        out = x @ weights[f"{name}.weight"].T
        return out + weights[f"{name}.bias"] if f"{name}.bias" in weights else out

    def rms_norm(x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weights[f"{name}.weight"]

    def heads_first(x):  # (B, N, width) -> (B, heads, N, head_dim)
        return x.reshape(batch, x.shape[1], heads, head_dim).transpose(1, 2)

    rotation = torch.polar(torch.ones(grid * grid, head_dim // 2), reference_rope_angles(head_dim, grid))

    def rope(x):
        pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], head_dim // 2, 2).contiguous())
        return torch.view_as_real(pairs * rotation).flatten(-2)

    def attention(query, key, value):
        scores = (query @ key.transpose(-1, -2)) / math.sqrt(head_dim)
        out = scores.softmax(-1) @ value
        return out.transpose(1, 2).reshape(batch, -1, width)

    def swiglu(x, name):
        gate, up = linear(x, f"{name}.proj_in").chunk(2, dim=-1)
        return linear(F.silu(gate) * up, f"{name}.proj_out")

    # Condition: 256 sinusoid features [cos, sin] with period 10, an MLP, then SiLU.
    frequencies = torch.exp(-math.log(10.0) * torch.arange(128, dtype=torch.float32) / 128)
    angles = timestep[:, None].float() * frequencies[None]
    time_features = torch.cat([angles.cos(), angles.sin()], dim=-1)
    condition = F.silu(linear(F.silu(linear(time_features, "time_embedder.linear_1")), "time_embedder.linear_2"))

    def modulation(name):
        return [chunk[:, None] for chunk in linear(condition, f"{name}.adaln_modulation").chunk(6, dim=-1)]

    # Text: projection, RMSNorm, learned positions, then refiner blocks (plain self-attention).
    text_tokens = rms_norm(linear(text, "text_embedder.proj"), "text_embedder.norm") + weights["text_pos_embed"]
    for index in range(config.num_text_blocks):
        name = f"text_refiner_blocks.{index}"
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation(name)
        hidden = rms_norm(text_tokens, f"{name}.norm1") * (1 + scale1) + shift1
        query, key, value = (heads_first(x) for x in linear(hidden, f"{name}.attn.to_qkv").chunk(3, dim=-1))
        query, key = rms_norm(query, f"{name}.attn.norm_q"), rms_norm(key, f"{name}.attn.norm_k")
        text_tokens = text_tokens + gate1 * linear(attention(query, key, value), f"{name}.attn.to_out")
        hidden = rms_norm(text_tokens, f"{name}.norm2") * (1 + scale2) + shift2
        text_tokens = text_tokens + gate2 * swiglu(hidden, f"{name}.ff")

    # Image: patches with features in (channel, row, column) order, bottleneck embedding, sin-cos positions.
    patches = pixels.reshape(batch, channels, grid, patch, grid, patch).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(batch, grid * grid, channels * patch * patch)
    tokens = linear(linear(patches, "patch_embedder.proj_in"), "patch_embedder.proj_out")
    tokens = tokens + reference_sincos_table(width, grid)
    for index in range(config.depth):
        name = f"transformer_blocks.{index}"
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation(name)
        hidden = rms_norm(tokens, f"{name}.norm1") * (1 + scale1) + shift1
        query, key, value = (heads_first(x) for x in linear(hidden, f"{name}.attn.to_qkv").chunk(3, dim=-1))
        query = rope(rms_norm(query, f"{name}.attn.norm_q"))
        key = rope(rms_norm(key, f"{name}.attn.norm_k"))
        text_key, text_value = (heads_first(x) for x in linear(text_tokens, f"{name}.attn.to_added_kv").chunk(2, -1))
        text_key = rms_norm(text_key, f"{name}.attn.norm_k")
        attended = attention(query, torch.cat([key, text_key], dim=2), torch.cat([value, text_value], dim=2))
        tokens = tokens + gate1 * linear(attended, f"{name}.attn.to_out")
        hidden = rms_norm(tokens, f"{name}.norm2") * (1 + scale2) + shift2
        tokens = tokens + gate2 * swiglu(hidden, f"{name}.ff")

    normed = (tokens - tokens.mean(-1, keepdim=True)) / torch.sqrt(tokens.var(-1, unbiased=False, keepdim=True) + 1e-6)
    out = linear(normed, "final_layer.proj_out")
    out = out.reshape(batch, grid, grid, channels, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return out.reshape(batch, channels, size, size)


# ------------------------------------------------------------------------------------------------- transformer
def test_transformer_predicts_an_image_of_the_input_shape():
    model = tiny_t2i_transformer()
    pixels, timestep, text = random_inputs()
    with torch.no_grad():
        output = model(pixels, timestep, text)
        scalar_time = model(pixels[:1], timestep[0], text[:1], return_dict=False)[0]
    assert output.sample.shape == pixels.shape
    torch.testing.assert_close(scalar_time, output.sample[:1], atol=1e-5, rtol=1e-5)


def test_default_config_is_pixelgen_xxl_with_upstream_parameter_count_and_keys():
    with torch.device("meta"):
        model = PixelGenT2ITransformer2DModel()
    state_dict = model.state_dict()
    assert len(state_dict) == 250
    assert sum(tensor.numel() for tensor in state_dict.values()) == 1_123_312_384
    assert sum(parameter.numel() for parameter in model.parameters()) == 1_121_739_520  # pos_embed is a buffer
    shapes = {name: tuple(tensor.shape) for name, tensor in state_dict.items()}
    assert shapes["pos_embed"] == (1, 1024, 1536) and shapes["text_pos_embed"] == (1, 128, 1536)
    assert shapes["patch_embedder.proj_in.weight"] == (256, 768) and "patch_embedder.proj_in.bias" not in shapes
    assert shapes["transformer_blocks.15.attn.to_added_kv.weight"] == (3072, 1536)
    assert shapes["transformer_blocks.0.ff.proj_out.weight"] == (1536, 6144)  # F = 4 x hidden, no 2/3 factor
    assert shapes["text_refiner_blocks.3.adaln_modulation.weight"] == (9216, 1536)
    assert shapes["final_layer.proj_out.weight"] == (768, 1536) and "final_layer.norm.weight" not in shapes


def test_capability_lists_name_the_real_block_classes():
    model = tiny_t2i_transformer(randomize=False)
    class_names = {type(module).__name__ for module in model.modules()}
    assert set(model._repeated_blocks) <= class_names and set(model._no_split_modules) <= class_names
    assert {"PixelGenT2ITransformerBlock", "PixelGenT2ITextRefinerBlock"} <= set(model._repeated_blocks)


def test_rope_angles_match_the_upstream_spot_check():
    table = PixelGenT2IRotaryPosEmbed(64)(32, torch.device("cpu"))
    assert table.shape == (1024, 32, 2) and table.dtype == torch.float32
    cos, sin = table.unbind(-1)
    angles = torch.atan2(sin, cos)
    torch.testing.assert_close(angles[1, 0:4], torch.tensor([1.0323, 0.0, 0.5805, 0.0]), atol=1e-4, rtol=0)
    expected = reference_rope_angles(64, 32)  # angles up to ~32: compare cos and sin
    torch.testing.assert_close(cos, expected.cos(), atol=1e-5, rtol=0)
    torch.testing.assert_close(sin, expected.sin(), atol=1e-5, rtol=0)


def test_patchify_and_unpatchify_use_channel_row_column_order():
    model = tiny_t2i_transformer()
    pixels, timestep, text = random_inputs(batch=1)
    patch, grid = TINY_T2I["patch_size"], TINY_T2I["sample_size"] // TINY_T2I["patch_size"]
    captured = {}
    known_patches = torch.randn(1, grid * grid, 3 * patch * patch)
    model.patch_embedder.register_forward_pre_hook(lambda module, args: captured.setdefault("patches", args[0]))
    model.final_layer.register_forward_hook(lambda module, args, output: known_patches)
    with torch.no_grad():
        output = model(pixels, timestep, text).sample
    for h, w, c, i, j in [(0, 0, 0, 0, 1), (0, 1, 0, 0, 0), (1, 0, 2, 3, 5), (3, 2, 1, 7, 6), (2, 3, 2, 1, 0)]:
        token, feature = h * grid + w, c * patch * patch + i * patch + j
        assert captured["patches"][0, token, feature] == pixels[0, c, h * patch + i, w * patch + j]
        assert output[0, c, h * patch + i, w * patch + j] == known_patches[0, token, feature]


def test_forward_matches_an_independent_float32_reference():
    model = tiny_t2i_transformer()
    pixels, timestep, text = random_inputs()
    assert torch.equal(model.pos_embed[0], reference_sincos_table(TINY_T2I["hidden_size"], 4))
    with torch.no_grad():
        expected = reference_forward(model, pixels, timestep, text)
        output = model(pixels, timestep, text).sample
    assert expected.abs().max() > 1.0  # the random weights make every path matter
    torch.testing.assert_close(output, expected, **FORWARD_TOLERANCE)


def test_bfloat16_forward_is_close_to_float32_and_keeps_a_float32_rope_table():
    model = tiny_t2i_transformer()
    pixels, timestep, text = random_inputs()
    with torch.no_grad():
        reference = model(pixels, timestep, text).sample
        low_precision = model.to(torch.bfloat16)(pixels.bfloat16(), timestep, text.bfloat16()).sample
    assert low_precision.dtype == torch.bfloat16 and torch.isfinite(low_precision).all()
    assert (low_precision.float() - reference).abs().mean() < 0.02 * reference.abs().mean()
    assert model.rotary_emb(pixels.device).dtype == torch.float32
    assert not any("rotary" in name for name in model.state_dict())


def test_lora_adapter_on_the_changed_modules_trains_with_gradient_checkpointing():
    pytest.importorskip("peft")
    from peft import LoraConfig

    model = tiny_t2i_transformer()
    targets = ["to_qkv", "to_added_kv", "to_out", "ff.proj_in", "ff.proj_out", "adaln_modulation"]
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False))
    model.enable_gradient_checkpointing()
    pixels, timestep, text = random_inputs()
    model(pixels, timestep, text).sample.square().mean().backward()
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora" in name for name in trainable)
    assert all(model.get_parameter(name).grad.abs().sum() > 0 for name in trainable)


def test_wrong_resolution_or_text_shape_is_rejected():
    model = tiny_t2i_transformer(randomize=False)
    pixels, timestep, text = random_inputs()
    with pytest.raises(ValueError, match="64x64"):
        model(torch.zeros(BATCH, 3, 64, 64), timestep, text)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model(pixels, timestep, text[:, :-1])


def counting(function, calls: list):
    def wrapper(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    return wrapper


def test_gradient_checkpointing_recomputes_blocks_and_gives_equal_gradients():
    pixels, timestep, text = random_inputs()
    gradients, block_calls = [], []
    for checkpointing in (False, True):
        model = tiny_t2i_transformer()
        calls = []
        for block in [*model.transformer_blocks, *model.text_refiner_blocks]:
            block.forward = counting(block.forward, calls)  # hooks do not fire on recomputation; forward does
        if checkpointing:
            model.enable_gradient_checkpointing()
        model(pixels, timestep, text).sample.square().mean().backward()
        gradients.append({name: parameter.grad for name, parameter in model.named_parameters()})
        block_calls.append(len(calls))
    assert block_calls == [4, 8]  # each block runs again in the backward pass
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, msg=name)


def test_save_and_load_round_trip(tmp_path):
    model = tiny_t2i_transformer()
    model.save_pretrained(tmp_path)
    loaded = PixelGenT2ITransformer2DModel.from_pretrained(tmp_path).eval()
    architecture = {key: value for key, value in model.config.items() if not key.startswith("_")}
    assert {key: loaded.config[key] for key in architecture} == architecture
    assert set(loaded.state_dict()) == set(model.state_dict())  # pos_embed saved as a persistent buffer
    assert torch.equal(loaded.pos_embed, model.pos_embed)
    pixels, timestep, text = random_inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels, timestep, text).sample, model(pixels, timestep, text).sample)


def test_native_and_math_attention_backends_agree():
    model = tiny_t2i_transformer()
    pixels, timestep, text = random_inputs()
    outputs = []
    for backend in ("native", "_native_math"):
        with attention_backend(backend), torch.no_grad():
            outputs.append(model(pixels, timestep, text).sample)
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- pipeline
def reference_sample(transformer, noise, prompt_embeds, negative_embeds, steps, timeshift, method, scale):
    """PixelGen's samplers written out: shifted grid, x-prediction -> velocity (0.05 clamp), the doubled
    [uncond, cond] batch at every step with guidance weight 1 outside (0, 1), then Euler or Adams-Bashforth 2."""
    u = torch.tensor([i / steps for i in range(steps)] + [1.0])
    grid = u / (u + timeshift * (1 - u))
    x, previous_velocity = noise.clone(), None
    for i in range(steps):
        t, step = grid[i], grid[i + 1] - grid[i]
        rows = torch.cat([x, x])
        with torch.no_grad():
            x_hat = transformer(rows, t.repeat(len(rows)), torch.cat([negative_embeds, prompt_embeds])).sample
        velocity_uncond, velocity_cond = ((x_hat - rows) / (1 - t).clamp_min(0.05)).chunk(2)
        weight = scale if 0.0 < t < 1.0 else 1.0
        velocity = velocity_uncond + weight * (velocity_cond - velocity_uncond)
        if method == "adam_lm" and previous_velocity is not None:
            # AB2 on the variable grid, accumulated as upstream does: sum_j c_j v_j, then times the step.
            ratio = step / (grid[i] - grid[i - 1])
            effective_velocity = torch.zeros_like(velocity)
            effective_velocity += -ratio / 2 * previous_velocity
            effective_velocity += (1 + ratio / 2) * velocity
            x = x + effective_velocity * step
        else:
            x = x + velocity * step
        previous_velocity = velocity
    return x


def random_embeds(batch: int = BATCH, seed: int = 2):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *TEXT_SHAPE, generator=generator), torch.randn(1, *TEXT_SHAPE, generator=generator)


def count_rows(pipe) -> list[int]:
    rows = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    return rows


@pytest.mark.parametrize("method", ["adam_lm", "euler"])
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_pipeline_matches_reference_sampler(method, guidance_scale):
    pipe = tiny_t2i_pipeline(sampling_method=method, with_text_encoder=False)
    prompt_embeds, negative_embeds = random_embeds()
    noise = torch.randn(BATCH, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(3))
    images = pipe(
        prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative_embeds,
        latents=noise,
        num_inference_steps=5,
        guidance_scale=guidance_scale,
        output_type="latent",
    ).images
    expected = reference_sample(
        pipe.transformer, noise, prompt_embeds, negative_embeds.expand(BATCH, -1, -1), 5, 3.0, method, guidance_scale
    )
    # Per step the two differ by float32 rounding only (~2e-7: batch size, coefficient order); the random network
    # and the guidance weight amplify that to ~1e-5 after 5 steps. Formula errors show up at >= 1e-2.
    torch.testing.assert_close(images, expected, atol=1e-4, rtol=1e-5)


def test_recommended_settings_guide_every_step_but_the_first_with_minimal_rows():
    pipe = tiny_t2i_pipeline(with_text_encoder=False)
    assert (pipe.config.num_inference_steps, pipe.config.guidance_scale) == (25, 4.0)
    prompt_embeds, negative_embeds = random_embeds()
    rows = count_rows(pipe)
    pipe(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds, output_type="latent")
    assert rows == [BATCH] + [2 * BATCH] * 24  # t = 0 is not > 0: step 0 only evaluates the conditional half
    rows.clear()
    pipe(prompt_embeds=prompt_embeds, num_inference_steps=4, guidance_scale=1.0, output_type="latent")
    assert rows == [BATCH] * 4


def test_guidance_interval_selects_the_guided_evaluations():
    pipe = tiny_t2i_pipeline(with_text_encoder=False)
    prompt_embeds, negative_embeds = random_embeds()
    rows = count_rows(pipe)
    pipe(
        prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative_embeds,
        num_inference_steps=5,
        guidance_interval_min=0.2,
        guidance_interval_max=0.6,
        output_type="latent",
    )
    grid = [u / (u + 3.0 * (1 - u)) for u in (0.0, 0.2, 0.4, 0.6, 0.8)]  # 0, 0.077, 0.18, 0.33, 0.57
    assert rows == [2 * BATCH if 0.2 < t < 0.6 else BATCH for t in grid] == [2, 2, 2, 4, 4]


def test_encode_prompt_follows_upstream_recipe():
    pipe = tiny_t2i_pipeline()
    prompts = ["a cube", "a very long prompt that is truncated"]
    prompt_embeds, negative_embeds = pipe.encode_prompt(prompts, num_images_per_prompt=2)
    assert prompt_embeds.shape == negative_embeds.shape == (4, *TEXT_SHAPE)

    tokens = pipe.tokenizer(prompts, max_length=8, padding="max_length", truncation=True, return_tensors="pt")
    assert tokens.attention_mask[0, -1] == 0 and tokens.attention_mask[1].all()  # right padding; truncation
    with torch.no_grad():
        hidden = pipe.text_encoder(**tokens).last_hidden_state
        empty = pipe.text_encoder(**pipe.tokenizer([""], max_length=8, padding="max_length", return_tensors="pt"))
    expected = torch.cat([hidden, torch.zeros(2, 8, 8)], dim=-1).repeat_interleave(2, dim=0)
    # every position, padding included; zero-padded features; rounded to bfloat16 as upstream's conditioner does
    assert prompt_embeds.dtype == negative_embeds.dtype == torch.bfloat16
    torch.testing.assert_close(prompt_embeds, expected.bfloat16())
    assert prompt_embeds[0, -1, :16].abs().sum() > 0
    torch.testing.assert_close(negative_embeds, F.pad(empty.last_hidden_state, (0, 8)).expand(4, -1, -1).bfloat16())

    narrow = tiny_t2i_pipeline(transformer_overrides={"txt_embed_dim": 12})
    narrow_embeds, no_negative = narrow.encode_prompt(prompts, do_classifier_free_guidance=False)
    assert no_negative is None
    torch.testing.assert_close(narrow_embeds, hidden[..., :12].bfloat16())  # features cut to txt_embed_dim


def test_default_negative_prompt_is_never_stale_after_the_encoder_changes_in_place():
    pipe = tiny_t2i_pipeline()
    common = dict(num_inference_steps=3, output_type="pt", guidance_scale=3.0)
    pipe("a cat", generator=torch.Generator().manual_seed(0), **common)  # encodes the default "" once
    with torch.no_grad():
        for parameter in pipe.text_encoder.parameters():
            parameter.mul_(1.5)  # as a fine-tuning step or a fused LoRA would, in place
    default = pipe("a cat", generator=torch.Generator().manual_seed(0), **common).images
    explicit = pipe("a cat", negative_prompt="", generator=torch.Generator().manual_seed(0), **common).images
    assert torch.equal(default, explicit)


def test_prompt_gives_the_same_images_as_embeddings_from_encode_prompt():
    pipe = tiny_t2i_pipeline()
    prompts = ["a red cube", "two dogs"]
    common = dict(num_inference_steps=3, output_type="pt", num_images_per_prompt=2)
    from_text = pipe(prompt=prompts, negative_prompt="ugly", generator=torch.Generator().manual_seed(0), **common)
    prompt_embeds, negative_embeds = pipe.encode_prompt(prompts, negative_prompt="ugly")
    assert negative_embeds.shape[0] == 2
    from_embeds = pipe(
        prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative_embeds,
        generator=torch.Generator().manual_seed(0),
        **common,
    )
    assert from_text.images.shape == (4, *IMAGE_SHAPE)
    assert torch.equal(from_text.images, from_embeds.images)
    assert not torch.equal(from_text.images[0], from_text.images[2])  # the prompts do matter


def test_single_negative_embedding_is_repeated_over_the_batch():
    pipe = tiny_t2i_pipeline(with_text_encoder=False)
    prompt_embeds, negative_embeds = random_embeds()
    outputs = [
        pipe(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative,
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        ).images
        for negative in (negative_embeds, negative_embeds.repeat(BATCH, 1, 1))
    ]
    assert torch.equal(outputs[0], outputs[1])


def test_generator_list_gives_each_image_its_own_noise():
    pipe = tiny_t2i_pipeline(with_text_encoder=False)
    prompt_embeds, negative_embeds = random_embeds()
    common = dict(negative_prompt_embeds=negative_embeds, num_inference_steps=3, output_type="latent")
    batch = pipe(prompt_embeds=prompt_embeds, generator=[torch.Generator().manual_seed(s) for s in (5, 6)], **common)
    single = pipe(prompt_embeds=prompt_embeds[1:], generator=torch.Generator().manual_seed(6), **common)
    torch.testing.assert_close(batch.images[1:], single.images, atol=1e-4, rtol=1e-4)  # batch-size rounding
    assert (batch.images[0] - batch.images[1]).abs().max() > 0.1


def test_output_types_callbacks_and_progress_bar():
    pipe = tiny_t2i_pipeline(sampling_method="heun", with_text_encoder=False)
    prompt_embeds, negative_embeds = random_embeds()
    common = dict(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds, num_inference_steps=3)
    raw = pipe(generator=torch.Generator().manual_seed(0), output_type="latent", **common).images
    pil = pipe(generator=torch.Generator().manual_seed(0), output_type="pil", **common).images
    array = pipe(generator=torch.Generator().manual_seed(0), output_type="np", return_dict=False, **common)[0]
    assert isinstance(pil[0], PIL.Image.Image) and pil[0].size == (32, 32)
    expected_uint8 = ((raw + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(np.asarray(pil[1]), expected_uint8[1])
    np.testing.assert_allclose(array, ((raw + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy())

    seen = []

    def callback(pipeline, i, t, callback_kwargs):
        seen.append((i, float(t), callback_kwargs["prompt_embeds"].shape))
        return {"latents": torch.zeros_like(callback_kwargs["latents"])}

    progress = io.StringIO()
    pipe.set_progress_bar_config(file=progress, disable=False)
    zeros = pipe(
        output_type="latent",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
        **common,
    ).images
    assert torch.equal(zeros, torch.zeros_like(zeros))
    assert [i for i, _, _ in seen] == [0, 1, 2, 3, 4]  # Heun: 2N - 1 evaluations ...
    assert "3/3" in progress.getvalue()  # ... but the bar counts the N steps

    # The guided clean-image prediction: Heun's final evaluation is an Euler step to exactly that image.
    predictions = []

    def record(pipeline, i, t, callback_kwargs):
        predictions.append(callback_kwargs["pred_original_sample"])
        return {}

    watch = dict(callback_on_step_end=record, callback_on_step_end_tensor_inputs=["pred_original_sample"])
    pipe(output_type="latent", generator=torch.Generator().manual_seed(0), **watch, **common)
    assert len(predictions) == 5
    torch.testing.assert_close(predictions[-1], raw, atol=1e-5, rtol=0)


BAD_INPUTS = [
    (dict(prompt=[]), "prompt"),
    (dict(prompt=["a cat", 3]), "prompt"),
    (dict(), "neither"),
    (dict(prompt="a cat", prompt_embeds=torch.zeros(1, *TEXT_SHAPE)), "both"),
    (dict(prompt_embeds=torch.zeros(1, 8, 23)), "prompt_embeds"),
    (dict(prompt_embeds=torch.zeros(1, 7, 24)), "prompt_embeds"),
    (dict(prompt="a cat", negative_prompt_embeds=torch.zeros(1, 8, 16)), "negative_prompt_embeds"),
    (dict(prompt=["a", "b"], negative_prompt_embeds=torch.zeros(3, *TEXT_SHAPE)), "negative_prompt_embeds"),
    (dict(prompt="a", negative_prompt="b", negative_prompt_embeds=torch.zeros(1, *TEXT_SHAPE)), "negative_prompt"),
    (dict(prompt=["a", "b"], negative_prompt=["c", "d", "e"]), "negative_prompt"),
    (dict(prompt="a cat", height=64), "height"),
    (dict(prompt="a cat", width=16), "width must equal the model.s sample_size"),
    (dict(prompt=["a", "b"], generator=[torch.Generator()]), "generator"),
    (dict(prompt="a cat", latents=torch.zeros(2, *IMAGE_SHAPE)), "latents"),
    (dict(prompt="a cat", num_inference_steps=0), "num_inference_steps"),
    (dict(prompt="a cat", num_images_per_prompt=0), "num_images_per_prompt"),
    (dict(prompt="a cat", output_type="jpeg"), "output_type"),
    (dict(prompt="a cat", callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["x"]), "callback"),
]


@pytest.mark.parametrize("kwargs, match", BAD_INPUTS, ids=[match for _, match in BAD_INPUTS])
def test_bad_input_raises_a_clear_value_error(kwargs, match):
    pipe = tiny_t2i_pipeline()
    with pytest.raises(ValueError, match=match):
        pipe(num_inference_steps=kwargs.pop("num_inference_steps", 2), **kwargs)


def test_missing_text_encoder_that_cannot_be_loaded_raises(tmp_path):
    pipe = tiny_t2i_pipeline(with_text_encoder=False, text_encoder_id=str(tmp_path / "no-such-encoder"))
    prompt_embeds, _ = random_embeds()
    with pytest.raises(ValueError, match="no-such-encoder"):
        pipe(prompt="a cat", num_inference_steps=2)
    with pytest.raises(ValueError, match="text encoder"):  # guidance needs the "" negative prompt encoded
        pipe(prompt_embeds=prompt_embeds, num_inference_steps=2)
    pipe(prompt_embeds=prompt_embeds, num_inference_steps=2, guidance_scale=1.0, output_type="latent")  # no text
    pipe.register_modules(tokenizer=tiny_qwen_tokenizer())
    with pytest.raises(ValueError, match="no text_encoder"):
        pipe(prompt="a cat", num_inference_steps=2)


def test_text_encoder_is_loaded_on_the_first_text_prompt(tmp_path):
    tiny_qwen3().save_pretrained(tmp_path / "qwen")
    tiny_qwen_tokenizer().save_pretrained(tmp_path / "qwen")
    common = dict(prompt="a cat", num_inference_steps=2, output_type="pt")
    lazy = tiny_t2i_pipeline(with_text_encoder=False, text_encoder_id=str(tmp_path / "qwen"))
    images = lazy(generator=torch.Generator().manual_seed(0), **common).images
    assert isinstance(lazy.text_encoder, Qwen3Model) and lazy.text_encoder.dtype == torch.bfloat16  # as upstream
    assert lazy.tokenizer is not None and lazy.config.text_encoder[1] == "Qwen3Model"

    explicit = tiny_t2i_pipeline(with_text_encoder=False)
    explicit.register_modules(
        text_encoder=Qwen3Model.from_pretrained(tmp_path / "qwen", dtype=torch.bfloat16).eval(),
        tokenizer=AutoTokenizer.from_pretrained(tmp_path / "qwen"),
    )
    assert torch.equal(images, explicit(generator=torch.Generator().manual_seed(0), **common).images)


def test_model_cpu_offload_gives_the_same_images():
    pipe = tiny_t2i_pipeline()
    common = dict(prompt="a cat", num_inference_steps=2, output_type="latent")
    expected = pipe(generator=torch.Generator().manual_seed(0), **common).images
    pipe.enable_model_cpu_offload(device="cpu")
    images = pipe(generator=torch.Generator().manual_seed(0), **common).images
    torch.testing.assert_close(images, expected)


def test_pipeline_save_and_load_keeps_components_and_recommended_settings(tmp_path):
    pipe = tiny_t2i_pipeline(guidance_scale=5.0)
    pipe.save_pretrained(tmp_path / "full")
    loaded = PixelGenT2IPipeline.from_pretrained(tmp_path / "full")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.guidance_scale == 5.0 and loaded.config.text_encoder_id == "Qwen/Qwen3-1.7B"
    assert loaded.scheduler.config.sampling_method == "adam_lm" and loaded.scheduler.config.timeshift == 3.0
    common = dict(prompt="a cat", num_inference_steps=2, output_type="latent")
    # Loaded weights sit at other addresses, which moves CPU BLAS rounding by an ulp; sampling amplifies that.
    torch.testing.assert_close(
        loaded(generator=torch.Generator().manual_seed(0), **common).images,
        pipe(generator=torch.Generator().manual_seed(0), **common).images,
        atol=1e-4,
        rtol=1e-4,
    )

    tiny_t2i_pipeline(with_text_encoder=False).save_pretrained(tmp_path / "bare")
    bare = PixelGenT2IPipeline.from_pretrained(tmp_path / "bare")
    assert bare.text_encoder is None and bare.tokenizer is None


def test_guidance_with_prompt_embeds_and_no_encoder_needs_negative_embeds():
    pipe = tiny_t2i_pipeline(with_text_encoder=False)
    embeds = torch.randn(1, 8, 24)
    with pytest.raises(ValueError, match="needs `negative_prompt_embeds` when the pipeline has no text encoder"):
        pipe(prompt_embeds=embeds, guidance_scale=4.0, num_inference_steps=2)
    images = pipe(prompt_embeds=embeds, guidance_scale=1.0, num_inference_steps=2, output_type="pt").images
    assert images.shape == (1, 3, 32, 32)
