"""torch.compile of both transformers: compiled sampling equals eager sampling, and a whole run needs a bounded number
of graphs (no recompilation per step, at the switch between guided 2B-row and unguided B-row steps, or when the
in-context tokens enter part-way through the stack).

Graphs are captured with the "eager" backend: graph capture and guards are Dynamo's whatever the backend, and the
code path is the compiled one (`torch.compiler.is_compiling()` is true), while Inductor's C++ build would take
minutes on a CPU. Inductor's numbers are in docs/speed.md (benchmarks/benchmark_sampling.py --compile).
"""

import pytest
import torch
from components import tiny_c2i_pipeline, tiny_t2i_pipeline
from torch._dynamo.utils import counters


SOLVERS = ["heun", "euler", "adam_lm"]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def c2i_runs(pipe):
    """Batch 1 (1 and 2 rows) through every solver, with guidance on part of the schedule and without."""
    images = []
    for solver in SOLVERS:
        for guidance_scale in (1.0, 2.0):
            generator = torch.Generator().manual_seed(0)
            images.append(
                pipe(
                    [3],
                    sampling_method=solver,
                    num_inference_steps=4,
                    guidance_scale=guidance_scale,
                    generator=generator,
                    output_type="latent",
                ).images
            )
    return images


@pytest.mark.parametrize("mode", ["model", "blocks"])
def test_compiled_c2i_sampling_equals_eager_with_a_bounded_graph_count(mode):
    pipe = tiny_c2i_pipeline(guidance_interval_min=0.1, guidance_interval_max=0.9)
    with torch.no_grad():
        eager = c2i_runs(pipe)
        if mode == "model":
            pipe.transformer.compile(backend="eager", fullgraph=True)
        else:
            pipe.transformer.compile_repeated_blocks(backend="eager", fullgraph=True)
        # Any recompilation fails the test: per step, between 2-row and 1-row steps, or when the in-context tokens
        # join the attention part-way through the stack (regionally, blocks before and after `in_context_start`).
        with torch._dynamo.config.patch(error_on_recompile=True):
            compiled = c2i_runs(pipe)
            batch_of_two = pipe([3, 5], num_inference_steps=2, output_type="latent").images
    assert counters["stats"]["unique_graphs"] == 1
    assert batch_of_two.shape[0] == 2
    for expected, actual in zip(eager, compiled):
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["model", "blocks"])
def test_compiled_t2i_sampling_equals_eager_with_one_graph_per_block_class(mode):
    pipe = tiny_t2i_pipeline(guidance_interval_min=0.1, guidance_interval_max=0.9)

    def runs():
        images = []
        for solver, guidance_scale in (("adam_lm", 4.0), ("euler", 1.0), ("heun", 2.0)):
            generator = torch.Generator().manual_seed(0)
            images.append(
                pipe(
                    "a red square",
                    sampling_method=solver,
                    num_inference_steps=3,
                    guidance_scale=guidance_scale,
                    generator=generator,
                    output_type="latent",
                ).images
            )
        return images

    with torch.no_grad():
        eager = runs()
        if mode == "model":
            pipe.transformer.compile(backend="eager", fullgraph=True)
        else:
            pipe.transformer.compile_repeated_blocks(backend="eager", fullgraph=True)
        with torch._dynamo.config.patch(error_on_recompile=True):
            compiled = runs()
    # The whole model is one graph; regionally, the text-refiner block and the image block are one graph each.
    assert counters["stats"]["unique_graphs"] == (1 if mode == "model" else 2)
    for expected, actual in zip(eager, compiled):
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
