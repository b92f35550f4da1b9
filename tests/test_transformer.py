"""PixelGenTransformer2DModel: architecture facts of reference section 2, checked against formulas."""

import math

import pytest
import torch
import torch.nn.functional as F
from components import FORWARD_TOLERANCE, TINY_C2I, tiny_transformer
from diffusers.models.attention_dispatch import attention_backend

from pixelgen_diffusers import PixelGenTransformer2DModel
from pixelgen_diffusers.models.transformer_jit import PixelGenRotaryPosEmbed, get_2d_sincos_pos_embed


def reference_forward(model: PixelGenTransformer2DModel, x, t, y):
    """JiT's forward written out from the reference document, reading only the model's state dict and config."""
    sd, cfg = model.state_dict(), model.config
    hidden, heads, p = cfg.hidden_size, cfg.num_heads, cfg.patch_size
    head_dim, grid, n_ctx = hidden // heads, cfg.sample_size // p, cfg.in_context_len

    def rms(v, w):
        return w * (v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6))

    def linear(v, name):
        return F.linear(v, sd[f"{name}.weight"], sd.get(f"{name}.bias"))

    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    t_freq = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=-1)
    t_emb = linear(F.silu(linear(t_freq, "time_embedder.linear_1")), "time_embedder.linear_2")
    y_emb = sd["class_embedder.weight"][y]
    c = t_emb + y_emb

    tokens = F.conv2d(x, sd["patch_embedder.proj_in.weight"], sd.get("patch_embedder.proj_in.bias"), stride=p)
    if cfg.bottleneck_dim is not None:
        tokens = F.conv2d(tokens, sd["patch_embedder.proj_out.weight"], sd["patch_embedder.proj_out.bias"])
    tokens = tokens.flatten(2).transpose(1, 2) + sd["pos_embed"]

    # RoPE angles: channel 2j and 2j+1 of the first half rotate by row * f_j, of the second half by column * f_j.
    axis = head_dim // 2
    f = 10000.0 ** (-torch.arange(0, axis, 2).float() / axis)
    rows = torch.arange(grid).repeat_interleave(grid).float()
    cols = torch.arange(grid).repeat(grid).float()
    angles = torch.cat(
        [(rows[:, None] * f).repeat_interleave(2, -1), (cols[:, None] * f).repeat_interleave(2, -1)], -1
    )

    def rope(v, prefix):
        a = torch.cat([torch.zeros(prefix, head_dim), angles])
        v0, v1 = v[..., 0::2], v[..., 1::2]
        cos, sin = a[:, 0::2].cos(), a[:, 0::2].sin()
        return torch.stack([v0 * cos - v1 * sin, v1 * cos + v0 * sin], dim=-1).flatten(-2)

    def modulate(v, shift, scale):
        return v * (1 + scale[:, None]) + shift[:, None]

    for i in range(cfg.depth):
        prefix = 0
        if n_ctx and i == cfg.in_context_start:
            tokens = torch.cat([y_emb[:, None] + sd["in_context_pos_embed"], tokens], dim=1)
        if n_ctx and i >= cfg.in_context_start:
            prefix = n_ctx
        b = f"transformer_blocks.{i}"
        mods = linear(F.silu(c), f"{b}.adaln_modulation").chunk(6, dim=-1)
        h = modulate(rms(tokens, sd[f"{b}.norm1.weight"]), mods[0], mods[1])
        qkv = linear(h, f"{b}.attn.to_qkv").reshape(h.shape[0], h.shape[1], 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        q = rope(rms(qkv[0], sd[f"{b}.attn.norm_q.weight"]), prefix)
        k = rope(rms(qkv[1], sd[f"{b}.attn.norm_k.weight"]), prefix)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
        attn = (weights @ qkv[2]).transpose(1, 2).reshape(h.shape)
        tokens = tokens + mods[2][:, None] * linear(attn, f"{b}.attn.to_out")
        h = modulate(rms(tokens, sd[f"{b}.norm2.weight"]), mods[3], mods[4])
        gate, up = linear(h, f"{b}.ff.proj_in").chunk(2, dim=-1)
        tokens = tokens + mods[5][:, None] * linear(F.silu(gate) * up, f"{b}.ff.proj_out")

    tokens = tokens[:, n_ctx:]
    shift, scale = linear(F.silu(c), "final_layer.adaln_modulation").chunk(2, dim=-1)
    out = linear(modulate(rms(tokens, sd["final_layer.norm.weight"]), shift, scale), "final_layer.proj_out")
    out = out.reshape(x.shape[0], grid, grid, p, p, 3)  # (p, q, c): channel fastest
    return torch.einsum("nhwpqc->nchpwq", out).reshape(x.shape)


def _inputs(batch=3, size=32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=generator)
    t = torch.rand(batch, generator=generator)
    y = torch.tensor([0, 10, 7][:batch])
    return x, t, y


@pytest.mark.parametrize("bottleneck_dim", [None, 16], ids=["plain", "bottleneck"])
def test_forward_matches_reference_formulas(bottleneck_dim):
    model = tiny_transformer(bottleneck_dim=bottleneck_dim)
    x, t, y = _inputs()
    with torch.no_grad():
        output = model(x, t, y).sample
        expected = reference_forward(model, x, t, y)
    assert output.shape == x.shape and expected.abs().max() > 1.0  # the random weights make every path matter
    torch.testing.assert_close(output, expected, **FORWARD_TOLERANCE)


def test_patch_embedding_variants_have_upstream_parameters():
    plain = tiny_transformer(randomize=False)
    bottleneck = tiny_transformer(bottleneck_dim=16, randomize=False)
    assert plain.patch_embedder.proj_in.bias is not None and plain.patch_embedder.proj_out is None
    assert bottleneck.patch_embedder.proj_in.bias is None
    assert bottleneck.patch_embedder.proj_in.out_channels == 16
    assert bottleneck.patch_embedder.proj_out.kernel_size == (1, 1)


def test_rope_spot_checks_for_pixelgen_xl():
    """Reference 2.3: head_dim 72, 16x16 grid; token (h=1, w=0) has angle 1.0 on channels 0 and 1 and 0 on 36+."""
    cos, sin = PixelGenRotaryPosEmbed(72)(16, 0, torch.device("cpu"))
    angles = torch.atan2(sin, cos)
    token = 1 * 16 + 0
    assert cos.shape == (256, 72)
    torch.testing.assert_close(angles[token, :2], torch.ones(2))
    assert torch.all(angles[token, 36:] == 0)
    # token (h=0, w=1): the column half rotates, frequencies 10000^(-2j/36) each repeated twice.
    expected = (10000.0 ** (-torch.arange(0, 36, 2).float() / 36)).repeat_interleave(2)
    torch.testing.assert_close(angles[1, 36:], expected)
    assert torch.all(angles[1, :36] == 0)


def test_in_context_tokens_are_not_rotated():
    cos, sin = PixelGenRotaryPosEmbed(16)(4, 5, torch.device("cpu"))
    assert cos.shape == (5 + 16, 16)
    assert torch.all(cos[:5] == 1) and torch.all(sin[:5] == 0)


def test_sincos_table_encodes_column_then_row():
    hidden, grid = 32, 4
    table = get_2d_sincos_pos_embed(hidden, grid)
    omega = 10000.0 ** (-torch.arange(8, dtype=torch.float64) / 8)
    h, w = 2, 3
    token = table[h * grid + w].double()  # float32 values in [-1, 1]: a few ulps (6e-8 each) from float64's sin/cos
    torch.testing.assert_close(token[:8], torch.sin(w * omega), atol=1e-6, rtol=0)
    torch.testing.assert_close(token[8:16], torch.cos(w * omega), atol=1e-6, rtol=0)
    torch.testing.assert_close(token[16:24], torch.sin(h * omega), atol=1e-6, rtol=0)
    torch.testing.assert_close(token[24:], torch.cos(h * omega), atol=1e-6, rtol=0)


def test_in_context_tokens_enter_at_in_context_start():
    model = tiny_transformer(depth=3, in_context_start=1)
    inputs, outputs = [], []

    def record(module, args, output):
        inputs.append(args[0])
        outputs.append(output)

    for block in model.transformer_blocks:
        block.register_forward_hook(record)
    x, t, y = _inputs()
    with torch.no_grad():
        model(x, t, y)
    # Every block maps 4 in-context + 16 image tokens to as many (diffusers' block caches need equal lengths), but
    # before `in_context_start` the in-context tokens pass through untouched.
    assert [tensor.shape[1] for tensor in inputs + outputs] == [16 + 4] * 6
    assert torch.equal(outputs[0][:, :4], inputs[0][:, :4])
    assert not torch.allclose(outputs[1][:, :4], inputs[1][:, :4])
    # They carry the class embedding plus learned positions: changing the positions changes the output.
    with torch.no_grad():
        before = model(x, t, y).sample
        model.in_context_pos_embed.add_(1.0)
        assert not torch.allclose(before, model(x, t, y).sample)


def test_unpatchify_uses_row_column_channel_order():
    model = tiny_transformer(randomize=False)
    p, grid = 8, 4
    patches = torch.arange(grid * grid * p * p * 3, dtype=torch.float32).reshape(1, grid * grid, p * p * 3)
    image = model.unpatchify(patches)
    # Pixel (row 8*h + i, column 8*w + j) of channel c comes from token h*grid + w, feature (i*p + j)*3 + c.
    h, w, i, j, c = 2, 1, 5, 3, 2
    assert image[0, c, p * h + i, p * w + j] == patches[0, h * grid + w, (i * p + j) * 3 + c]


def test_null_class_row_exists_for_guidance():
    model = tiny_transformer()
    assert model.class_embedder.num_embeddings == TINY_C2I["num_classes"] + 1
    assert model.null_class_id == TINY_C2I["num_classes"]


def test_presets_match_published_parameter_counts():
    with torch.device("meta"):
        xl = PixelGenTransformer2DModel.from_preset("PixelGen-XL/16")
        large = PixelGenTransformer2DModel.from_preset("PixelGen-L/16")
    # pos_embed is a buffer here (frozen upstream), so parameters = upstream's trainable count.
    assert sum(p.numel() for p in xl.parameters()) == 676_699_200
    assert sum(p.numel() for p in xl.parameters()) + xl.pos_embed.numel() == 676_994_112
    assert sum(p.numel() for p in large.parameters()) + large.pos_embed.numel() == 459_139_808
    assert xl.transformer_blocks[0].ff.proj_out.in_features == 3072
    with pytest.raises(ValueError, match="Unknown preset"):
        PixelGenTransformer2DModel.from_preset("JiT-G/16")


def test_save_load_round_trip(tmp_path):
    model = tiny_transformer(bottleneck_dim=16)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    reloaded = PixelGenTransformer2DModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.bottleneck_dim == 16
    x, t, y = _inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, y).sample, reloaded(x, t, y).sample)


def test_gradient_checkpointing_recomputes_blocks_and_gives_equal_gradients():
    x, t, y = _inputs()
    gradients, calls = [], []
    for checkpointing in (False, True):
        model = tiny_transformer().train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        count = [0]
        model.transformer_blocks[0].register_forward_pre_hook(
            lambda *args, count=count: count.__setitem__(0, count[0] + 1)
        )
        model(x, t, y).sample.square().mean().backward()
        gradients.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        calls.append(count[0])
    torch.testing.assert_close(gradients[0], gradients[1])
    assert calls == [1, 2]  # with checkpointing the block runs again during backward


def test_attention_backends_agree():
    model = tiny_transformer()
    x, t, y = _inputs()
    with torch.no_grad():
        with attention_backend("native"):
            native = model(x, t, y).sample
        with attention_backend("_native_math"):
            math_backend = model(x, t, y).sample
    torch.testing.assert_close(native, math_backend, atol=1e-5, rtol=1e-5)


def test_repeated_blocks_compile_without_graph_breaks():
    model = tiny_transformer()
    x, t, y = _inputs()
    with torch.no_grad():
        eager = model(x, t, y).sample
        model.compile_repeated_blocks(backend="eager", fullgraph=True)
        compiled = model(x, t, y).sample
    torch.testing.assert_close(eager, compiled)


def test_bfloat16_forward_is_finite_and_close():
    model = tiny_transformer()
    x, t, y = _inputs()
    with torch.no_grad():
        reference = model(x, t, y).sample
        low_precision = model.to(torch.bfloat16)(x.bfloat16(), t, y).sample
    assert low_precision.dtype == torch.bfloat16 and torch.isfinite(low_precision).all()
    assert (low_precision.float() - reference).abs().mean() < 0.02 * reference.abs().mean()
    # The RoPE table is not a buffer: it stays float32 (and out of the state dict) when the model is cast.
    assert {table.dtype for table in model.rotary_emb(x.device)} == {torch.float32}
    assert not any("rotary" in name for name in model.state_dict())


def test_rotary_table_is_built_once_per_device_and_matches_the_rope_module():
    model = tiny_transformer()
    image_table, table = model.rotary_emb(torch.device("cpu"))
    assert model.rotary_emb(torch.device("cpu"))[1] is table
    cos, sin = model.rope(TINY_C2I["sample_size"] // TINY_C2I["patch_size"], TINY_C2I["in_context_len"], "cpu")
    assert torch.equal(table[..., 0], cos[:, 0::2]) and torch.equal(table[..., 1], sin[:, 0::2])
    assert torch.equal(image_table, table[TINY_C2I["in_context_len"] :])
    assert torch.equal(cos[:, 0::2], cos[:, 1::2])  # one angle per channel pair


def test_wrong_input_size_is_a_clear_error():
    model = tiny_transformer()
    with pytest.raises(ValueError, match="takes 32x32"):
        model(torch.zeros(1, 3, 16, 16), torch.zeros(1), torch.zeros(1, dtype=torch.long))


def test_lora_adapter_trains_only_the_adapter():
    pytest.importorskip("peft")
    from peft import LoraConfig

    model = tiny_transformer()
    targets = ["to_qkv", "to_out", "ff.proj_in", "ff.proj_out", "adaln_modulation"]
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False))
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora" in name for name in trainable)
    x, t, y = _inputs()
    model.enable_gradient_checkpointing()
    model(x, t, y).sample.square().mean().backward()
    assert all(model.get_parameter(name).grad.abs().sum() > 0 for name in trainable)  # every adapter learns
    with torch.no_grad():
        with_adapter = model(x, t, y).sample
        model.disable_adapters()
        without_adapter = model(x, t, y).sample
    assert not torch.allclose(with_adapter, without_adapter)


def test_dropout_acts_on_attention_and_feed_forward_outputs_of_middle_blocks_only():
    model = tiny_transformer(depth=4, dropout=0.5)
    dropouts = {name: module.p for name, module in model.named_modules() if isinstance(module, torch.nn.Dropout)}
    assert (
        dropouts["transformer_blocks.1.attn.out_dropout"] == 0.5 and dropouts["transformer_blocks.2.ff.dropout"] == 0.5
    )
    assert (
        dropouts["transformer_blocks.0.attn.out_dropout"] == 0.0 and dropouts["transformer_blocks.3.ff.dropout"] == 0.0
    )
    x, t, y = _inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, y).sample, model(x, t, y).sample)  # eval mode: no dropout
        model.train()
        assert not torch.equal(model(x, t, y).sample, model(x, t, y).sample)
