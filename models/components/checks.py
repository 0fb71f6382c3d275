"""Validation of model hyperparameters: each check names the ``model.<name>`` argument, the
expected and the received value, so a bad override on the command line is told exactly."""

from __future__ import annotations

import math
from collections.abc import Sequence


def check_int(name: str, value, minimum: int) -> int:
    """An integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"model.{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_number(name: str, value, minimum: float, strict: bool) -> float:
    """A finite number ``>= minimum`` (``> minimum`` when ``strict``)."""
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"model.{name} must be a number {bound}, got {value!r}")
    return float(value)


def check_choice(name: str, value, allowed: Sequence[str]) -> str:
    """One of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"model.{name} must be one of {list(allowed)}, got {value!r}")
    return value
