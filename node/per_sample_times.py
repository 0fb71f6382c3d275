"""``func`` called with per-sample times on a solve whose samples share their steps.

Per-sample solves call ``func(t, y)`` with ``t`` of shape ``[B, 1, ..., 1]`` (one time per
sample, broadcasting against a ``[B, ...]`` state). Per-sample events that fall back to one joint
solve (checkpoint or adjoint gradients, implicit or multistep methods, complex states) step all
samples together with a scalar time; :func:`with_sample_times` expands that scalar to the same
``[B, 1, ..., 1]`` shape, so ``func`` sees one convention whichever path runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from node.callbacks import _NAMES as _CALLBACK_NAMES


class _SampleTimes:
    def _wrap(self, func: Callable, shape: torch.Size) -> None:
        self.t_shape = (shape[0],) + (1,) * (len(shape) - 1)
        # torchdiffeq's step callbacks (and their adjoint variants) stay reachable.
        for name in _CALLBACK_NAMES:
            for full in (name, name + "_adjoint"):
                hook = getattr(func, full, None)
                if hook is not None:
                    setattr(self, full, hook)

    def _evaluate(self, func: Callable, t: torch.Tensor, y):
        return func(t.expand(self.t_shape) if t.dim() == 0 else t, y)


class _SampleTimesFunction(_SampleTimes):
    def __init__(self, func: Callable, shape: torch.Size) -> None:
        self.func = func
        self._wrap(func, shape)

    def __call__(self, t, y):
        return self._evaluate(self.func, t, y)


class _SampleTimesModule(_SampleTimes, torch.nn.Module):
    """A module wrapper: the parameters (``func.*``) stay visible to the gradient modes."""

    def __init__(self, func: torch.nn.Module, shape: torch.Size) -> None:
        torch.nn.Module.__init__(self)
        self.func = func
        self._wrap(func, shape)

    def forward(self, t, y):
        return self._evaluate(self.func, t, y)


def with_sample_times(func: Callable, shape: torch.Size) -> Callable:
    """``func`` receiving a scalar time as ``[B, 1, ..., 1]`` for a state of ``shape``
    (``[B, ...]``); an ``nn.Module`` stays one, with the same parameters."""
    if isinstance(func, torch.nn.Module):
        return _SampleTimesModule(func, shape)
    return _SampleTimesFunction(func, shape)
