"""The 2-D toy data: the eight generators, the closed-form densities and true NLLs (checked by
Monte Carlo against the generators), and the data module."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datamodules.toy2d import (
    EIGHT_GAUSSIANS_DIVISOR,
    EIGHT_GAUSSIANS_STD,
    TOY_DATASETS,
    Toy2DDataModule,
    sample_toy,
    toy_log_density,
    true_nll,
)


def draw(name: str, n: int, seed: int = 0) -> np.ndarray:
    return sample_toy(name, n, np.random.default_rng(seed))


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_generators_are_seeded_finite_and_sized(name):
    x = draw(name, 1001)
    assert x.shape == (1001, 2) and x.dtype == np.float64
    assert np.isfinite(x).all()
    assert np.abs(x).max() < 8  # all eight live roughly in [-4, 4]^2
    assert 0.5 < x.std() < 4
    assert np.array_equal(x, draw(name, 1001))
    assert not np.array_equal(x, draw(name, 1001, seed=1))
    # random order: the first points are not all from one part of the distribution
    assert abs(x[:200].mean(0) - x.mean(0)).max() < 0.6


def test_exact_shapes_of_the_toys():
    rings = draw("rings", 40_000)
    radius = np.linalg.norm(rings, axis=1)
    for r in (0.75, 1.5, 2.25, 3.0):
        near = np.abs(radius - r) < 0.3
        assert abs(near.mean() - 0.25) < 0.02
    circles = np.linalg.norm(draw("circles", 40_000), axis=1)
    assert abs((np.abs(circles - 3.0) < 0.5).mean() - 0.5) < 0.02
    assert abs((np.abs(circles - 1.5) < 0.5).mean() - 0.5) < 0.02
    pinwheel = draw("pinwheel", 20_000)
    assert abs(np.linalg.norm(pinwheel, axis=1).mean() - 2.0) < 0.15  # radial N(1, 0.3^2) x 2
    assert np.allclose(draw("moons", 40_000).mean(0), [0.0, 0.3], atol=0.05)


@pytest.mark.parametrize("name", ["8gaussians", "checkerboard"])
def test_true_nll_matches_monte_carlo_over_the_generator(name):
    """E[-log p(x)] over 200,000 generated points agrees with the closed form within 5
    standard errors: the generator and the density describe the same distribution."""
    x = torch.from_numpy(draw(name, 200_000, seed=7))
    nll = -toy_log_density(name, x)
    assert torch.isfinite(nll).all()  # every generated point lies in the support
    stderr = float(nll.std()) / math.sqrt(len(nll))
    if name == "checkerboard":
        assert float(nll.std()) < 1e-12 and float(nll.mean()) == pytest.approx(true_nll(name))
    else:
        assert abs(float(nll.mean()) - true_nll(name)) < 5 * stderr, (nll.mean(), stderr)


@pytest.mark.parametrize("name", ["8gaussians", "checkerboard"])
def test_closed_form_densities_integrate_to_one(name):
    edges = np.linspace(-6, 6, 601)
    mids = 0.5 * (edges[1:] + edges[:-1])
    gx, gy = np.meshgrid(mids, mids, indexing="ij")
    grid = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=1))
    mass = float(toy_log_density(name, grid).exp().sum()) * (edges[1] - edges[0]) ** 2
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_checkerboard_is_uniform_on_the_eight_black_squares():
    x = draw("checkerboard", 80_000)
    cells = np.floor(x / 2).astype(int)
    assert ((cells >= -2) & (cells <= 1)).all()
    assert ((cells.sum(1) % 2) == 0).all()  # black squares only
    _, counts = np.unique(cells[:, 0] * 10 + cells[:, 1], return_counts=True)
    assert len(counts) == 8
    expected = len(x) / 8
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 7 + 5 * math.sqrt(14)  # chi-square with 7 degrees of freedom
    assert true_nll("checkerboard") == pytest.approx(math.log(32))


def test_eight_gaussians_entropy_against_the_separated_limit():
    """Well separated components: H is just below log 8 + log(2 pi e sigma^2) (the overlap
    lowers it a little), with sigma = 0.5 / 1.414 (FFJORD's divisor, not sqrt 2)."""
    sigma2 = (EIGHT_GAUSSIANS_STD / EIGHT_GAUSSIANS_DIVISOR) ** 2
    separated = math.log(8) + math.log(2 * math.pi * math.e * sigma2)
    assert 0 < separated - true_nll("8gaussians") < 0.02
    assert EIGHT_GAUSSIANS_DIVISOR == 1.414


def test_no_closed_form_for_the_other_toys():
    for name in set(TOY_DATASETS) - {"8gaussians", "checkerboard"}:
        assert true_nll(name) is None
        assert toy_log_density(name, torch.zeros(3, 2)) is None
    with pytest.raises(ValueError, match="dataset must be one of .* got 'spiral'"):
        true_nll("spiral")


def test_data_module_splits_batches_and_metadata():
    dm = Toy2DDataModule(
        "checkerboard",
        n_train=300,
        n_val=100,
        n_test=50,
        batch_size=64,
        eval_batch_size=100,
        plot_points=120,
    )
    dm.setup()
    assert {k: len(v) for k, v in dm.parts.items()} == {"train": 300, "val": 100, "test": 50}
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (64, 2) and batch.dtype == torch.float32
    assert next(iter(dm.val_dataloader())).shape == (100, 2)
    assert dm.model_dims() == {"obs_dim": 2}
    assert dm.true_nll == pytest.approx(math.log(32))
    assert torch.isfinite(dm.data_log_density(dm.parts["val"])).all()
    assert dm.example_batch("test", 4).shape == (50, 2)  # all 50 (< plot_points)
    assert dm.example_batch("train", 4).shape == (120, 2)
    # the same seed gives the same data; a split's size does not change the other splits
    other = Toy2DDataModule("checkerboard", n_train=300, n_val=100, n_test=80)
    other.setup()
    assert torch.equal(other.parts["train"], dm.parts["train"])
    assert not torch.equal(dm.parts["train"][:100], dm.parts["val"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(dataset="spirals"), "dataset must be one of .* got 'spirals'"),
        (dict(n_train=0), "n_train must be an integer >= 1, got 0"),
        (dict(batch_size=2.5), "batch_size must be an integer >= 1, got 2.5"),
        (dict(seed=-1), "seed must be an integer >= 0, got -1"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Toy2DDataModule(**kwargs)
    dm = Toy2DDataModule(n_train=10, n_val=10, n_test=10)
    with pytest.raises(ValueError, match="split must be one of .* got 'dev'"):
        dm.example_batch("dev")
