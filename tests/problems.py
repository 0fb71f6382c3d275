"""Shared test problems and helpers for the solver tests (``tests/node/``).

Each :class:`Problem` has a torch vector field, the same field in NumPy for SciPy, an initial
state and a time span. :func:`reference` solves it with SciPy's DOP853 at ``rtol = atol = 1e-12``
(cached), orders of magnitude tighter than any tolerance the tests check at; the linear problem
uses its exact solution (matrix exponential) instead.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

ADAPTIVE = ("adaptive_heun", "fehlberg2", "bosh3", "dopri5", "tsit5", "dopri8")
FIXED = ("euler", "midpoint", "heun2", "heun3", "rk4")
ALL_METHODS = FIXED + ADAPTIVE

# A damped rotation: y' = A y, eigenvalues -0.1 +- i.
LINEAR_A = np.array([[-0.1, -1.0], [1.0, -0.1]])


@dataclass(frozen=True)
class Problem:
    name: str
    torch_rhs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    numpy_rhs: Callable[[float, np.ndarray], np.ndarray]
    y0: tuple[float, ...]
    t0: float
    t1: float
    exact: Callable[[np.ndarray], np.ndarray] | None = None  # times [M] -> states [M, n]

    def func(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.torch_rhs(t, y)

    def y0_tensor(self, dtype=torch.float64) -> torch.Tensor:
        return torch.tensor(self.y0, dtype=dtype)

    def times(self, n: int, dtype=torch.float64, reverse: bool = False) -> torch.Tensor:
        t = torch.linspace(self.t0, self.t1, n, dtype=dtype)
        return t.flip(0) if reverse else t


def _linear_torch(t, y):
    a = torch.as_tensor(LINEAR_A, dtype=y.dtype, device=y.device)
    return a @ y


def _linear_exact(ts: np.ndarray, y0=(1.0, 0.5), t0=0.0) -> np.ndarray:
    # expm(A t) for A = [[a, -w], [w, a]] is exp(a t) * rotation(w t).
    a, w = -0.1, 1.0
    out = []
    for t in np.asarray(ts, dtype=np.float64):
        s = t - t0
        c, sn = math.cos(w * s), math.sin(w * s)
        m = math.exp(a * s) * np.array([[c, -sn], [sn, c]])
        out.append(m @ np.array(y0))
    return np.array(out)


LINEAR = Problem(
    "linear",
    _linear_torch,
    lambda t, y: LINEAR_A @ y,
    (1.0, 0.5),
    0.0,
    6.0,
    exact=_linear_exact,
)

VDP_MU = 1.0
VAN_DER_POL = Problem(
    "van_der_pol",
    lambda t, y: torch.stack([y[1], VDP_MU * (1 - y[0] ** 2) * y[1] - y[0]]),
    lambda t, y: np.array([y[1], VDP_MU * (1 - y[0] ** 2) * y[1] - y[0]]),
    (2.0, 0.0),
    0.0,
    6.0,
)

# Lotka-Volterra with alpha=1.5, beta=1, gamma=3, delta=1.
LOTKA_VOLTERRA = Problem(
    "lotka_volterra",
    lambda t, y: torch.stack([1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]]),
    lambda t, y: np.array([1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]]),
    (1.0, 1.0),
    0.0,
    6.0,
)

# A damped oscillator driven by cos(1.3 t) (explicit time dependence).
FORCED = Problem(
    "forced_oscillator",
    lambda t, y: torch.stack([y[1], -y[0] - 0.2 * y[1] + torch.cos(1.3 * t).to(y.dtype)]),
    lambda t, y: np.array([y[1], -y[0] - 0.2 * y[1] + math.cos(1.3 * t)]),
    (0.5, 0.0),
    0.0,
    6.0,
)

PROBLEMS = (LINEAR, VAN_DER_POL, LOTKA_VOLTERRA, FORCED)
PROBLEM_IDS = tuple(p.name for p in PROBLEMS)


@functools.lru_cache(maxsize=256)
def _reference_cached(problem: Problem, times: tuple[float, ...]) -> np.ndarray:
    from scipy.integrate import solve_ivp

    if problem.exact is not None:
        return problem.exact(np.array(times))
    t_start = times[0]
    sol = solve_ivp(
        problem.numpy_rhs,
        (t_start, times[-1]),
        np.array(problem.y0 if t_start == problem.t0 else _start_state(problem, t_start)),
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
        dense_output=True,
    )
    if not sol.success:  # pragma: no cover - the reference itself failing is a test bug
        raise RuntimeError(sol.message)
    return sol.sol(np.array(times)).T


def _start_state(problem: Problem, t_start: float) -> np.ndarray:
    """The reference state at ``t_start`` (for solves that do not start at ``problem.t0``)."""
    return reference(problem, [problem.t0, t_start])[-1]


def reference(problem: Problem, times) -> np.ndarray:
    """Reference states ``[len(times), n]`` at ``times`` (from ``problem.t0``'s initial state
    when ``times[0] == problem.t0``; any monotonic order)."""
    if isinstance(times, torch.Tensor):
        times = times.detach().cpu().double().tolist()
    return _reference_cached(problem, tuple(float(x) for x in times))


def max_error(ys: torch.Tensor, ref: np.ndarray) -> float:
    return float(np.max(np.abs(ys.detach().cpu().double().numpy() - ref)))


class CountingFunc:
    """Wraps a vector field and counts its calls (and remembers the times it was called at)."""

    def __init__(self, f: Callable) -> None:
        self.f = f
        self.n = 0
        self.times: list[float] = []
        self.time_dtypes: set[torch.dtype] = set()

    def __call__(self, t, y):
        self.n += 1
        self.times.append(float(t.detach()))
        self.time_dtypes.add(t.dtype)
        return self.f(t, y)


class RecordingFunc(CountingFunc):
    """Also records torchdiffeq-style step callbacks ``(t0, y0, dt)``."""

    def __init__(self, f: Callable) -> None:
        super().__init__(f)
        self.steps: list[tuple[float, float]] = []
        self.accepted: list[tuple[float, object, float]] = []
        self.rejected: list[tuple[float, float]] = []

    def callback_step(self, t0, y0, dt):
        self.steps.append((float(t0), float(dt)))

    def callback_accept_step(self, t0, y0, dt):
        if isinstance(y0, torch.Tensor):
            y0 = y0.detach().clone()
        else:
            y0 = tuple(y.detach().clone() for y in y0)
        self.accepted.append((float(t0), y0, float(dt)))

    def callback_reject_step(self, t0, y0, dt):
        self.rejected.append((float(t0), float(dt)))


def frozen_steps(h: float, step_t=()) -> dict:
    """Keyword arguments that make an adaptive method step by exactly ``h`` (onto ``step_t``).

    ``min_step = max_step = first_step = h`` pins every step, and tolerances far above any
    error estimate let every step pass, so the adaptive loop and the method's own dense output
    run on a step sequence that does not depend on ``y0``, ``t`` or the parameters. The solve is
    then a smooth function of its inputs and finite differences match autograd to round-off.

    Why: finite differences of an adaptive solve move its steps too, and the outputs
    (interpolated ones most) move with them by a fraction of the tolerance that autograd does
    not see by design (steps are never differentiated). Divided by ``eps`` it reaches gradcheck's
    tolerance (dopri8 at 1e-10: 2e-6 at ``eps = 1e-6``), and how far depends on rounding, so such
    a gradcheck passed on Intel and failed on AMD. Use this for every finite-difference check.
    """
    return dict(rtol=1e6, atol=1e6,
                options=dict(first_step=h, min_step=h, max_step=h, step_t=list(step_t)))


# Event problems: free fall with the gravity a parameter, and a level crossing whose height is a
# parameter of the event function, so that gradients reach both.
G = 9.81


def scalar(value, grad: bool = False, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype, requires_grad=grad)


class DampedPendulum(torch.nn.Module):
    """``(theta, omega)' = (omega, -sin(theta) - k omega)``; batched over leading dimensions."""

    def __init__(self, k: float = 0.3) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(scalar(k))

    def forward(self, t, y):
        theta, omega = y[..., 0], y[..., 1]
        return torch.stack([omega, -torch.sin(theta) - self.k * omega], dim=-1)


class FreeFall(torch.nn.Module):
    """``(x, v)' = (v, -g)`` with ``g`` a parameter; works on ``[2]`` and ``[batch, 2]`` states."""

    def __init__(self, g: float = G) -> None:
        super().__init__()
        self.g = torch.nn.Parameter(scalar(g))

    def forward(self, t, y):
        v = y[..., 1]
        return torch.stack([v, -self.g * torch.ones_like(v)], dim=-1)


class Level(torch.nn.Module):
    """Event ``x - c`` with the level ``c`` a parameter of the event function."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = torch.nn.Parameter(scalar(c))

    def forward(self, t, y):
        return y[..., 0] - self.c


class Decay(torch.nn.Module):
    """``dy/dt = -y`` as a module (callbacks and adjoint parameters can hang on it)."""

    def forward(self, t, y):
        return -y


def progress_fields(err: str) -> str:
    """The last drawing of a node progress bar in captured stderr (tqdm redraws with carriage
    returns)."""
    drawn = [s for s in re.split(r"[\r\n]", err) if "nfe=" in s]
    assert drawn, f"no progress bar with fields on stderr: {err!r}"
    return drawn[-1]
