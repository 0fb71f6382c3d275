"""Wall-clock timing: warm-up, repeated runs, median and interquartile range.

Forward-only cases run under ``torch.no_grad()`` (``no_grad=True``, the default); a gradient
benchmark passes ``no_grad=False`` and times forward plus backward in ``fn``. The garbage collector
is disabled while a sample is being timed (as :mod:`timeit` does) and run between samples.

Each sample is read on two clocks: wall time (``time.perf_counter``) and the CPU time of the
calling thread (``time.thread_time``). With ``torch.set_num_threads(1)`` every operation runs on
that thread, so on an idle machine the two agree; when other processes compete for the cores,
wall time includes the time the benchmark was waiting for a core and CPU time does not.
:meth:`Timing.on` selects the clock that the statistics use.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Per-run times in seconds (each sample is the mean over ``number`` back-to-back runs).

    ``samples`` are on the selected clock (``clock``); ``wall`` and ``cpu`` keep both."""

    samples: tuple[float, ...]
    number: int = 1
    wall: tuple[float, ...] = ()
    cpu: tuple[float, ...] = ()
    clock: str = "wall"

    def on(self, clock: str) -> Timing:
        """The same measurement with statistics on ``clock`` ("wall" or "cpu")."""
        if clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
        return Timing(getattr(self, clock), self.number, self.wall, self.cpu, clock)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def q25(self) -> float:
        return _quantile(self.samples, 0.25)

    @property
    def q75(self) -> float:
        return _quantile(self.samples, 0.75)

    @property
    def iqr(self) -> float:
        return self.q75 - self.q25

    @property
    def n(self) -> int:
        return len(self.samples)

    def __str__(self) -> str:
        return f"{self.median * 1e3:.3f} ms (IQR {self.iqr * 1e3:.3f} ms, n={self.n})"


def _quantile(xs, q: float) -> float:
    """Linear-interpolation quantile (numpy's default)."""
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _grad_mode(no_grad: bool):
    return torch.no_grad() if no_grad else contextlib.nullcontext()


def _sample(fn: Callable[[], object], number: int) -> tuple[float, float]:
    gc.collect()
    gc.disable()
    try:
        cpu0 = time.thread_time()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        wall = time.perf_counter() - start
        cpu = time.thread_time() - cpu0
        return wall / number, cpu / number
    finally:
        gc.enable()


def measure(
    fn: Callable[[], object],
    *,
    repeats: int = 5,
    warmup: int = 1,
    min_time: float = 0.0,
    max_repeats: int = 100,
    number: int = 1,
    no_grad: bool = True,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed runs, then at least ``repeats`` timed samples, more
    (up to ``max_repeats``) until the timed samples add up to ``min_time`` seconds."""
    return measure_interleaved(
        {"fn": fn}, repeats=repeats, warmup=warmup, min_time=min_time,
        max_repeats=max_repeats, number=number, no_grad=no_grad,
    )["fn"]


def synchronized(fn: Callable[[], object], device: str) -> Callable[[], object]:
    """``fn``, waiting for the device's queued work after each call (CUDA runs
    asynchronously: without this, a timer would see only the launches)."""
    if not device.startswith("cuda"):
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return run


def measure_interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    min_time: float = 0.0,
    max_repeats: int = 100,
    number: int = 1,
    no_grad: bool = True,
) -> dict[str, Timing]:
    """Time several functions round-robin (one sample of each per round), so that slow drifts
    of the machine's speed affect all of them alike. ``min_time`` applies to each function."""
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    with _grad_mode(no_grad):
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        rounds = 0
        while True:
            for name, fn in fns.items():
                samples[name].append(_sample(fn, number))
            rounds += 1
            if rounds >= max_repeats:
                break
            if rounds >= repeats and all(
                sum(w for w, _ in s) * number >= min_time for s in samples.values()
            ):
                break
    out = {}
    for name, s in samples.items():
        wall = tuple(w for w, _ in s)
        cpu = tuple(c for _, c in s)
        out[name] = Timing(wall, number, wall, cpu, "wall")
    return out


def time_call(
    fn: Callable[[], object],
    *,
    sample_time: float = 0.01,
    repeats: int = 15,
    warmup: int = 3,
    no_grad: bool = True,
) -> Timing:
    """Time a short call (such as one ``func`` evaluation): like :mod:`timeit`'s autorange, the
    number of back-to-back calls per sample is chosen so that a sample lasts ``sample_time``."""
    with _grad_mode(no_grad):
        for _ in range(warmup):
            fn()
        start = time.perf_counter()
        fn()
        once = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(sample_time / once))
    return measure(fn, repeats=repeats, warmup=1, number=number, no_grad=no_grad)
