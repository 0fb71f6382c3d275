"""1-D sine waves at irregular times with missing values (Rubanova et al., 2019, toy data).

Series ``i`` is ``x_i(t) = amplitude * sin(2 pi f_i t + phi_i)`` with ``f_i ~ U[freq_low,
freq_high]`` and ``phi_i ~ U[0, 2 pi)`` (or 0 when ``random_phase`` is off). All series share
``n_points`` irregular times: ``0`` followed by ``n_points - 1`` sorted draws from ``U(0, t_max)``.
The first ``n_points - n_extrap`` times form the observation window, where each value is observed
with probability ``observed_fraction`` (at least one per series) with Gaussian noise of standard
deviation ``noise_std``; the last ``n_extrap`` times are held out, noiseless, for extrapolation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from datamodules.timeseries import (
    TimeSeriesData,
    TimeSeriesDataModule,
    check_nonnegative,
    check_positive_int,
)


def irregular_times(rng: np.random.Generator, n_points: int, t_max: float) -> np.ndarray:
    """``0`` and ``n_points - 1`` sorted uniform draws in ``(0, t_max)``, distinct in float32."""
    for _ in range(100):
        t = np.concatenate([[0.0], np.sort(rng.uniform(0.0, t_max, n_points - 1))])
        if np.all(np.diff(t.astype(np.float32)) > 0):
            return t
    raise RuntimeError(f"could not draw {n_points} distinct times in [0, {t_max}]")


def make_periodic(
    rng: np.random.Generator,
    n_series: int,
    n_points: int,
    t_max: float,
    freq_low: float,
    freq_high: float,
    amplitude: float,
    random_phase: bool,
    noise_std: float,
    observed_fraction: float,
    n_extrap: int,
) -> TimeSeriesData:
    """Generate the data set described in the module docstring."""
    t = irregular_times(rng, n_points, t_max)
    freq = rng.uniform(freq_low, freq_high, size=(n_series, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n_series, 1)) if random_phase else 0.0
    clean = amplitude * np.sin(2 * np.pi * freq * t[None, :] + phase)[..., None]

    n_window = n_points - n_extrap
    mask = (rng.random((n_series, n_window)) < observed_fraction).astype(np.float64)
    empty = np.flatnonzero(mask.sum(axis=1) == 0)
    mask[empty, rng.integers(0, n_window, size=len(empty))] = 1.0
    mask = mask[..., None]
    noisy = clean[:, :n_window] + noise_std * rng.standard_normal((n_series, n_window, 1))

    return TimeSeriesData.from_arrays(t, n_window, noisy, mask, clean)


class PeriodicDataModule(TimeSeriesDataModule):
    """Periodic data module (see the module docstring).

    Args:
        n_series: number of series.
        n_points: shared irregular time points per series (100 in Rubanova et al.).
        t_max: end of the time interval (5 in Rubanova et al.).
        freq_low, freq_high: range of the uniform frequency distribution (0.4 and 0.8).
        amplitude: amplitude of every sine.
        random_phase: draw each series' phase uniformly (else all start at 0).
        noise_std: standard deviation of the observation noise.
        observed_fraction: probability that a value in the observation window is observed.
        n_extrap: trailing time points held out for extrapolation.
        batch_size, split, seed, num_workers: see :class:`TimeSeriesDataModule`.
    """

    obs_dim = 1

    def __init__(
        self,
        n_series: int = 1000,
        n_points: int = 100,
        t_max: float = 5.0,
        freq_low: float = 0.4,
        freq_high: float = 0.8,
        amplitude: float = 1.0,
        random_phase: bool = True,
        noise_std: float = 0.01,
        observed_fraction: float = 0.5,
        n_extrap: int = 50,
        batch_size: int = 50,
        split: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, split, seed, num_workers)
        self.n_series = check_positive_int("n_series", n_series, minimum=3)
        self.n_points = check_positive_int("n_points", n_points, minimum=3)
        self.n_extrap = check_positive_int("n_extrap", n_extrap)
        if self.n_extrap > self.n_points - 2:
            raise ValueError(
                f"n_extrap must be <= n_points - 2 ({self.n_points - 2}) so that the observation "
                f"window keeps two times, got {n_extrap!r}"
            )
        self.t_max = float(t_max)
        if not self.t_max > 0:
            raise ValueError(f"t_max must be > 0, got {t_max!r}")
        self.freq_low = check_nonnegative("freq_low", freq_low)
        self.freq_high = check_nonnegative("freq_high", freq_high)
        if self.freq_low > self.freq_high:
            raise ValueError(f"freq_low must be <= freq_high ({self.freq_high}), got {freq_low!r}")
        self.amplitude = check_nonnegative("amplitude", amplitude)
        self.random_phase = bool(random_phase)
        self.noise_std = check_nonnegative("noise_std", noise_std)
        if not 0 < observed_fraction <= 1:
            raise ValueError(f"observed_fraction must be in (0, 1], got {observed_fraction!r}")
        self.observed_fraction = float(observed_fraction)
        self.save_hyperparameters(logger=False)

    def generate(self, rng: np.random.Generator) -> TimeSeriesData:
        return make_periodic(
            rng,
            n_series=self.n_series,
            n_points=self.n_points,
            t_max=self.t_max,
            freq_low=self.freq_low,
            freq_high=self.freq_high,
            amplitude=self.amplitude,
            random_phase=self.random_phase,
            noise_std=self.noise_std,
            observed_fraction=self.observed_fraction,
            n_extrap=self.n_extrap,
        )
