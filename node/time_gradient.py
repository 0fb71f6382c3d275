"""Gradients with respect to the times ``t`` for solves differentiated by autograd.

The solver's loop works on Python-float times, so autograd does not see ``t``. The sensitivities
are known in closed form and are attached with zero-valued terms, ``d = t - detach(t)``:

* an output time: ``d y(t_i) / d t_i = f(t_i, y(t_i))``, so the output becomes a step of
  length ``d_i`` from ``y_i``;
* the initial time: moving ``t_0`` by ``d`` is, to first order, starting from
  ``y0 - d * f(t_0, y0)`` at the old time, so the solve starts from a step of length ``-d_0``.

The steps are of zero length, so the solution is unchanged in value. Taking them with the
midpoint rule, with ``t`` passed as a tensor, makes second derivatives right as well
(``d^2 y / dt^2 = df/dt + df/dy f``), for gradients of gradients. The cost, two evaluations of
``func`` per output time, is paid only when ``t.requires_grad``.
"""

from __future__ import annotations

import torch

from node.state import FlatVectorField


def _shifted(f: FlatVectorField, t: torch.Tensor, y: torch.Tensor, sign: float) -> torch.Tensor:
    """The midpoint step ``y + s f(t_m, y + s/2 f(t_m, y))``, ``s = sign * d``, ``t_m = t - d/2``.

    With ``d = t - detach(t)`` (zero) its value is ``y``, its first derivative in ``t`` is
    ``sign * f`` and its second is ``df/dt + df/dy f``: a midpoint step is exact to second order.
    """
    t = t.to(f.time_dtype)
    d = t - t.detach()
    t_mid = t.detach() + d / 2
    s = d.to(y.dtype) * sign
    inner = y + (s / 2) * f.at(t_mid, y)
    return y + s * f.at(t_mid, inner)


def start_with_t0_gradient(f: FlatVectorField, t0: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """``y0`` carrying the sensitivity of the whole solve to ``t0``."""
    return _shifted(f, t0, y0, -1.0)


def outputs_with_t_gradients(
    f: FlatVectorField, ts: torch.Tensor, ys: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Outputs carrying their sensitivity to their own output time."""
    return [_shifted(f, t_i, y_i, 1.0) for t_i, y_i in zip(ts.unbind(0), ys, strict=True)]
