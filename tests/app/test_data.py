"""Data modules: shapes, masks, seeding, splits, the generating laws, and argument errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datamodules import PeriodicDataModule, SpiralsDataModule
from datamodules.periodic import make_periodic
from datamodules.spirals import make_spirals


def small_spirals(**kw):
    args = dict(n_spirals=40, n_total=60, n_window=20, n_obs=7, n_extrap=10, batch_size=8)
    args.update(kw)
    dm = SpiralsDataModule(**args)
    dm.setup()
    return dm


def test_spirals_batch_layout():
    dm = small_spirals()
    batch = next(iter(dm.train_dataloader()))
    assert batch["values"].shape == (8, 20, 2)
    assert batch["mask"].shape == batch["truth"].shape == (8, 20, 2)
    assert batch["extrap"].shape == (8, 10, 2)
    assert batch["t_obs"].shape == (20,) and batch["t_extrap"].shape == (10,)
    t = torch.cat([batch["t_obs"], batch["t_extrap"]])
    assert t[0] == 0 and bool((t.diff() > 0).all())
    spacing = 6 * math.pi / 59
    assert torch.allclose(t.diff(), torch.full((29,), spacing), atol=1e-5)


def test_spirals_observe_n_obs_points_with_noise():
    dm = small_spirals(n_spirals=200, n_obs=7, noise_std=0.3)
    data = dm.data
    per_series = data.mask[..., 0].sum(dim=1)
    assert bool((per_series == 7).all())
    assert bool((data.values[data.mask == 0] == 0).all())
    seen = data.mask > 0
    noise = (data.values - data.truth)[seen]
    assert abs(noise.std().item() - 0.3) < 0.02
    assert abs(noise.mean().item()) < 0.02
    # different spirals see different (irregular) subsets of the window
    assert len({tuple(m.tolist()) for m in data.mask[:, :, 0]}) > 150


def test_spirals_follow_archimedean_law_in_both_directions():
    rng = np.random.default_rng(1)
    data = make_spirals(rng, 50, 300, 6 * math.pi, 0.0, 0.3, 0.0, 40, 40, 30)
    xy = torch.cat([data.truth, data.extrap], dim=1)
    radius = xy.norm(dim=-1)
    # r = b * theta with theta = theta_start + t: dr/dt = b everywhere
    dr = radius.diff(dim=1) / torch.cat([data.t_obs, data.t_extrap]).diff()
    assert torch.allclose(dr, torch.full_like(dr, 0.3), atol=1e-3)
    cross = xy[:, :-1, 0] * xy[:, 1:, 1] - xy[:, :-1, 1] * xy[:, 1:, 0]
    turning = torch.sign(cross.sum(dim=1))
    assert int((turning > 0).sum()) == 25 and int((turning < 0).sum()) == 25


def test_spirals_are_seeded_and_split_disjointly():
    a, b, c = small_spirals(seed=3), small_spirals(seed=3), small_spirals(seed=4)
    assert torch.equal(a.data.values, b.data.values)
    assert not torch.equal(a.data.values, c.data.values)
    sizes = [len(a.parts[p]) for p in ("train", "val", "test")]
    assert sizes == [32, 4, 4]
    rows = torch.cat([a.parts[p].values.flatten(1) for p in ("train", "val", "test")])
    assert torch.unique(rows, dim=0).shape[0] == 40


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_obs=30, n_window=20), "n_obs must be <= n_window (20), got 30"),
        (dict(n_window=50, n_extrap=20, n_total=60), "n_window + n_extrap must be <= n_total"),
        (dict(split=[0.5, 0.5]), "split must be three positive fractions"),
        (dict(noise_std=-1.0), "noise_std must be a number >= 0, got -1.0"),
        (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
        (dict(n_spirals=5, split=[0.9, 0.05, 0.05]), "leaves an empty part"),
    ],
)
def test_spirals_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=None) as info:
        small_spirals(**kwargs)
    assert message in str(info.value)


def best_frequency(t: np.ndarray, x: np.ndarray) -> float:
    """Least-squares fit of a sin/cos pair over a frequency grid."""
    grid = np.linspace(0.2, 1.0, 801)
    errors = []
    for f in grid:
        basis = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], axis=1)
        coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
        errors.append(np.sum((basis @ coef - x) ** 2))
    return float(grid[int(np.argmin(errors))])


def test_periodic_series_are_sines_with_frequency_in_range():
    rng = np.random.default_rng(0)
    data = make_periodic(rng, 20, 100, 5.0, 0.4, 0.8, 1.0, True, 0.0, 0.5, 50)
    t = torch.cat([data.t_obs, data.t_extrap]).double().numpy()
    x = torch.cat([data.truth, data.extrap], dim=1)[..., 0].double().numpy()
    freqs = [best_frequency(t, series) for series in x]
    assert all(0.395 <= f <= 0.805 for f in freqs), freqs
    assert max(freqs) - min(freqs) > 0.2
    assert np.abs(x).max() <= 1.0 + 1e-6


def test_periodic_times_irregular_and_values_missing():
    dm = PeriodicDataModule(n_series=300, n_points=60, n_extrap=20, observed_fraction=0.3)
    dm.setup()
    data = dm.data
    t = torch.cat([data.t_obs, data.t_extrap])
    assert t[0] == 0 and t[-1] < 5.0 and bool((t.diff() > 0).all())
    assert t.diff().std() > 0.01  # irregular spacing
    assert data.t_obs.shape == (40,)
    assert bool((data.mask.sum(dim=(1, 2)) >= 1).all())
    assert abs(data.mask.mean().item() - 0.3) < 0.03
    assert bool((data.values[data.mask == 0] == 0).all())
    batch = next(iter(dm.val_dataloader()))
    assert batch["values"].shape == (30, 40, 1)


def test_periodic_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match=r"observed_fraction must be in \(0, 1\], got 0"):
        PeriodicDataModule(observed_fraction=0)
    with pytest.raises(ValueError, match=r"freq_low must be <= freq_high \(0.5\), got 0.9"):
        PeriodicDataModule(freq_low=0.9, freq_high=0.5)
    with pytest.raises(ValueError, match=r"n_extrap must be <= n_points - 2 \(8\) .*, got 9"):
        PeriodicDataModule(n_points=10, n_extrap=9)


def test_example_batch():
    dm = small_spirals()
    batch = dm.example_batch("test", 3)
    assert batch["values"].shape == (3, 20, 2)
    assert torch.equal(batch["values"], dm.parts["test"].values[:3])
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test', got 'dev'"):
        dm.example_batch("dev")
    with pytest.raises(ValueError, match="n_examples must be an integer >= 1, got 0"):
        dm.example_batch("val", 0)
