"""Benchmark problems, written once and used by every library.

Every vector field is a ``torch.nn.Module`` with ``forward(t, y)`` for a state ``y`` of shape
``[batch, features]`` (torchode's required layout; node and torchdiffeq accept any shape). All
fields are autonomous, so the time argument (a 0-d tensor for node/torchdiffeq, a ``[batch]``
tensor for torchode) is ignored and the three libraries see exactly the same function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

VDP_SEED = 1234
MLP_SEED = 4321
LINEAR_SEED = 2468


@dataclass
class Problem:
    """An initial value problem for a batch of independent samples.

    Attributes:
        name: short label used in tables.
        func: the vector field ``func(t, y) -> dy/dt``.
        y0: ``[batch, features]`` initial states.
        t: 1-D output times (``t[0]`` is the initial time), in ``y0``'s dtype.
        reference: optional callable returning the true solution at ``t`` as a
            ``[len(t), batch, features]`` float64 tensor (computed lazily, cached).
        reference_name: how the reference is computed (for the README).
        description: one line for the README.
    """

    name: str
    func: nn.Module
    y0: torch.Tensor
    t: torch.Tensor
    reference: Callable[[], torch.Tensor] | None = None
    reference_name: str = ""
    description: str = ""

    @property
    def batch(self) -> int:
        return self.y0.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.y0.dtype


def _cached(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    return lru_cache(maxsize=1)(fn)


# --------------------------------------------------------------------------------------------
# Van der Pol


class VanDerPol(nn.Module):
    """``x' = v,  v' = mu (1 - x^2) v - x`` for a batch of states ``[x, v]``."""

    def __init__(self, mu: float = 1.0) -> None:
        super().__init__()
        self.mu = mu

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, v = y[:, 0], y[:, 1]
        return torch.stack((v, self.mu * (1.0 - x * x) * v - x), dim=1)


REFERENCE_TOL = 1e-13


@lru_cache(maxsize=8)
def _vdp_reference_scipy(mu: float, y0_key: tuple, t_key: tuple, per_sample: bool,
                         tol: float) -> torch.Tensor:
    """SciPy DOP853 in float64: the whole batch as one system (vectorised right-hand side), or
    one solve per sample (about 40x slower)."""
    import numpy as np
    from scipy.integrate import solve_ivp

    ts = np.asarray(t_key, dtype=np.float64)
    y0 = np.asarray(y0_key, dtype=np.float64)  # [batch, 2]
    if not per_sample:
        def rhs_batch(_t, y):
            x, v = y[0::2], y[1::2]
            out = np.empty_like(y)
            out[0::2] = v
            out[1::2] = mu * (1.0 - x * x) * v - x
            return out

        sol = solve_ivp(rhs_batch, (ts[0], ts[-1]), y0.reshape(-1), method="DOP853",
                        t_eval=ts, rtol=tol, atol=tol)
        if not sol.success:
            raise RuntimeError(f"reference solve failed: {sol.message}")
        return torch.from_numpy(sol.y.T.reshape(len(ts), *y0.shape).copy())

    def rhs(_t, y):
        x, v = y
        return [v, mu * (1.0 - x * x) * v - x]

    out = np.empty((len(ts), *y0.shape))
    for b, init in enumerate(y0):
        sol = solve_ivp(rhs, (ts[0], ts[-1]), init, method="DOP853", t_eval=ts,
                        rtol=tol, atol=tol)
        if not sol.success:
            raise RuntimeError(f"reference solve failed for sample {b}: {sol.message}")
        out[:, b, :] = sol.y.T
    return torch.from_numpy(out)


def vdp_reference(mu: float, y0: torch.Tensor, t: torch.Tensor, *, per_sample: bool = False,
                  tol: float = REFERENCE_TOL) -> torch.Tensor:
    """Van der Pol solution at ``t`` as ``[len(t), batch, 2]`` float64 (cached)."""
    y0_key = tuple(tuple(row) for row in y0.detach().double().tolist())
    t_key = tuple(t.detach().double().tolist())
    return _vdp_reference_scipy(mu, y0_key, t_key, per_sample, tol)


def van_der_pol(batch: int = 256, mu: float = 1.0, t_end: float = 10.0, n_out: int = 11,
                dtype: torch.dtype = torch.float64) -> Problem:
    """Van der Pol, ``mu = 1``, random initial states uniform in ``[-2, 2]^2`` (fixed seed)."""
    g = torch.Generator().manual_seed(VDP_SEED)
    y0 = (torch.rand(batch, 2, generator=g, dtype=torch.float64) * 4.0 - 2.0).to(dtype)
    t = torch.linspace(0.0, t_end, n_out, dtype=torch.float64)

    return Problem(
        name=f"vdp-b{batch}" + ("" if n_out == 11 else f"-{n_out}out"),
        func=VanDerPol(mu),
        y0=y0,
        t=t.to(dtype),
        reference=_cached(lambda: vdp_reference(mu, y0, t)),
        reference_name=(f"SciPy solve_ivp DOP853 at rtol=atol={REFERENCE_TOL:g}, the batch as one "
                        "system"),
        description=(f"Van der Pol mu={mu:g}, batch {batch}, {dtype}, y0 ~ U[-2,2]^2 "
                     f"(seed {VDP_SEED}), t = linspace(0, {t_end:g}, {n_out})"),
    )


# --------------------------------------------------------------------------------------------
# Linear problem with an exact solution


class Linear(nn.Module):
    """``y' = y A^T`` (each row of ``y`` is one sample)."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a_t", a.t().contiguous())

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y @ self.a_t


def linear_oscillator(batch: int = 256, t_end: float = 10.0, n_out: int = 50) -> Problem:
    """A damped rotation ``A = [[-0.1, -2], [2, -0.1]]`` in float64, exact solution
    ``y(t) = expm(A t) y0``."""
    a = torch.tensor([[-0.1, -2.0], [2.0, -0.1]], dtype=torch.float64)
    g = torch.Generator().manual_seed(LINEAR_SEED)
    y0 = torch.randn(batch, 2, generator=g, dtype=torch.float64)
    t = torch.linspace(0.0, t_end, n_out, dtype=torch.float64)

    def exact() -> torch.Tensor:
        expm = torch.linalg.matrix_exp(t[:, None, None] * a)  # [T, 2, 2]
        return torch.einsum("tij,bj->tbi", expm, y0)

    return Problem(
        name=f"linear-b{batch}-{n_out}out",
        func=Linear(a),
        y0=y0,
        t=t,
        reference=_cached(exact),
        reference_name="exact: expm(A t) y0 (torch.linalg.matrix_exp, float64)",
        description=(f"linear y' = A y, A = [[-0.1, -2], [2, -0.1]], batch {batch}, float64, "
                     f"y0 ~ N(0, I) (seed {LINEAR_SEED}), t = linspace(0, {t_end:g}, {n_out})"),
    )


# --------------------------------------------------------------------------------------------
# Neural ODE


MLP_GAIN = 3.0


class MLPField(nn.Module):
    """``dy/dt = MLP(y)`` with tanh between the linear layers (time is ignored)."""

    def __init__(self, dims: tuple[int, ...], seed: int, gain: float = MLP_GAIN) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            lin = nn.Linear(n_in, n_out)
            with torch.no_grad():
                lin.weight.copy_(torch.randn(n_out, n_in, generator=g) * (gain / math.sqrt(n_in)))
                lin.bias.copy_(torch.randn(n_out, generator=g) * 0.1)
            layers.append(lin)
            if i < len(dims) - 2:
                layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


def neural_ode(dims: tuple[int, ...], batch: int = 512, t_end: float = 1.0,
               n_out: int = 2) -> Problem:
    """An MLP vector field in float32 with weights ~ N(0, gain^2 / fan_in) (fixed seed)."""
    func = MLPField(dims, MLP_SEED)
    g = torch.Generator().manual_seed(MLP_SEED + 1)
    y0 = torch.randn(batch, dims[0], generator=g)
    t = torch.linspace(0.0, t_end, n_out)
    arch = "-".join(str(d) for d in dims)
    return Problem(
        name=f"mlp-{arch}",
        func=func,
        y0=y0,
        t=t,
        description=(f"neural ODE, MLP {arch} with tanh, float32, batch {batch}, weights "
                     f"N(0, {MLP_GAIN:g}^2/fan_in), biases N(0, 0.1^2) (seed {MLP_SEED}), "
                     f"y0 ~ N(0, I), t = linspace(0, {t_end:g}, {n_out})"),
    )


def mlp_small(batch: int = 512) -> Problem:
    return neural_ode((2, 64, 64, 2), batch)


def mlp_large(batch: int = 512) -> Problem:
    return neural_ode((32, 256, 256, 32), batch)
