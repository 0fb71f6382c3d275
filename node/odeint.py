"""``odeint``: torchdiffeq's interface on top of :func:`node.solve`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from node.solve import solve


def odeint(
    func: Callable,
    y0,
    t: torch.Tensor,
    *,
    rtol=1e-7,
    atol=1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable | None = None,
):
    """Integrate ``dy/dt = func(t, y)`` from ``y(t[0]) = y0``; drop-in for torchdiffeq's ``odeint``.

    Returns the solution at every time in ``t``: a tensor ``[len(t), *y0.shape]`` (``ys[0]`` is
    ``y0``), or a tuple of such tensors for a tuple ``y0``. ``method=None`` means ``"dopri5"``.
    Gradients flow to ``y0``, to the parameters ``func`` uses and to ``t`` by ordinary autograd
    through the solver's operations.

    With ``event_fn``, ``t`` must hold two times of which only ``t[0]`` is used; the solve stops
    where ``event_fn(t, y)`` crosses zero and ``(event_t, ys)`` is returned (see
    :func:`node.odeint_event`).

    As in torchdiffeq: ``y0`` may be complex (time stays real; see :mod:`node.complex_state`);
    ``func`` may return another floating dtype than the state's (it is cast to the state's);
    an option the method does not use (``step_size`` for ``dopri5``, ``first_step`` for
    ``rk4``, ...) is ignored with a warning, so ``step_size`` never makes an adaptive method
    step on a grid: ``options=dict(adaptive=False, step_size=h)`` does.

    Raises:
        ValueError, TypeError: bad arguments (named in the message); non-monotonic ``t`` raises
            :class:`node.TimeOrderError`, which is also an ``AssertionError`` (torchdiffeq's
            type for it).
        node.SolverError: a numerical failure (step budget, step size, non-finite values); also
            an ``AssertionError``, so code written for torchdiffeq that catches those works.
    """
    if event_fn is not None:
        from node.complex_state import solve_until_event

        return solve_until_event(
            func, y0, t, event_fn=event_fn, rtol=rtol, atol=atol, method=method, options=options
        )
    return solve(func, y0, t, method=method, rtol=rtol, atol=atol, options=options).ys
