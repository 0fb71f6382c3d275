"""Types shared by the suites and ``run_all``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BenchConfig:
    """How thoroughly to measure.

    Attributes:
        quick: the reduced run (fewer cases and repeats) meant for the test suite.
        repeats: minimum number of timed samples per measurement (the median is reported).
        warmup: untimed runs before timing.
        min_time: keep sampling until this many seconds were timed per measurement.
        max_repeats: upper bound on the number of samples.
        clock: "wall" (the default: wall time, as the targets are stated) or "cpu" (CPU time of
            the benchmark thread: robust when other processes compete for the cores).
        device: where the problems live, ``"cpu"`` or a CUDA device (suites that list it in
            their ``DEVICES``; timed on the wall clock, synchronising after every sample).
    """

    quick: bool = False
    repeats: int = 9
    warmup: int = 2
    min_time: float = 0.5
    max_repeats: int = 31
    clock: str = "wall"
    device: str = "cpu"

    @classmethod
    def make(cls, quick: bool, clock: str = "wall", device: str = "cpu") -> BenchConfig:
        if quick:
            return cls(quick=True, repeats=5, warmup=1, min_time=0.0, max_repeats=5, clock=clock,
                       device=device)
        return cls(clock=clock, device=device)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclass
class Target:
    """One acceptance target: ``passed`` is None when it could not be evaluated."""

    name: str
    passed: bool | None
    detail: str

    @property
    def mark(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


@dataclass
class SuiteResult:
    """What a suite hands to ``run_all``: setup lines, Markdown sections, targets, notes and
    raw records (one dict per measurement, written to JSON)."""

    title: str
    sections: list[tuple[str, str]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)  # problem and library descriptions
    versions: dict[str, str] = field(default_factory=dict)
    issue: int | None = None  # the issue that states the targets (run_all fills in a default)
