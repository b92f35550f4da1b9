"""PixelGenScheduler: the grids, interval tests and update rules of reference section 4."""

import re

import numpy as np
import pytest
import torch

from pixelgen_diffusers import PixelGenScheduler


XL_GRID_HEAD = [0, 0.010101, 0.020408, 0.030928, 0.041667, 0.052632, 0.063830, 0.075269, 0.086957, 0.098901, 0.111111]
XL_GRID_TAIL = [0.851852, 0.886792, 0.923077, 0.960784, 1.0]
T2I_GRID = [0, 0.013699, 0.028169, 0.043478, 0.059701, 0.076923, 0.095238, 0.114754, 0.135593, 0.157895, 0.181818,
            0.207547, 0.235294, 0.265306, 0.297872, 0.333333, 0.372093, 0.414634, 0.461538, 0.513514, 0.571428,
            0.636364, 0.709677, 0.793103, 0.888889, 1.0]  # fmt: skip


def test_shifted_grids_match_reference_tables():
    xl = PixelGenScheduler.time_grid(50, 2.0)
    assert xl.dtype == torch.float32 and len(xl) == 51
    np.testing.assert_allclose(xl[:11].numpy(), XL_GRID_HEAD, atol=1e-6)
    np.testing.assert_allclose(xl[-5:].numpy(), XL_GRID_TAIL, atol=1e-6)
    np.testing.assert_allclose(PixelGenScheduler.time_grid(25, 3.0).numpy(), T2I_GRID, atol=1e-6)
    np.testing.assert_allclose(PixelGenScheduler.time_grid(50, 1.0).numpy(), np.linspace(0, 1, 51), atol=1e-6)


def test_heun_evaluates_predictor_and_corrector_then_a_final_euler_step():
    scheduler = PixelGenScheduler(sampling_method="heun", timeshift=2.0)
    scheduler.set_timesteps(50)
    grid = scheduler.grid
    assert len(scheduler.timesteps) == 99 and scheduler.order == 2
    assert torch.equal(scheduler.timesteps[:4], torch.stack([grid[0], grid[1], grid[1], grid[2]]))
    assert scheduler.timesteps[-1] == grid[49]  # the last evaluation is the Euler step's, at t_{N-1}


def test_xl_preset_guidance_pattern_is_20_unguided_76_guided_3_unguided():
    scheduler = PixelGenScheduler(sampling_method="heun", timeshift=2.0)
    scheduler.set_timesteps(50)
    mask = scheduler.guidance_mask(0.1, 0.9)
    assert mask == [False] * 20 + [True] * 76 + [False] * 3
    # Both Heun evaluations of step 47 (start t = 0.8868, corrector at t = 0.9231 > 0.9) are guided.
    assert mask[2 * 47] and mask[2 * 47 + 1] and scheduler.timesteps[2 * 47 + 1] > 0.9


def test_interval_is_compared_in_float32_with_solver_specific_upper_bound():
    # Linear grid (s = 1, N = 10): t_1 = 0.0999999940 (below float32(0.1)) and t_9 = float32(0.9) exactly.
    euler = PixelGenScheduler(sampling_method="euler")
    euler.set_timesteps(10)
    adams = PixelGenScheduler(sampling_method="adam_lm")
    adams.set_timesteps(10)
    assert adams.interval_timesteps[9] == euler.interval_timesteps[9] == torch.tensor(0.9)
    assert euler.guidance_mask(0.1, 0.9)[1] is False  # 0.0999999940 > 0.1 is False in float32
    assert euler.guidance_mask(0.1, 0.9)[9] is True  # Euler/Heun: t <= 0.9
    assert adams.guidance_mask(0.1, 0.9)[9] is False  # adam_lm: t < 0.9
    assert float(adams.interval_timesteps[9]) < 0.9  # a float64 comparison would wrongly guide adam_lm here


def test_adam_lm_with_full_interval_leaves_step_zero_unguided():
    scheduler = PixelGenScheduler(sampling_method="adam_lm", timeshift=3.0)
    scheduler.set_timesteps(25)
    assert len(scheduler.timesteps) == 25 and scheduler.order == 1
    assert scheduler.guidance_mask(0.0, 1.0) == [False] + [True] * 24


def test_adams_bashforth_order2_coefficients():
    scheduler = PixelGenScheduler(sampling_method="adam_lm", timeshift=3.0, solver_order=2)
    scheduler.set_timesteps(25)
    coefficients = scheduler.adams_coefficients
    assert torch.equal(coefficients[0], torch.ones(1))
    np.testing.assert_allclose(coefficients[1].numpy(), [-0.528169, 1.528169], atol=1e-6)
    np.testing.assert_allclose(coefficients[24].numpy(), [-0.58, 1.58], atol=1e-5)
    grid = scheduler.grid.double()
    for i in range(1, 25):  # v_eff = -r/2 v_{i-1} + (1 + r/2) v_i with r = h_i / h_{i-1}
        r = (grid[i + 1] - grid[i]) / (grid[i] - grid[i - 1])
        np.testing.assert_allclose(coefficients[i].numpy(), [-r / 2, 1 + r / 2], rtol=1e-4)


@pytest.mark.parametrize("order", [3, 4])
def test_higher_order_coefficients_integrate_the_lagrange_interpolant(order):
    scheduler = PixelGenScheduler(sampling_method="adam_lm", timeshift=1.0, solver_order=order)
    scheduler.set_timesteps(12)
    grid = scheduler.grid.double().numpy()
    for i in range(12):
        nodes = grid[max(0, i + 1 - order) : i + 1]
        expected = []
        for j in range(len(nodes)):  # integrate the j-th Lagrange basis polynomial exactly in float64
            others = np.delete(nodes, j)
            basis = np.poly1d(np.poly(others)) / np.prod(nodes[j] - others)
            antiderivative = np.polyint(basis)
            expected.append(antiderivative(grid[i + 1]) - antiderivative(grid[i]))
        expected = np.array(expected) / np.sum(expected)
        np.testing.assert_allclose(scheduler.adams_coefficients[i].numpy(), expected, atol=2e-3)
        assert len(scheduler.adams_coefficients[i]) == min(order, i + 1)


def test_xl_final_heun_step_hits_the_velocity_clamp():
    scheduler = PixelGenScheduler(sampling_method="heun", timeshift=2.0)
    scheduler.set_timesteps(50)
    t_last = scheduler.timesteps[-1]
    np.testing.assert_allclose(float(t_last), 0.960784, atol=1e-6)
    sample, x_hat = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    velocity = scheduler.convert_model_output(x_hat, t_last, sample)
    torch.testing.assert_close(velocity, (x_hat - sample) / 0.05)  # 1 - t = 0.0392 is clamped to 0.05
    scheduler._step_index = len(scheduler.timesteps) - 1
    final = scheduler.step(velocity, t_last, sample).prev_sample
    torch.testing.assert_close(final, sample + (x_hat - sample) * ((1 - t_last) / 0.05))  # 0.2157 x + 0.7843 x_hat


def test_heun_step_averages_predictor_and_corrector_velocities():
    scheduler = PixelGenScheduler(sampling_method="heun")
    scheduler.set_timesteps(4)
    x = torch.randn(2, 3, 2, 2)
    v0, v1 = torch.randn_like(x), torch.randn_like(x)
    dt = scheduler.grid[1] - scheduler.grid[0]
    predicted = scheduler.step(v0, scheduler.timesteps[0], x).prev_sample
    torch.testing.assert_close(predicted, x + v0 * dt)
    corrected = scheduler.step(v1, scheduler.timesteps[1], predicted).prev_sample
    torch.testing.assert_close(corrected, x + (v0 + v1) / 2 * dt)


def test_solver_state_is_float32_whatever_the_input_dtype():
    scheduler = PixelGenScheduler(sampling_method="adam_lm")
    scheduler.set_timesteps(3)
    x = torch.randn(1, 3, 2, 2)
    out = scheduler.step(torch.randn(1, 3, 2, 2, dtype=torch.bfloat16), scheduler.timesteps[0], x).prev_sample
    assert out.dtype == torch.float32
    assert scheduler.convert_model_output(x.bfloat16(), scheduler.timesteps[0], x).dtype == torch.float32


def test_config_round_trip(tmp_path):
    scheduler = PixelGenScheduler(sampling_method="adam_lm", timeshift=3.0, solver_order=3)
    scheduler.save_pretrained(tmp_path)
    assert (tmp_path / "scheduler_config.json").exists()
    reloaded = PixelGenScheduler.from_pretrained(tmp_path)
    assert reloaded.config.sampling_method == "adam_lm"
    assert reloaded.config.timeshift == 3.0 and reloaded.config.solver_order == 3


def test_scale_noise_is_the_linear_interpolant():
    scheduler = PixelGenScheduler()
    x, noise = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    t = torch.tensor([0.25, 1.0])
    out = scheduler.scale_noise(x, t, noise)
    torch.testing.assert_close(out[0], 0.25 * x[0] + 0.75 * noise[0])
    torch.testing.assert_close(out[1], x[1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sampling_method="dpm"), "Unknown sampling_method 'dpm'; accepted: heun, euler, adam_lm"),
        (dict(solver_order=5), r"solver_order must be an integer in \[1, 4\]"),
    ],
)
def test_bad_configuration_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PixelGenScheduler(**kwargs)


def test_bad_step_count_is_a_clear_error():
    with pytest.raises(ValueError, match="num_inference_steps must be a positive integer"):
        PixelGenScheduler().set_timesteps(0)


def test_order_follows_the_solver_chosen_for_the_run():
    scheduler = PixelGenScheduler(sampling_method="heun")
    assert scheduler.order == 2
    scheduler.set_timesteps(4, sampling_method="euler")
    assert scheduler.order == 1 and len(scheduler.timesteps) == 4
    assert scheduler.config.sampling_method == "heun"  # the override is for this run only


def test_adam_lm_started_mid_schedule_warms_up_with_the_velocities_it_has():
    scheduler = PixelGenScheduler(sampling_method="adam_lm", solver_order=2)
    scheduler.set_timesteps(10)
    scheduler.set_begin_index(5)
    x = torch.zeros(1, 3, 2, 2)
    out = scheduler.step(torch.ones_like(x), scheduler.timesteps[5], x).prev_sample
    dt = scheduler.grid[6] - scheduler.grid[5]
    torch.testing.assert_close(out, x + dt)  # first step from index 5 is Euler, not a truncated AB2
    second = scheduler.step(torch.ones_like(x), scheduler.timesteps[6], out).prev_sample
    torch.testing.assert_close(second, out + (scheduler.grid[7] - scheduler.grid[6]))  # AB2 of a constant field


def test_heun_cannot_start_at_a_corrector_evaluation():
    scheduler = PixelGenScheduler(sampling_method="heun")
    scheduler.set_timesteps(5)
    with pytest.raises(ValueError, match="begin_index must be even"):
        scheduler.set_begin_index(3)


def test_from_config_of_a_stock_config_and_back_keeps_the_shift():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = PixelGenScheduler(timeshift=2.5)
    assert scheduler.config.shift == scheduler.config.flow_shift == 2.5
    assert FlowMatchEulerDiscreteScheduler.from_config(scheduler.config).config.shift == 2.5
    assert PixelGenScheduler.from_config(FlowMatchEulerDiscreteScheduler(shift=3.0).config).config.timeshift == 3.0
    # An explicit timeshift wins over the stored copies, which follow it.
    overridden = PixelGenScheduler.from_config(scheduler.config, timeshift=4.0)
    assert overridden.config.timeshift == overridden.config.shift == overridden.config.flow_shift == 4.0


@pytest.mark.parametrize("timeshift", [1e308, 1e-300])
def test_a_shift_that_collapses_the_float32_grid_is_refused(timeshift):
    scheduler = PixelGenScheduler()
    with pytest.raises(ValueError, match=re.escape(f"timeshift={timeshift} with num_inference_steps=10")):
        scheduler.set_timesteps(10, timeshift=timeshift)
    with pytest.raises(ValueError, match=re.escape(f"timeshift={timeshift}")):
        PixelGenScheduler(timeshift=timeshift).set_timesteps(10)
