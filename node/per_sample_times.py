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

from node.wrapped_func import wrap_func


def with_sample_times(func: Callable, shape: torch.Size) -> Callable:
    """``func`` receiving a scalar time as ``[B, 1, ..., 1]`` for a state of ``shape``
    (``[B, ...]``); an ``nn.Module`` stays one, with the same parameters and callbacks
    (:mod:`node.wrapped_func`)."""
    t_shape = (shape[0],) + (1,) * (len(shape) - 1)

    def evaluate(f: Callable, t: torch.Tensor, y):
        return f(t.expand(t_shape) if t.dim() == 0 else t, y)

    return wrap_func(func, evaluate)
