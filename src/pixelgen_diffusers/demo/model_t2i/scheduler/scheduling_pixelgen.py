# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Flow-matching ODE solvers of PixelGen (arXiv 2602.02493): Heun, Euler and variable-step Adams-Bashforth.

Self-contained on purpose (torch and diffusers only), so it can be copied verbatim into a model folder.

Conventions are PixelGen's, not diffusers' sigma convention: time t runs from 0 (pure noise) to 1 (clean image),
x_t = t * x + (1 - t) * noise, and the network predicts the clean image x. Everything here runs in float32,
whatever the model dtype, exactly as the upstream samplers do.
"""

import math
import numbers
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput


SAMPLING_METHODS = ("heun", "euler", "adam_lm")


# Copied from pixelgen_diffusers.utils.check_number
def check_number(name, value, *, integer=False, minimum=None, maximum=None, exclusive_minimum=False):
    """Returns `value` if it is a finite real number (an integer, not a bool, when `integer`) in
    [`minimum`, `maximum`] (or (`minimum`, ...] with `exclusive_minimum`); otherwise raises a ValueError naming
    `name`, the value and the accepted range. NaN and infinities are never accepted: they turn images black."""
    kind = "an integer" if integer else "a finite number"
    if integer and minimum == 1 and maximum is None:
        accepted = "a positive integer"
    elif minimum is not None and maximum is not None:
        accepted = f"{kind} in {'(' if exclusive_minimum else '['}{minimum}, {maximum}]"
    elif minimum is not None:
        accepted = f"{kind} {'>' if exclusive_minimum else '>='} {minimum}"
    elif maximum is not None:
        accepted = f"{kind} <= {maximum}"
    else:
        accepted = kind
    wanted = numbers.Integral if integer else numbers.Real
    valid = isinstance(value, wanted) and not isinstance(value, bool) and math.isfinite(value)
    if valid and minimum is not None:
        valid = value > minimum if exclusive_minimum else value >= minimum
    if valid and maximum is not None:
        valid = value <= maximum
    if not valid:
        raise ValueError(f"{name} must be {accepted}, got {value!r}.")
    return value


def x_to_velocity(x_hat: torch.Tensor, sample: torch.Tensor, t: torch.Tensor, t_eps: float = 0.05) -> torch.Tensor:
    """Velocity implied by a clean-image prediction, v = (x_hat - x_t) / max(1 - t, t_eps), in float32; the clamp
    keeps the conversion finite near t = 1. Sampling and training both use it."""
    t = torch.as_tensor(t, dtype=torch.float32, device=sample.device).reshape(-1, *([1] * (sample.ndim - 1)))
    return (x_hat.float() - sample.float()) / (1.0 - t).clamp_min(t_eps)


@dataclass
class PixelGenSchedulerOutput(BaseOutput):
    prev_sample: torch.Tensor


def lagrange_integral_coefficients(nodes: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Weights w_j with sum_j w_j v(nodes_j) ~ mean of v over [start, end] (the Lagrange interpolant's integral,
    normalised to sum to one). Computed in float32 in the monomial form used upstream, whose rounding the samples
    depend on at orders 3 and 4."""
    order = len(nodes)
    if order == 1:
        return torch.ones(1, dtype=torch.float32)
    integrals = []
    for j in range(order):
        others = [nodes[k] for k in range(order) if k != j]
        denominator = torch.ones((), dtype=torch.float32)
        for other in others:
            denominator = denominator * (nodes[j] - other)
        if order == 2:
            # prod (s - t_k) = s - t_other: integrate in shifted form.
            integrals.append(0.5 / denominator * ((end - others[0]) ** 2 - (start - others[0]) ** 2))
        else:
            integral = _monomial_antiderivative(others, end) - _monomial_antiderivative(others, start)
            integrals.append(integral / denominator)
    total = integrals[0]
    for integral in integrals[1:]:  # left to right, as upstream (torch.sum may reorder the additions)
        total = total + integral
    return torch.stack(integrals) / total


def _monomial_antiderivative(roots: list[torch.Tensor], s: torch.Tensor) -> torch.Tensor:
    """F(s) = integral of prod_k (s - roots_k) ds, expanded in powers of s (two or three roots)."""
    symmetric = _elementary_symmetric(roots)
    degree = len(roots)
    value = torch.zeros((), dtype=torch.float32)
    for m in range(degree + 1):
        power = degree - m + 1
        value = value + (-1) ** m * (1 / power) * symmetric[m] * s**power
    return value


def _elementary_symmetric(roots: list[torch.Tensor]) -> list[torch.Tensor]:
    """e_0..e_n of two or three roots, summed in upstream's order: order-4 weights are ill-conditioned in float32,
    so the summation order is visible in the samples (~1e-4)."""
    one = torch.ones((), dtype=torch.float32)
    if len(roots) == 2:
        a, b = roots
        return [one, a + b, a * b]
    a, b, c = roots
    return [one, a + b + c, b * c + a * b + a * c, a * b * c]


class PixelGenScheduler(SchedulerMixin, ConfigMixin):
    """
    PixelGen's samplers as a diffusers scheduler. The model is called once per entry of `timesteps`; the pipeline
    converts its x-prediction with `convert_model_output`, applies guidance, and hands the velocity to `step`.

    Args:
        sampling_method (`str`): `"heun"` (2N-1 evaluations, final step Euler), `"euler"` or `"adam_lm"`
            (variable-step Adams-Bashforth on the guided velocity).
        timeshift (`float`): time shift s, t = u / (u + s (1 - u)); s > 1 spends more steps near the noise.
        solver_order (`int`): Adams-Bashforth order (1-4) for `adam_lm`.
        t_eps (`float`): lower clamp of 1 - t in the x-to-velocity conversion.
        num_train_timesteps (`int`): kept for diffusers compatibility; PixelGen time is continuous.
        shift, flow_shift (`float`, *optional*): copies of `timeshift` under the names stock flow-matching schedulers
            read (`FlowMatch*` read `shift`, UniPC / DPM-Solver `flow_shift`), so that diffusers' idiom
            `FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)` keeps the recipe's shift. An
            explicit `timeshift` wins over them; without one, `shift` (or `flow_shift`) sets the timeshift, as when
            a stock scheduler's config is loaded with `PixelGenScheduler.from_config`.
    """

    _compatibles = []

    @register_to_config
    def __init__(
        self,
        sampling_method: str = "heun",
        timeshift: float = 1.0,
        solver_order: int = 2,
        t_eps: float = 0.05,
        num_train_timesteps: int = 1000,
        shift: float | None = None,
        flow_shift: float | None = None,
    ):
        defaults = set(self.config.get("_use_default_values", []))
        copies = {name: value for name, value in (("shift", shift), ("flow_shift", flow_shift)) if value is not None}
        if "timeshift" in defaults and copies:  # e.g. from_config of a stock scheduler's config: its shift is ours
            if len(set(copies.values())) > 1:
                raise ValueError(f"shift and flow_shift differ ({shift} vs {flow_shift}): pass timeshift instead.")
            timeshift = next(iter(copies.values()))
        self.check_options(sampling_method, timeshift, solver_order)
        check_number("t_eps", t_eps, minimum=0, maximum=1, exclusive_minimum=True)
        check_number("num_train_timesteps", num_train_timesteps, integer=True, minimum=1)
        # The copies are real config entries (not "defaults", which from_config drops when it builds another class).
        defaults -= {"timeshift", "shift", "flow_shift"}
        self.register_to_config(
            timeshift=timeshift, shift=timeshift, flow_shift=timeshift, _use_default_values=sorted(defaults)
        )
        self.sampling_method = sampling_method
        self.solver_order = solver_order
        self.timesteps = None
        self.num_inference_steps = None
        self._step_index = None
        self._begin_index = None

    @staticmethod
    def check_options(
        sampling_method: str | None = None, timeshift: float | None = None, solver_order: int | None = None
    ) -> None:
        """Raises a ValueError naming the first invalid option; None means "the config's" and is not checked. The
        pipelines call it before any work."""
        if sampling_method is not None and sampling_method not in SAMPLING_METHODS:
            raise ValueError(f"Unknown sampling_method {sampling_method!r}; accepted: {', '.join(SAMPLING_METHODS)}.")
        if timeshift is not None:
            check_number("timeshift", timeshift, minimum=0, exclusive_minimum=True)
        if solver_order is not None:
            check_number("solver_order", solver_order, integer=True, minimum=1, maximum=4)

    @property
    def order(self) -> int:
        """Model evaluations per step (diffusers' meaning), so that progress bars count steps, not evaluations."""
        return 2 if self.sampling_method == "heun" else 1

    @property
    def step_index(self) -> int | None:
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at evaluation `begin_index` (e.g. image-to-image); Heun must start at a step's first evaluation."""
        if self.sampling_method == "heun" and begin_index % 2:
            raise ValueError(f"Heun evaluations come in pairs: begin_index must be even, got {begin_index}.")
        self._begin_index = begin_index

    @staticmethod
    def time_grid(num_inference_steps: int, timeshift: float) -> torch.Tensor:
        """The N + 1 shifted times from 0 to 1, in float32: u = [linspace(0, 1 - 1/N, N), 1]."""
        u = torch.cat([torch.linspace(0.0, 1.0 - 1.0 / num_inference_steps, num_inference_steps), torch.ones(1)])
        return u / (u + (1 - u) * timeshift)

    def set_timesteps(
        self,
        num_inference_steps: int,
        device: str | torch.device | None = None,
        sampling_method: str | None = None,
        timeshift: float | None = None,
        solver_order: int | None = None,
    ) -> None:
        """Builds the evaluation schedule; the optional arguments override the config for this run only."""
        check_number("num_inference_steps", num_inference_steps, integer=True, minimum=1)
        self.check_options(sampling_method, timeshift, solver_order)
        sampling_method = sampling_method if sampling_method is not None else self.config.sampling_method
        solver_order = solver_order if solver_order is not None else self.config.solver_order
        timeshift = timeshift if timeshift is not None else self.config.timeshift

        self.sampling_method, self.solver_order = sampling_method, solver_order
        grid = self.time_grid(num_inference_steps, timeshift)
        if not (torch.isfinite(grid).all() and (grid.diff() > 0).all()):
            # A huge or tiny shift (1e308, 1e-300) collapses the float32 grid: zero-length steps, or NaN times.
            raise ValueError(
                f"timeshift={timeshift} with num_inference_steps={num_inference_steps} gives a float32 time grid with"
                " repeated or non-finite times (steps of zero length); use a timeshift that keeps every step, e.g."
                " between 0.001 and 1000."
            )
        self.num_inference_steps = num_inference_steps
        self.grid = grid
        if sampling_method == "heun":
            # Evaluation j belongs to step j // 2: predictor at t_i (even j) and corrector at t_{i+1} (odd j) for
            # i < N-1, then one Euler step from t_{N-1}.
            evaluations = torch.arange(2 * num_inference_steps - 1)
            timesteps = self.grid[(evaluations + 1) // 2]
            # Both evaluations of a step take their guidance decision at the step's start.
            self.interval_timesteps = self.grid[evaluations // 2]
        elif sampling_method == "euler":
            timesteps = self.interval_timesteps = self.grid[:-1]
        else:
            # Upstream advances time by accumulating the grid's differences in float32, and calls the network
            # with (and tests guidance on) the accumulated value.
            timesteps = torch.zeros(num_inference_steps, dtype=torch.float32)
            current = torch.zeros((), dtype=torch.float32)
            for i in range(num_inference_steps):
                timesteps[i] = current
                current = current + (self.grid[i + 1] - self.grid[i])
            self.interval_timesteps = timesteps
            self.adams_coefficients = [self._adams_coefficients(i, solver_order) for i in range(num_inference_steps)]
        self.timesteps = timesteps.to(device)
        self._step_index = None
        self._begin_index = None
        self._history = []
        self._predictor_state = None

    def _adams_coefficients(self, step: int, order: int) -> torch.Tensor:
        """Weights of the last min(order, step + 1) velocities for the step from grid[step] to grid[step + 1]."""
        nodes = self.grid[max(0, step + 1 - order) : step + 1]
        return lagrange_integral_coefficients(nodes, self.grid[step], self.grid[step + 1])

    def guidance_mask(self, interval_min: float, interval_max: float) -> list[bool]:
        """Per evaluation: whether guidance applies. Heun/Euler guide when min < t <= max, adam_lm when
        min < t < max; compared in float32 as upstream does (float32(0.1) > 0.1 is False)."""
        check_number("guidance_interval_min", interval_min)
        check_number("guidance_interval_max", interval_max)
        t = self.interval_timesteps
        low = torch.tensor(interval_min, dtype=torch.float32)
        high = torch.tensor(interval_max, dtype=torch.float32)
        upper = t < high if self.sampling_method == "adam_lm" else t <= high
        return ((t > low) & upper).tolist()

    def convert_model_output(self, model_output: torch.Tensor, timestep: torch.Tensor, sample: torch.Tensor):
        """x-prediction to velocity, v = (x_hat - x_t) / max(1 - t, t_eps), in float32."""
        return x_to_velocity(model_output, sample, timestep, self.config.t_eps)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | float | None = None,
        sample: torch.Tensor = None,
        return_dict: bool = True,
    ) -> PixelGenSchedulerOutput | tuple[torch.Tensor]:
        """Advances the sample given the (guided) velocity at the current evaluation. `timestep` is accepted for
        diffusers compatibility; the scheduler tracks its position itself."""
        if self.timesteps is None:
            raise ValueError("Call `set_timesteps` before `step`.")
        if self._step_index is None:
            self._step_index = self._begin_index or 0
        if self._step_index >= len(self.timesteps):
            raise IndexError(f"All {len(self.timesteps)} evaluations of this schedule have been stepped already.")
        velocity = model_output.float()
        sample = sample.float()
        step = self._step_index // 2 if self.sampling_method == "heun" else self._step_index
        dt = self.grid[step + 1] - self.grid[step]

        if self.sampling_method == "heun":
            if self._predictor_state is not None:  # corrector: average the two slopes from the step's start
                start_sample, start_velocity = self._predictor_state
                prev_sample = start_sample + (start_velocity + velocity) / 2 * dt
                self._predictor_state = None
            else:
                prev_sample = sample + velocity * dt
                if step < self.num_inference_steps - 1:
                    self._predictor_state = (sample, velocity)
        elif self.sampling_method == "euler":
            prev_sample = sample + velocity * dt
        else:
            self._history = [*self._history, velocity][-self.solver_order :]
            coefficients = self.adams_coefficients[step]
            if len(self._history) < len(coefficients):  # started mid-schedule: warm up with the velocities we have
                coefficients = self._adams_coefficients(step, len(self._history))
            effective_velocity = torch.zeros_like(velocity)
            for coefficient, past_velocity in zip(coefficients, self._history[-len(coefficients) :]):
                effective_velocity += coefficient * past_velocity
            prev_sample = sample + effective_velocity * dt

        self._step_index += 1
        if not return_dict:
            return (prev_sample,)
        return PixelGenSchedulerOutput(prev_sample=prev_sample)

    def scale_noise(self, sample: torch.Tensor, timestep: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process x_t = t * x + (1 - t) * noise (t = 0 is noise), for training and image-to-image."""
        t = torch.as_tensor(timestep, dtype=sample.dtype, device=sample.device).reshape(-1, *([1] * (sample.ndim - 1)))
        return t * sample + (1 - t) * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps
