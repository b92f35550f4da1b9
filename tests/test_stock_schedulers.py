"""Stock diffusers flow-matching schedulers in place of PixelGenScheduler."""

import pytest
import torch
from components import tiny_c2i_pipeline, tiny_t2i_pipeline
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    UniPCMultistepScheduler,
)


GUIDED = dict(guidance_scale=2.0, guidance_interval_min=0.1, guidance_interval_max=0.8, output_type="latent")
STOCK = {
    "flow_match_euler": lambda: FlowMatchEulerDiscreteScheduler(shift=2.0),
    "flow_match_heun": lambda: FlowMatchHeunDiscreteScheduler(shift=2.0),
    "unipc": lambda: UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=2.0),
    "dpmsolver": lambda: DPMSolverMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=2.0
    ),
}


def run(pipe, steps, **kwargs):
    inputs = dict(class_labels=[1, 2]) if hasattr(pipe, "get_label_ids") else dict(prompt=["a", "b c"])
    return pipe(**inputs, **GUIDED, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), **kwargs)


@pytest.mark.parametrize("make_pipeline", [tiny_c2i_pipeline, tiny_t2i_pipeline], ids=["c2i", "t2i"])
@pytest.mark.parametrize(
    "method, stock", [("euler", FlowMatchEulerDiscreteScheduler), ("heun", FlowMatchHeunDiscreteScheduler)]
)
def test_flow_match_schedulers_on_our_grid_equal_pixelgen_solvers(make_pipeline, method, stock):
    pipe = make_pipeline(sampling_method=method, timeshift=2.0)
    expected = run(pipe, 8).images
    pipe.scheduler = stock(shift=2.0)  # PixelGen's timeshift is the scheduler's shift
    torch.testing.assert_close(run(pipe, 8).images, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", STOCK)
def test_stock_schedulers_converge_to_the_pixelgen_ode_solution(name):
    """Every stock solver integrates the same ODE: more steps bring it close to a fine PixelGen Heun solution (a
    wrong sign, sigma mapping or shift would not)."""
    pipe = tiny_c2i_pipeline(sampling_method="heun", timeshift=2.0)
    solution = run(pipe, 100).images
    pipe.scheduler = STOCK[name]()
    errors = [(run(pipe, steps).images - solution).abs().max().item() for steps in (8, 25)]
    assert errors[1] < 0.25 and errors[1] < errors[0] / 2.5, errors


@pytest.mark.parametrize("name", STOCK)
def test_stock_schedulers_sample_text_to_image_and_keep_the_guidance_interval(name):
    pipe = tiny_t2i_pipeline()
    pipe.scheduler = STOCK[name]()
    rows = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    images = run(pipe, 6).images
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
    # Evaluation i runs at t = 1 - sigma_i and is guided (twice the rows) when 0.1 < t <= 0.8 at its step's start.
    sigmas = pipe.scheduler.sigmas[: len(rows)]
    times = 1 - sigmas
    if name == "flow_match_heun":  # both evaluations of a Heun step decide at the step's start
        times = times[torch.arange(len(times)) // 2 * 2]
    assert rows == [4 if 0.1 < t <= 0.8 else 2 for t in times.tolist()]
    assert 2 in rows and 4 in rows


def test_unusable_schedulers_are_rejected():
    pipe = tiny_c2i_pipeline()
    pipe.scheduler = EulerDiscreteScheduler()
    with pytest.raises(ValueError, match="EulerDiscreteScheduler cannot sample PixelGen: it needs a flow-matching"):
        run(pipe, 4)
    pipe.scheduler = UniPCMultistepScheduler()  # epsilon prediction, not flow sigmas
    with pytest.raises(ValueError, match="use_flow_sigmas=True"):
        run(pipe, 4)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    with pytest.raises(ValueError, match="use_dynamic_shifting"):
        run(pipe, 4)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    with pytest.raises(ValueError, match=r"timeshift=2.0 differs from FlowMatchEulerDiscreteScheduler's shift=3.0"):
        run(pipe, 4, timeshift=2.0)
    with pytest.raises(ValueError, match="sampling_method and solver_order"):
        run(pipe, 4, sampling_method="heun")


@pytest.mark.parametrize("name", STOCK)
def test_from_config_of_the_pixelgen_scheduler_keeps_the_recipes_shift(name):
    """diffusers' idiom for swapping schedulers, `X.from_config(pipe.scheduler.config)`, keeps timeshift 2.0."""
    pipe = tiny_c2i_pipeline(timeshift=2.0)
    expected_scheduler = STOCK[name]()
    extra = (
        {key: expected_scheduler.config[key] for key in ("use_flow_sigmas", "prediction_type")}
        if name in ("unipc", "dpmsolver")
        else {}
    )
    pipe.scheduler = type(expected_scheduler).from_config(pipe.scheduler.config, **extra)
    shift_name = "shift" if "shift" in expected_scheduler.config else "flow_shift"
    assert pipe.scheduler.config[shift_name] == 2.0
    swapped = run(pipe, 4).images
    pipe.scheduler = expected_scheduler
    torch.testing.assert_close(swapped, run(pipe, 4).images, rtol=0, atol=0)


@pytest.mark.parametrize("scheduler_class", [UniPCMultistepScheduler, DPMSolverMultistepScheduler])
def test_stock_settings_that_do_not_end_at_the_clean_image_are_refused(scheduler_class):
    """final_sigmas_type="sigma_min" makes the last step zero-length on PixelGen's grid: the sample would stay noisy
    at sigma = 1/N. Every accepted setting ends at sigma 0."""
    pipe = tiny_c2i_pipeline()
    pipe.scheduler = scheduler_class(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=2.0, final_sigmas_type="sigma_min"
    )
    with pytest.raises(ValueError, match="final_sigmas_type='zero'"):
        run(pipe, 4, timeshift=2.0)
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, final_sigmas_type="zero")
    run(pipe, 4)
    assert pipe.scheduler.sigmas[-1] == 0
