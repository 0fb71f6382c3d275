"""Validation of the arguments shared by every entry point."""

from __future__ import annotations

import torch

from node.errors import TimeOrderError


def check_func(func) -> None:
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, y), got {type(func).__name__}")


def check_times(t, name: str = "t", min_len: int = 1) -> float:
    """Check that ``t`` is a 1-D strictly monotonic floating tensor; return its direction.

    Raises :class:`~node.errors.TimeOrderError` (a ValueError and an AssertionError) when ``t``
    is not strictly monotonic.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a 1-D torch.Tensor of times, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if t.numel() < min_len:
        raise ValueError(f"{name} must have at least {min_len} time(s), got {t.numel()}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must hold finite times, got {t.detach().tolist()}")
    if t.numel() < 2:
        return 1.0
    diffs = t[1:] - t[:-1]
    if bool((diffs > 0).all()):
        return 1.0
    if bool((diffs < 0).all()):
        return -1.0
    raise TimeOrderError(
        f"{name} must be strictly increasing or strictly decreasing, got {t.detach().tolist()}"
        if t.numel() <= 20
        else f"{name} must be strictly increasing or strictly decreasing"
    )
