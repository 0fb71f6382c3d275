"""Wrapping the user's ``func`` without hiding from the solver what it needs of it.

Several layers hand the solver a function built around the user's ``func``: complex states
(:mod:`node.complex_state`: real views in and out), per-sample times on a joint solve
(:mod:`node.per_sample_times`), flattened tuple states (:mod:`node.per_sample_tuple`). Each
wrapper must keep two things of ``func`` visible:

* its parameters: an ``nn.Module`` ``func`` gives an ``nn.Module`` wrapper with ``func``
  registered as its submodule ``func``, so the adjoint's default ``adjoint_params`` and the
  checkpoint mode's replay see them (a plain closure would hide them);
* torchdiffeq's step callbacks (``callback_step``, ``callback_accept_step``,
  ``callback_reject_step`` and their ``_adjoint`` variants), looked up as attributes of the
  function the solver receives: they are copied onto the wrapper, each through ``callback``
  if given (a complex state's callbacks see the state as complex).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from node.callbacks import CALLBACK_NAMES

Evaluate = Callable[[Callable, torch.Tensor, object], object]


class WrappedFunction:
    """``(t, y) -> evaluate(func, t, y)`` for a plain callable ``func``."""

    def __init__(self, func: Callable, evaluate: Evaluate, callback=None) -> None:
        self.func, self._evaluate = func, evaluate
        _forward_callbacks(self, func, callback)

    def __call__(self, t, y):
        return self._evaluate(self.func, t, y)


class WrappedModule(torch.nn.Module):
    """``(t, y) -> evaluate(func, t, y)`` for an ``nn.Module`` ``func`` (its parameters appear
    as ``func.*``)."""

    def __init__(self, func: torch.nn.Module, evaluate: Evaluate, callback=None) -> None:
        super().__init__()
        self.func, self._evaluate = func, evaluate
        _forward_callbacks(self, func, callback)

    def forward(self, t, y):
        return self._evaluate(self.func, t, y)


def wrap_func(func: Callable, evaluate: Evaluate,
              callback: Callable[[Callable], Callable] | None = None):
    """``func`` evaluated through ``evaluate(func, t, y)``; an ``nn.Module`` stays one, and
    torchdiffeq's callbacks stay reachable (``callback(hook)`` adapts the forward solve's
    hooks; the adjoint's are copied as they are: they see the augmented state)."""
    if isinstance(func, torch.nn.Module):
        return WrappedModule(func, evaluate, callback)
    return WrappedFunction(func, evaluate, callback)


def _forward_callbacks(wrapper, func: Callable, callback) -> None:
    for name in CALLBACK_NAMES:
        hook = getattr(func, name, None)
        if hook is not None:
            setattr(wrapper, name, hook if callback is None else callback(hook))
        hook = getattr(func, name + "_adjoint", None)
        if hook is not None:
            setattr(wrapper, name + "_adjoint", hook)
