"""A progress bar for long solves (``options=dict(progress=True)``), drawn by tqdm on stderr.

The bar shows the fraction of the time span done, the time reached, the step size, the number
of function evaluations, of steps and (adaptive solves) of rejected steps.

Cost: with ``progress`` off the loops only test ``progress is not None`` once per step. With it
on, :meth:`ProgressBar.step` reads a clock per step and formats the fields and hands them to
tqdm only every :data:`REFRESH` seconds, so a bar does not slow a solve measurably. tqdm is
imported only when a bar is made, so that ``node`` depends on torch alone.
"""

from __future__ import annotations

import sys
import time

from node.solution import Integration, Stats
from node.state import FlatVectorField

REFRESH = 0.2  # seconds between redraws (tqdm's ``mininterval``, applied by the caller here)


class ProgressBar:
    """The bar of one solve from ``tau0`` to ``tau1`` (solver time, increasing).

    ``delay``: seconds before the bar first appears (tqdm's ``delay``), so that only long solves
    show one. The bar is removed when the solve ends (``leave=False``): a training run's many
    solves reuse one line.
    """

    def __init__(self, f: FlatVectorField, tau0: float, tau1: float, label: str, *,
                 delay: float = 0.0, rejections: bool = True) -> None:
        try:
            from tqdm import tqdm
        except ImportError as e:
            raise ImportError(
                "options['progress'] needs the tqdm package, which is not installed "
                "(pip install tqdm)"
            ) from e
        self.f = f
        self.tau0, self.tau1 = tau0, tau1
        self.direction = f.direction
        self.rejections = rejections
        self._next = 0.0  # the first step draws the fields at once
        # The redraw interval is enforced by step(); tqdm itself then draws whenever asked
        # (mininterval=0, fixed miniters=0), except during its own ``delay``.
        self.bar = tqdm(total=tau1 - tau0, desc=f"node {label}", file=sys.stderr, leave=False,
                        delay=delay, mininterval=0, miniters=0, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}"
                                   "{postfix}")

    def step(self, tau: float, h: float, stats: Stats) -> None:
        """Called before each step from ``tau`` with step size ``h`` (solver time)."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + REFRESH
            self._draw(tau, h, stats)

    def _draw(self, tau: float, h: float, stats: Stats) -> None:
        d = self.direction
        fields = f"t={d * tau:.6g}, dt={d * h:.3g}, nfe={self.f.nfe}, steps={stats.n_steps}"
        if self.rejections:
            fields += f", rejected={stats.n_rejected}"
        bar = self.bar
        bar.set_postfix_str(fields, refresh=False)
        bar.update(tau - self.tau0 - bar.n)  # draws, once tqdm's delay has passed

    def close(self, run: Integration | None = None) -> None:
        """Draw the final state of ``run`` (if the loop returned one) and remove the bar."""
        if run is not None:  # an adaptive solve's last step may end past tau1 (dense output)
            self._draw(min(run.tau, self.tau1), run.h, run.stats)
        self.bar.close()
