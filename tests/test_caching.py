"""diffusers' caches (CacheMixin hooks) on both PixelGen transformers, through both pipelines."""

import pytest
import torch
from components import LAYOUT_TOLERANCE, tiny_c2i_pipeline, tiny_t2i_pipeline, tiny_transformer
from diffusers.hooks import (
    FasterCacheConfig,
    FirstBlockCacheConfig,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    SeaCacheConfig,
    TaylorSeerCacheConfig,
    TextKVCacheConfig,
)


# The guidance interval cuts the run: with Heun 5 (9 evaluations) and timeshift 2, t = 0 and the last steps are
# unguided, the middle ones guided.
GUIDED_RUN = dict(num_inference_steps=5, guidance_scale=2.0, guidance_interval_min=0.1, guidance_interval_max=0.8)


def c2i_pipeline():
    """Four blocks, in-context tokens joining at block 2: the block stack changes meaning part-way."""
    pipe = tiny_c2i_pipeline(sampling_method="heun")
    pipe.register_modules(transformer=tiny_transformer(depth=4, in_context_start=2))
    return pipe


def t2i_pipeline():
    return tiny_t2i_pipeline(sampling_method="heun", timeshift=2.0, transformer_overrides=dict(depth=3))


PIPELINES = {"c2i": (c2i_pipeline, dict(class_labels=[1, 2])), "t2i": (t2i_pipeline, dict(prompt=["a", "b c"]))}

CACHES = {
    "first_block": lambda pipe, threshold=0.3: FirstBlockCacheConfig(threshold=threshold),
    "mag": lambda pipe, threshold=0.5: MagCacheConfig(
        threshold=threshold, mag_ratios=[1.0] * 9, num_inference_steps=9, retention_ratio=0.0
    ),
    "taylorseer": lambda pipe: TaylorSeerCacheConfig(
        cache_interval=2, disable_cache_before_step=2, taylor_factors_dtype=torch.float32
    ),
    "pyramid_attention_broadcast": lambda pipe: PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2, current_timestep_callback=lambda: pipe.current_timestep
    ),
    "sea": lambda pipe, threshold=0.5: SeaCacheConfig(threshold=threshold),
}


def sample(pipe, inputs, **kwargs):
    return pipe(**inputs, **{**GUIDED_RUN, **kwargs}, generator=torch.Generator().manual_seed(0), output_type="latent")


def count_block_calls(pipe):
    """Counts the forward calls that reach the blocks' own code (a skipped block never gets there)."""
    calls = []
    for block in pipe.transformer.transformer_blocks:
        block.ff.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


@pytest.mark.parametrize("model", PIPELINES)
@pytest.mark.parametrize("cache", CACHES)
def test_cache_samples_with_guidance_interval_and_skips_work(model, cache):
    make_pipeline, inputs = PIPELINES[model]
    pipe = make_pipeline()
    rows = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    uncached = sample(pipe, inputs).images
    assert sorted(set(rows)) == [2, 4], "the run must mix guided (2x batch) and unguided evaluations"

    pipe.transformer.enable_cache(CACHES[cache](pipe))
    calls, rows[:] = count_block_calls(pipe), []
    cached = sample(pipe, inputs).images
    # Under a cache the conditional and unconditional passes are separate calls of the batch size.
    assert set(rows) == {2}
    assert torch.isfinite(cached).all()
    if cache == "pyramid_attention_broadcast" or cache == "taylorseer":  # attention-level caches
        assert not torch.equal(cached, uncached)
    else:
        blocks_uncached = len(rows) * len(pipe.transformer.transformer_blocks)
        assert len(calls) < blocks_uncached
    assert (cached - uncached).abs().max() < 1.5  # approximate, not broken

    # The state is reset between calls: a second run repeats the first exactly.
    torch.testing.assert_close(sample(pipe, inputs).images, cached, rtol=0, atol=0)
    pipe.transformer.disable_cache()
    torch.testing.assert_close(sample(pipe, inputs).images, uncached, rtol=0, atol=0)


@pytest.mark.parametrize("model", PIPELINES)
@pytest.mark.parametrize("cache", ["first_block", "sea"])
def test_threshold_zero_equals_uncached(model, cache):
    make_pipeline, inputs = PIPELINES[model]
    pipe = make_pipeline()
    uncached = sample(pipe, inputs).images
    pipe.transformer.enable_cache(CACHES[cache](pipe, threshold=0.0))
    calls, passes = count_block_calls(pipe), []
    pipe.transformer.register_forward_pre_hook(lambda module, args: passes.append(1))
    cached = sample(pipe, inputs).images
    assert len(calls) == len(passes) * len(pipe.transformer.transformer_blocks)  # nothing skipped
    torch.testing.assert_close(cached, uncached, **LAYOUT_TOLERANCE)


@pytest.mark.parametrize("model", PIPELINES)
def test_cache_contexts_keep_conditional_and_unconditional_state_apart(model):
    """The unconditional passes of guided steps must see only their own history: their predictions equal those of a
    fresh run whose conditional passes get the unconditional input. Shared state would compare (and reuse) residuals
    of the other condition and change the cache decisions."""
    make_pipeline, _ = PIPELINES[model]
    pipe = make_pipeline()
    transformer = pipe.transformer
    generator = torch.Generator().manual_seed(1)
    if model == "c2i":
        condition, negative = torch.tensor([1, 2]), torch.full((2,), transformer.null_class_id)
    else:
        shape = (2, transformer.config.txt_max_length, transformer.config.txt_embed_dim)
        condition, negative = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    size = transformer.config.sample_size
    noise = torch.randn(2, 3, size, size, generator=generator)
    # A slowly moving trajectory, so that the cache skips some evaluations.
    steps = [(noise * (1 - 0.02 * k), torch.tensor(0.02 * k)) for k in range(8)]
    transformer.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    calls = count_block_calls(pipe)

    guided = [pipe.predict_clean_image(x, t, condition, negative, i, len(steps)) for i, (x, t) in enumerate(steps)]
    transformer._reset_stateful_cache()
    calls.clear()
    alone = [pipe.predict_clean_image(x, t, negative, None, i, len(steps))[0] for i, (x, t) in enumerate(steps)]
    assert len(calls) < len(steps) * len(transformer.transformer_blocks), "the cache must skip for this test to bite"
    for (_, uncond), expected in zip(guided, alone):
        torch.testing.assert_close(uncond, expected, rtol=0, atol=0)


@pytest.mark.parametrize("model", PIPELINES)
def test_faster_cache_runs_fully_guided_and_rejects_mixed_batches(model):
    make_pipeline, inputs = PIPELINES[model]
    pipe = make_pipeline()
    pipe.transformer.enable_cache(
        FasterCacheConfig(
            spatial_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(-1, 900),
            unconditional_batch_skip_range=2,
            unconditional_batch_timestep_skip_range=(-1, 900),
            attention_weight_callback=lambda module: 0.5,
            tensor_format="BCHW",
            current_timestep_callback=lambda: pipe.current_timestep,
        )
    )
    rows = []  # the batch that reaches the network, after FasterCache has dropped the unconditional half or not
    pipe.transformer.final_layer.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    images = sample(pipe, inputs, guidance_interval_min=-1.0, guidance_interval_max=1.0).images
    assert torch.isfinite(images).all()
    assert 2 in rows and 4 in rows  # some evaluations skipped the unconditional half
    with pytest.raises(ValueError, match="FasterCache needs the unconditional rows in every call"):
        sample(pipe, inputs)


def test_unusable_cache_configs_are_rejected_with_the_reason():
    c2i, t2i = c2i_pipeline().transformer, t2i_pipeline().transformer
    with pytest.raises(ValueError, match="has no text to cache"):
        c2i.enable_cache(TextKVCacheConfig())
    with pytest.raises(ValueError, match="refines the text with the timestep"):
        t2i.enable_cache(TextKVCacheConfig())
    for model in (c2i, t2i):
        with pytest.raises(ValueError, match="proj_out"):
            model.enable_cache(TaylorSeerCacheConfig(use_lite_mode=True))
        with pytest.raises(ValueError, match="tensor_format='BCHW'"):
            model.enable_cache(FasterCacheConfig(current_timestep_callback=lambda: 0))
        assert not model.is_cache_enabled


STATEFUL_CACHES = {
    **{name: make for name, make in CACHES.items() if name != "mag"},
    "mag": lambda pipe: MagCacheConfig(
        threshold=0.5, mag_ratios=[1.0, 0.9, 1.1, 1.0, 0.8, 1.2, 1.0, 0.95], num_inference_steps=8, retention_ratio=0.0
    ),
}


@pytest.mark.parametrize("model", PIPELINES)
@pytest.mark.parametrize("cache", STATEFUL_CACHES)
def test_every_cache_keeps_conditional_and_unconditional_state_apart(model, cache):
    """The README's "cached state never mixes conditions", for every cache that runs the passes apart: over a run
    whose guidance skips some evaluations, the unconditional passes equal a run of the unconditional input alone at
    the same evaluations. Shared state (one per attention module, as Pyramid Attention Broadcast keeps) would hand the
    unconditional pass the conditional attention output."""
    make_pipeline, _ = PIPELINES[model]
    pipe = make_pipeline()
    transformer = pipe.transformer
    generator = torch.Generator().manual_seed(1)
    if model == "c2i":
        condition, negative = torch.tensor([1, 2]), torch.full((2,), transformer.null_class_id)
    else:
        shape = (2, transformer.config.txt_max_length, transformer.config.txt_embed_dim)
        condition, negative = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    size = transformer.config.sample_size
    noise = torch.randn(2, 3, size, size, generator=generator)
    steps = [(noise * (1 - 0.02 * k), torch.tensor(0.1 * k)) for k in range(8)]
    guided = [False, True, True, False, True, True, True, False]
    transformer.enable_cache(STATEFUL_CACHES[cache](pipe))

    transformer._reset_stateful_cache()
    uncond_passes = []
    for i, ((x, t), is_guided) in enumerate(zip(steps, guided)):
        pipe._current_timestep = 1000.0 * (1.0 - float(t))
        _, uncond = pipe.predict_clean_image(x, t, condition, negative if is_guided else None, i, len(steps))
        if is_guided:
            uncond_passes.append(uncond)
    transformer._reset_stateful_cache()
    for i, ((x, t), is_guided) in enumerate(zip(steps, guided)):
        if is_guided:  # the unconditional input alone, at the same evaluations
            pipe._current_timestep = 1000.0 * (1.0 - float(t))
            alone, _ = pipe.predict_clean_image(x, t, negative, None, i, len(steps))
            torch.testing.assert_close(uncond_passes.pop(0), alone, rtol=0, atol=0)


def mag_cache_indices(pipe):
    """(the evaluation index the pipeline passes in cache_context, the index MagCache reads its ratio at) per call."""
    blocks = pipe.transformer.transformer_blocks
    hook = blocks[0]._diffusers_hook.get_hook("mag_cache_leader_block_hook")
    indices = []

    def record(module, args, output):
        manager = hook.state_manager
        indices.append((manager.context.name, manager.context.step_index, manager.get_state().step_index))

    blocks[0].register_forward_hook(record)
    return indices


@pytest.mark.parametrize("model", PIPELINES)
def test_mag_cache_reads_the_ratio_of_the_evaluation_it_runs(model):
    """The unconditional context skips the unguided evaluations; counting its own calls it would lag behind."""
    make_pipeline, inputs = PIPELINES[model]
    pipe = make_pipeline()
    pipe.transformer.enable_cache(CACHES["mag"](pipe))
    indices = mag_cache_indices(pipe)
    sample(pipe, inputs)
    assert {name for name, _, _ in indices} == {"cond", "uncond"}
    assert [ratio_index for _, _, ratio_index in indices] == [step for _, step, _ in indices]


def test_mag_cache_for_another_number_of_evaluations_is_refused():
    """diffusers documents MagCacheConfig(num_inference_steps=N); Heun's N steps are 2N - 1 evaluations, and a
    counter that wraps at N would reset MagCache's state in the middle of the run."""
    make_pipeline, inputs = PIPELINES["c2i"]
    pipe = make_pipeline()
    pipe.transformer.enable_cache(MagCacheConfig(threshold=0.5, mag_ratios=[1.0] * 5, num_inference_steps=5))
    with pytest.raises(ValueError, match=r"num_inference_steps=5.*9 transformer evaluations"):
        sample(pipe, inputs)
