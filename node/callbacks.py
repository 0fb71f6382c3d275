"""torchdiffeq's optional step callbacks on ``func``.

If ``func`` has ``callback_step``, ``callback_accept_step`` or ``callback_reject_step`` methods,
they are called with ``(t0, y0, dt)`` (tensors, in the user's time and state structure) before each
step, after an accepted step and after a rejected one.
"""

from __future__ import annotations

import torch

from node.state import FlatVectorField

_NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")


class StepCallbacks:
    def __init__(self, f: FlatVectorField, hooks) -> None:
        self.f = f
        self._step, self._accept, self._reject = hooks

    @classmethod
    def of(cls, func, f: FlatVectorField, suffix: str = "") -> StepCallbacks | None:
        """The callbacks ``func`` defines (``suffix='_adjoint'`` for a backward solve), if any."""
        hooks = tuple(getattr(func, name + suffix, None) for name in _NAMES)
        if all(h is None for h in hooks):
            return None
        return cls(f, hooks)

    def _call(self, hook, tau: float, y: torch.Tensor, h: float) -> None:
        if hook is not None:
            t = self.f.time(tau)
            hook(t, self.f.layout.unflatten(y), torch.full_like(t, h))

    def step(self, tau, y, h) -> None:
        self._call(self._step, tau, y, h)

    def accept(self, tau, y, h) -> None:
        self._call(self._accept, tau, y, h)

    def reject(self, tau, y, h) -> None:
        self._call(self._reject, tau, y, h)
