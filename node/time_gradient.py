"""Gradients with respect to the times ``t`` for solves differentiated directly.

The solver's loop works on Python-float times, so autograd does not see ``t``. The sensitivities
are known in closed form and are attached with zero-valued terms:

* an output time: ``d y(t_i) / d t_i = f(t_i, y(t_i))``, so the output becomes
  ``y_i + (t_i - detach(t_i)) * f(t_i, y_i)``;
* the initial time: moving ``t_0`` by ``d`` is, to first order, starting from
  ``y0 - d * f(t_0, y0)`` at the old time, so the solve starts from
  ``y0 - (t_0 - detach(t_0)) * f(t_0, y0)``.

Each term is exactly zero in value, so the solution is unchanged; the cost is one extra
evaluation of ``func`` per output time, paid only when ``t.requires_grad``.
"""

from __future__ import annotations

import torch

from node.state import FlatVectorField


def _offset(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (t - t.detach()).to(dtype)


def start_with_t0_gradient(f: FlatVectorField, t0: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """``y0`` carrying the sensitivity of the whole solve to ``t0``."""
    k0 = f(f.direction * float(t0), y0)
    return y0 - _offset(t0, y0.dtype) * k0


def outputs_with_t_gradients(
    f: FlatVectorField, ts: torch.Tensor, ys: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Outputs carrying their sensitivity to their own output time."""
    out = []
    for t_i, y_i in zip(ts.unbind(0), ys, strict=True):
        k = f(f.direction * float(t_i), y_i)
        out.append(y_i + _offset(t_i, y_i.dtype) * k)
    return out
