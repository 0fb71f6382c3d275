"""torchdiffeq's optional step callbacks on ``func``.

If ``func`` has ``callback_step``, ``callback_accept_step`` or ``callback_reject_step`` methods,
they are called with ``(t0, y0, dt)`` (tensors, in the user's time and state structure) before each
step, after an accepted step and after a rejected one. A fixed grid accepts every step, so it
calls ``callback_step`` alone; :func:`warn_uncalled` says so when ``func`` defines the others.
"""

from __future__ import annotations

import warnings

import torch

from node.state import FlatVectorField

CALLBACK_NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")


def warn_uncalled(func, method: str, fixed_grid: bool, suffix: str = "") -> None:
    """Warn (``UserWarning``) of the callbacks ``func`` defines that a solve with ``method`` in
    this mode never calls (``suffix='_adjoint'`` for a backward solve). The adaptive loop calls
    all three."""
    if not fixed_grid:
        return
    uncalled = [name + suffix for name in CALLBACK_NAMES[1:] if getattr(func, name + suffix, None)
                is not None]
    if uncalled:
        warnings.warn(
            f"func's {' and '.join(uncalled)} will never be called: method {method!r} runs on "
            f"a fixed grid here, which calls only callback_step{suffix}",
            UserWarning,
            stacklevel=2,
        )


class StepCallbacks:
    def __init__(self, f: FlatVectorField, hooks) -> None:
        self.f = f
        self._step, self._accept, self._reject = hooks

    @classmethod
    def of(cls, func, f: FlatVectorField, suffix: str = "") -> StepCallbacks | None:
        """The callbacks ``func`` defines (``suffix='_adjoint'`` for a backward solve), if any."""
        hooks = tuple(getattr(func, name + suffix, None) for name in CALLBACK_NAMES)
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
