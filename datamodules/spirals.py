"""Bidirectional 2-D Archimedean spirals (Chen et al., 2018, sec. 5.1).

Each spiral follows ``r(theta) = a + b * theta`` over ``theta`` in ``[0, theta_max]`` on a dense
grid of ``n_total`` points; half of the spirals turn counter-clockwise,
``x = (r cos theta, r sin theta)``, the other half clockwise, ``x = (r cos theta, -r sin theta)``.
Time is the angle, so every spiral is an autonomous system with unit angular speed.

Each spiral starts at its own random grid point. The ``n_window`` following grid points form its
observation window (times measured from the window start, so the grid ``t_obs`` is shared), from
which ``n_obs`` points are drawn without replacement and observed with Gaussian noise of standard
deviation ``noise_std``: the irregular sampling of the paper. The ``n_extrap`` grid points after
the window are held out, noiseless, for extrapolation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from datamodules.timeseries import (
    TimeSeriesData,
    TimeSeriesDataModule,
    check_nonnegative,
    check_positive_int,
)


def make_spirals(
    rng: np.random.Generator,
    n_spirals: int,
    n_total: int,
    theta_max: float,
    a: float,
    b: float,
    noise_std: float,
    n_window: int,
    n_obs: int,
    n_extrap: int,
) -> TimeSeriesData:
    """Generate the data set described in the module docstring."""
    theta = np.linspace(0.0, theta_max, n_total)
    span = n_window + n_extrap
    start = rng.integers(0, n_total - span + 1, size=n_spirals)
    idx = start[:, None] + np.arange(span)[None, :]
    angle = theta[idx]
    radius = a + b * angle
    direction = np.where(np.arange(n_spirals) < n_spirals // 2, 1.0, -1.0)
    direction = rng.permutation(direction)[:, None]
    clean = np.stack([radius * np.cos(angle), direction * radius * np.sin(angle)], axis=-1)

    mask = np.zeros((n_spirals, n_window, 2))
    for i in range(n_spirals):
        mask[i, rng.choice(n_window, size=n_obs, replace=False)] = 1.0
    noisy = clean[:, :n_window] + noise_std * rng.standard_normal((n_spirals, n_window, 2))

    t = theta[:span] - theta[0]

    return TimeSeriesData.from_arrays(t, n_window, noisy, mask, clean)


class SpiralsDataModule(TimeSeriesDataModule):
    """Spirals data module (see the module docstring).

    Args:
        n_spirals: number of spirals (1000 in the paper).
        n_total: points of each spiral's dense grid over ``[0, theta_max]``.
        theta_max: largest angle of the dense grid (``6 pi``: three turns).
        a, b: the spiral ``r = a + b theta``.
        noise_std: standard deviation of the observation noise (0.3 in the paper).
        n_window: equally spaced grid points in the observation window.
        n_obs: points observed per spiral, drawn from the window without replacement (30, 50 or
            100 in the paper).
        n_extrap: grid points after the window held out for extrapolation (100 in the paper).
        batch_size, split, seed, num_workers: see :class:`TimeSeriesDataModule`.
    """

    obs_dim = 2

    def __init__(
        self,
        n_spirals: int = 1000,
        n_total: int = 500,
        theta_max: float = 6 * math.pi,
        a: float = 0.0,
        b: float = 0.3,
        noise_std: float = 0.3,
        n_window: int = 100,
        n_obs: int = 100,
        n_extrap: int = 100,
        batch_size: int = 50,
        split: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, split, seed, num_workers)
        self.n_spirals = check_positive_int("n_spirals", n_spirals, minimum=3)
        self.n_window = check_positive_int("n_window", n_window, minimum=2)
        self.n_extrap = check_positive_int("n_extrap", n_extrap)
        self.n_total = check_positive_int("n_total", n_total, minimum=2)
        self.n_obs = check_positive_int("n_obs", n_obs)
        if self.n_obs > self.n_window:
            raise ValueError(f"n_obs must be <= n_window ({self.n_window}), got {n_obs!r}")
        if self.n_window + self.n_extrap > self.n_total:
            raise ValueError(
                f"n_window + n_extrap must be <= n_total ({self.n_total}), got "
                f"{self.n_window} + {self.n_extrap} = {self.n_window + self.n_extrap}"
            )
        self.theta_max = float(theta_max)
        if not self.theta_max > 0:
            raise ValueError(f"theta_max must be > 0, got {theta_max!r}")
        self.a = check_nonnegative("a", a)
        self.b = check_nonnegative("b", b)
        self.noise_std = check_nonnegative("noise_std", noise_std)
        self.save_hyperparameters(logger=False)

    def generate(self, rng: np.random.Generator) -> TimeSeriesData:
        return make_spirals(
            rng,
            n_spirals=self.n_spirals,
            n_total=self.n_total,
            theta_max=self.theta_max,
            a=self.a,
            b=self.b,
            noise_std=self.noise_std,
            n_window=self.n_window,
            n_obs=self.n_obs,
            n_extrap=self.n_extrap,
        )
