"""Stiff test problems with reference end values, for ``node`` (torch) and SciPy (NumPy).

Each :class:`StiffProblem` gives the vector field twice, written once per array library with the
same arithmetic: ``torch_f(t, y)`` for a state ``y`` of shape ``[..., n]`` (a batch of
independent problems in the leading dimensions; ROBER's rate constants may be tensors of the
batch's shape), ``numpy_f(t, y)`` for SciPy's ``solve_ivp`` (shape ``[n]``), and the analytic
Jacobians ``torch_jac(t, y) -> [..., n, n]`` and ``numpy_jac(t, y) -> [n, n]``.

Sources (E. Hairer, G. Wanner, "Solving Ordinary Differential Equations II", 2nd ed., sec. IV.10,
and F. Mazzia, C. Magherini, "Test Set for IVP Solvers", release 2.4, Univ. of Bari, 2008):

* ROBER (Robertson's chemical kinetics), k = (0.04, 3e7, 1e4), y0 = (1, 0, 0). Reference at
  t = 1e11 from the test set. At t = 1e5 the test set gives none; the value here was computed
  with SciPy's Radau at rtol = 1e-12, atol = 1e-6 x the benchmark's, analytic Jacobian; BDF
  and LSODA at the same tolerances agree to 1e-10 relative (``python -m bench.stiff_problems``
  recomputes all three).
* HIRES (plant physiology, 8 species) on [0, 321.8122], reference from the test set.
* OREGO (the Oregonator, Field-Noyes) on [0, 360], reference from the test set.
* Van der Pol with mu = 1000 in Lienard-free form (``x' = v, v' = mu (1 - x^2) v - x``, as
  MATLAB's ``vdp1000``), y0 = (2, 0), on [0, 3000]: not in the test set in this scaling (the test
  set's VDPOL is the rescaled eps = 1e-6 form); the reference was computed like ROBER's at 1e5
  (LSODA at the same tolerances agrees to 2e-9 relative; BDF fails at rtol 1e-12 there).

The error reported by the benchmark is the relative error at the end, with the absolute tolerance
as a floor: see :func:`relative_error`. The test set's references are reproduced by SciPy's Radau
at rtol 1e-12 to 3e-10 (ROBER at 1e11), 3e-11 (HIRES) (``tests/node/test_stiff_problems.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

ROBER_K = (0.04, 3e7, 1e4)


@dataclass(frozen=True)
class StiffProblem:
    """An autonomous stiff initial-value problem with a reference state at ``t_end``.

    Attributes:
        name: label in tables.
        y0: initial state (floats).
        t_end: the end of the span (it starts at 0).
        reference: the state at ``t_end``.
        reference_source: where ``reference`` comes from.
        rtol, atol: the benchmark's tolerances (``atol`` a float or one per component).
        torch_f, numpy_f, torch_jac, numpy_jac: the vector field and its Jacobian.
    """

    name: str
    y0: tuple[float, ...]
    t_end: float
    reference: tuple[float, ...]
    reference_source: str
    rtol: float
    atol: float | tuple[float, ...]
    torch_f: Callable
    numpy_f: Callable
    torch_jac: Callable
    numpy_jac: Callable
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.y0)

    def y0_tensor(self, dtype=torch.float64) -> torch.Tensor:
        return torch.tensor(self.y0, dtype=dtype)


# --------------------------------------------------------------------------------------------
# ROBER


def rober_torch(k=ROBER_K) -> Callable:
    """ROBER's field for ``y`` of shape ``[..., 3]``; each rate constant a float or a tensor
    broadcasting against ``y[..., 0]`` (a batch of problems with different constants)."""
    k1, k2, k3 = k

    def f(t, y):
        y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
        r1 = k1 * y1
        r2 = k2 * y2 * y2
        r3 = k3 * y2 * y3
        return torch.stack((-r1 + r3, r1 - r2 - r3, r2), dim=-1)

    return f


def rober_torch_jac(k=ROBER_K) -> Callable:
    k1, k2, k3 = k

    def jac(t, y):
        y2, y3 = y[..., 1], y[..., 2]
        zero = torch.zeros_like(y2)
        one = torch.ones_like(y2)
        rows = (
            (-k1 * one, k3 * y3, k3 * y2),
            (k1 * one, -2.0 * k2 * y2 - k3 * y3, -k3 * y2),
            (zero, 2.0 * k2 * y2, zero),
        )
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    return jac


def rober_numpy(k=ROBER_K) -> Callable:
    k1, k2, k3 = k

    def f(t, y):
        y1, y2, y3 = y
        r1, r2, r3 = k1 * y1, k2 * y2 * y2, k3 * y2 * y3
        return np.array([-r1 + r3, r1 - r2 - r3, r2])

    return f


def rober_numpy_jac(k=ROBER_K) -> Callable:
    k1, k2, k3 = k

    def jac(t, y):
        _, y2, y3 = y
        return np.array([[-k1, k3 * y3, k3 * y2],
                         [k1, -2.0 * k2 * y2 - k3 * y3, -k3 * y2],
                         [0.0, 2.0 * k2 * y2, 0.0]])

    return jac


def rober(t_end: float, reference, source: str) -> StiffProblem:
    return StiffProblem(
        name=f"ROBER [0, {t_end:g}]", y0=(1.0, 0.0, 0.0), t_end=t_end, reference=reference,
        reference_source=source, rtol=1e-6, atol=(1e-8, 1e-12, 1e-8),
        torch_f=rober_torch(), numpy_f=rober_numpy(), torch_jac=rober_torch_jac(),
        numpy_jac=rober_numpy_jac(),
        description="Robertson's kinetics, k = (0.04, 3e7, 1e4), y0 = (1, 0, 0)")


# The test set's value at t = 1e11.
ROBER_1E11 = (2.083340149701255e-8, 8.333360770334713e-14, 0.9999999791665050)
# Radau at rtol 1e-12 (module docstring, `python -m bench.stiff_problems`).
ROBER_1E5 = (1.7865921142100175e-02, 7.2747514684366167e-08, 9.8213400611038471e-01)


# --------------------------------------------------------------------------------------------
# HIRES


def _hires_rates(y1, y2, y3, y4, y5, y6, y7, y8) -> tuple:
    """HIRES's right-hand side, term by term (the same expressions for torch and NumPy)."""
    r = 280.0 * y6 * y8
    return (
        -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
        1.71 * y1 - 8.75 * y2,
        -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
        8.32 * y2 + 1.71 * y3 - 1.12 * y4,
        -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
        -r + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
        r - 1.81 * y7,
        -r + 1.81 * y7,
    )


def hires_torch(t, y):
    return torch.stack(_hires_rates(*y.unbind(-1)), dim=-1)


def hires_numpy(t, y):
    return np.array(_hires_rates(*y))


_HIRES_LINEAR = np.array([
    [-1.71, 0.43, 8.32, 0, 0, 0, 0, 0],
    [1.71, -8.75, 0, 0, 0, 0, 0, 0],
    [0, 0, -10.03, 0.43, 0.035, 0, 0, 0],
    [0, 8.32, 1.71, -1.12, 0, 0, 0, 0],
    [0, 0, 0, 0, -1.745, 0.43, 0.43, 0],
    [0, 0, 0, 0.69, 1.71, -0.43, 0.69, 0],
    [0, 0, 0, 0, 0, 0, -1.81, 0],
    [0, 0, 0, 0, 0, 0, 1.81, 0],
])


def hires_numpy_jac(t, y):
    jac = _HIRES_LINEAR.copy()
    # d(280 y6 y8) = 280 (y8 dy6 + y6 dy8), entering rows 6, 7, 8 with signs -, +, -.
    for row, sign in ((5, -1.0), (6, 1.0), (7, -1.0)):
        jac[row, 5] += sign * 280.0 * y[7]
        jac[row, 7] += sign * 280.0 * y[5]
    return jac


def hires_torch_jac(t, y):
    base = torch.as_tensor(_HIRES_LINEAR, dtype=y.dtype, device=y.device)
    jac = base.expand(*y.shape[:-1], 8, 8).clone()
    for row, sign in ((5, -1.0), (6, 1.0), (7, -1.0)):
        jac[..., row, 5] += sign * 280.0 * y[..., 7]
        jac[..., row, 7] += sign * 280.0 * y[..., 5]
    return jac


HIRES_REFERENCE = (
    0.7371312573325668e-3, 0.1442485726316185e-3, 0.5888729740967575e-4, 0.1175651343283149e-2,
    0.2386356198831331e-2, 0.6238968252742796e-2, 0.2849998395185769e-2, 0.2850001604814231e-2,
)


# --------------------------------------------------------------------------------------------
# OREGO

_S, _W, _Q = 77.27, 0.161, 8.375e-6


def orego_torch(t, y):
    y1, y2, y3 = y.unbind(-1)
    return torch.stack((
        _S * (y2 - y1 * y2 + y1 - _Q * y1 * y1),
        (-y2 - y1 * y2 + y3) / _S,
        _W * (y1 - y3),
    ), dim=-1)


def orego_numpy(t, y):
    y1, y2, y3 = y
    return np.array([
        _S * (y2 - y1 * y2 + y1 - _Q * y1 * y1),
        (-y2 - y1 * y2 + y3) / _S,
        _W * (y1 - y3),
    ])


def orego_numpy_jac(t, y):
    y1, y2, _ = y
    return np.array([
        [_S * (1.0 - y2 - 2.0 * _Q * y1), _S * (1.0 - y1), 0.0],
        [-y2 / _S, -(1.0 + y1) / _S, 1.0 / _S],
        [_W, 0.0, -_W],
    ])


def orego_torch_jac(t, y):
    y1, y2 = y[..., 0], y[..., 1]
    one = torch.ones_like(y1)
    zero = torch.zeros_like(y1)
    rows = (
        (_S * (1.0 - y2 - 2.0 * _Q * y1), _S * (1.0 - y1), zero),
        (-y2 / _S, -(1.0 + y1) / _S, one / _S),
        (_W * one, zero, -_W * one),
    )
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


OREGO_REFERENCE = (0.1000814870318523e1, 0.1228178521549917e4, 0.1320554942846706e3)


# --------------------------------------------------------------------------------------------
# Van der Pol, mu = 1000

VDP_MU = 1000.0


def vdp_torch(t, y):
    x, v = y[..., 0], y[..., 1]
    return torch.stack((v, VDP_MU * (1.0 - x * x) * v - x), dim=-1)


def vdp_numpy(t, y):
    x, v = y
    return np.array([v, VDP_MU * (1.0 - x * x) * v - x])


def vdp_numpy_jac(t, y):
    x, v = y
    return np.array([[0.0, 1.0], [-2.0 * VDP_MU * x * v - 1.0, VDP_MU * (1.0 - x * x)]])


def vdp_torch_jac(t, y):
    x, v = y[..., 0], y[..., 1]
    rows = ((torch.zeros_like(x), torch.ones_like(x)),
            (-2.0 * VDP_MU * x * v - 1.0, VDP_MU * (1.0 - x * x)))
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


# Radau at rtol 1e-12 (module docstring, `python -m bench.stiff_problems`).
VDP_REFERENCE = (-1.5106069367598536e00, 1.1783800006993674e-03)

TEST_SET = 'Mazzia & Magherini, "Test Set for IVP Solvers", release 2.4 (2008)'
COMPUTED = "SciPy Radau, rtol 1e-12, atol 1e-6 x the benchmark's, analytic Jacobian (LSODA agrees)"


def problems() -> list[StiffProblem]:
    """The benchmark's problems, in table order."""
    return [
        rober(1e5, ROBER_1E5, COMPUTED),
        rober(1e11, ROBER_1E11, TEST_SET),
        StiffProblem(
            name="Van der Pol mu=1000", y0=(2.0, 0.0), t_end=3000.0, reference=VDP_REFERENCE,
            reference_source=COMPUTED, rtol=1e-6, atol=1e-6, torch_f=vdp_torch,
            numpy_f=vdp_numpy, torch_jac=vdp_torch_jac, numpy_jac=vdp_numpy_jac,
            description="x' = v, v' = 1000 (1 - x^2) v - x, y0 = (2, 0)"),
        StiffProblem(
            name="HIRES", y0=(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057), t_end=321.8122,
            reference=HIRES_REFERENCE, reference_source=TEST_SET, rtol=1e-6, atol=1e-10,
            torch_f=hires_torch, numpy_f=hires_numpy, torch_jac=hires_torch_jac,
            numpy_jac=hires_numpy_jac, description="8 species, y0 = (1, 0, ..., 0, 0.0057)"),
        StiffProblem(
            name="OREGO", y0=(1.0, 2.0, 3.0), t_end=360.0, reference=OREGO_REFERENCE,
            reference_source=TEST_SET, rtol=1e-6, atol=1e-6, torch_f=orego_torch,
            numpy_f=orego_numpy, torch_jac=orego_torch_jac, numpy_jac=orego_numpy_jac,
            description="the Oregonator, y0 = (1, 2, 3)"),
    ]


def relative_error(y, reference, atol=0.0) -> float:
    """``max_i |y_i - ref_i| / (|ref_i| + atol_i)``: the relative error, with the absolute
    tolerance as a floor so that a component far below it (ROBER's y2 ~ 1e-13 at 1e11) is judged
    on the scale the solver was asked to resolve."""
    y = np.asarray(y, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    floor = np.broadcast_to(np.asarray(atol, dtype=np.float64), ref.shape)
    return float(np.max(np.abs(y - ref) / (np.abs(ref) + floor)))


def _recompute_references(names=None) -> None:
    """Print each problem's end state by Radau, BDF and LSODA at rtol 1e-12, atol 1e-6 x the
    benchmark's, with the analytic Jacobian."""
    from scipy.integrate import solve_ivp

    for p in problems():
        if names and p.name not in names:
            continue
        print(p.name, "reference:", p.reference_source, flush=True)
        atol = 1e-6 * np.asarray(p.atol, dtype=np.float64)
        for method in ("Radau", "BDF", "LSODA"):
            sol = solve_ivp(p.numpy_f, (0.0, p.t_end), p.y0, method=method, rtol=1e-12,
                            atol=atol, jac=p.numpy_jac)
            y = sol.y[:, -1]
            print(f"  {method:6s} {sol.status} " + ", ".join(f"{v:.16e}" for v in y),
                  f"rel. to reference {relative_error(y, p.reference):.2e}", flush=True)


if __name__ == "__main__":
    import sys

    _recompute_references(sys.argv[1:])
