r"""The eight 2-D toy distributions of FFJORD (Grathwohl et al. 2019), seeded, as a data module.

Each generator reproduces the distribution of FFJORD's ``lib/toy_data.py`` (there drawn with
NumPy's global generator and scikit-learn; here standalone NumPy on a seeded
``numpy.random.Generator``; the same distributions, not the same random streams):

============== =================================================================================
8gaussians     :math:`x = (4 c_k + 0.5\,\xi)/1.414`, :math:`k` uniform on 8 unit vectors
               :math:`c_k` at angles :math:`k\pi/4`, :math:`\xi \sim \mathcal N(0, I)`: a mixture
               of :math:`\mathcal N(4 c_k/1.414, (0.5/1.414)^2 I)` with equal weights
               (FFJORD divides by 1.414, not :math:`\sqrt 2`; kept exactly)
pinwheel       5 arms: radial :math:`\mathcal N(1, 0.3^2)`, tangential :math:`\mathcal N(0, 0.1^2)`,
               rotated by the arm's angle plus :math:`0.25\,e^{\text{radial}}`, times 2
checkerboard   uniform on the 8 "black" squares of side 2 of a 4 x 4 board on
               :math:`[-4, 4)^2` (squares with :math:`\lfloor x_1/2\rfloor + \lfloor x_2/2\rfloor`
               even)
2spirals       two interleaved spirals :math:`\pm(-n\cos n + u_1, n \sin n + u_2)/3` with
               :math:`n = \sqrt{U}\cdot 3\pi`, :math:`u_i \sim U[0, 0.5)`, plus
               :math:`\mathcal N(0, 0.1^2 I)`
moons          scikit-learn's two moons with noise 0.1, times 2, shifted by :math:`(-1, -0.2)`
circles        scikit-learn's two circles (radii 1 and 0.5) with noise 0.08, times 3
swissroll      scikit-learn's swiss roll with noise 1.0, coordinates (x, z), divided by 5
rings          4 concentric rings of radii 3, 2.25, 1.5, 0.75 (equally spaced angles, equal
               counts) plus :math:`\mathcal N(0, 0.08^2 I)`
============== =================================================================================

True densities in closed form (:func:`toy_log_density`) exist for ``8gaussians`` (the mixture
above) and ``checkerboard`` (:math:`1/32` on the black squares, total area 32). Their true
negative log-likelihood, the differential entropy
:math:`H = \mathbb E_{p}[-\log p(x)]` (:func:`true_nll`), is the best NLL any model can reach:

* checkerboard: :math:`H = \log 32`;
* 8gaussians: by the mixture's 8-fold rotation symmetry every component contributes the same
  expectation, so :math:`H = \mathbb E_{x \sim \mathcal N(\mu_0, \sigma^2 I)}[-\log p(x)]`,
  computed by Gauss-Hermite quadrature (80 x 80 nodes; accurate to about 1e-10), close to
  :math:`\log 8 + \log(2\pi e \sigma^2)` because the components barely overlap.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch
from torch.utils.data import DataLoader

from datamodules.splits import SplitDataModule
from datamodules.timeseries import check_positive_int

TOY_DATASETS = (
    "8gaussians",
    "pinwheel",
    "checkerboard",
    "2spirals",
    "moons",
    "circles",
    "swissroll",
    "rings",
)
EIGHT_GAUSSIANS_SCALE = 4.0
EIGHT_GAUSSIANS_STD = 0.5
EIGHT_GAUSSIANS_DIVISOR = 1.414  # FFJORD's (not sqrt(2)); the density below uses the same
CHECKERBOARD_AREA = 32.0


def _eight_gaussian_centres() -> np.ndarray:
    angles = np.arange(8) * (np.pi / 4)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    centres = EIGHT_GAUSSIANS_SCALE * _eight_gaussian_centres()
    points = EIGHT_GAUSSIANS_STD * rng.standard_normal((n, 2)) + centres[rng.integers(0, 8, n)]
    return points / EIGHT_GAUSSIANS_DIVISOR


def _pinwheel(rng: np.random.Generator, n: int) -> np.ndarray:
    radial_std, tangential_std, n_arms, rate = 0.3, 0.1, 5, 0.25
    arm_angles = np.linspace(0, 2 * np.pi, n_arms, endpoint=False)
    features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    features[:, 0] += 1.0
    arms = np.arange(n) % n_arms
    angles = arm_angles[arms] + rate * np.exp(features[:, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    # row vector times [[cos, -sin], [sin, cos]]
    x = features[:, 0] * cos + features[:, 1] * sin
    y = -features[:, 0] * sin + features[:, 1] * cos
    return 2 * np.stack([x, y], axis=1)


def _checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2.0 + np.floor(x1) % 2
    return np.stack([x1, x2], axis=1) * 2


def _two_spirals(rng: np.random.Generator, n: int) -> np.ndarray:
    half = (n + 1) // 2
    turn = np.sqrt(rng.random(half)) * 540 * (2 * np.pi) / 360
    d1x = -np.cos(turn) * turn + rng.random(half) * 0.5
    d1y = np.sin(turn) * turn + rng.random(half) * 0.5
    arm = np.stack([d1x, d1y], axis=1)
    x = np.concatenate([arm, -arm])[:n] / 3
    return x + 0.1 * rng.standard_normal(x.shape)


def _moons(rng: np.random.Generator, n: int) -> np.ndarray:
    n_out = n // 2
    n_in = n - n_out
    outer = np.linspace(0, np.pi, n_out)
    inner = np.linspace(0, np.pi, n_in)
    x = np.concatenate([np.cos(outer), 1 - np.cos(inner)])
    y = np.concatenate([np.sin(outer), 1 - np.sin(inner) - 0.5])
    data = np.stack([x, y], axis=1) + 0.1 * rng.standard_normal((n, 2))
    return data * 2 + np.array([-1.0, -0.2])


def _circles(rng: np.random.Generator, n: int) -> np.ndarray:
    n_out = n // 2
    n_in = n - n_out
    outer = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    inner = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    x = np.concatenate([np.cos(outer), 0.5 * np.cos(inner)])
    y = np.concatenate([np.sin(outer), 0.5 * np.sin(inner)])
    data = np.stack([x, y], axis=1) + 0.08 * rng.standard_normal((n, 2))
    return data * 3


def _swissroll(rng: np.random.Generator, n: int) -> np.ndarray:
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    data = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    # scikit-learn draws the height y = 21 U and 3-D noise; only x and z are kept
    return (data + 1.0 * rng.standard_normal((n, 2))) / 5


def _rings(rng: np.random.Generator, n: int) -> np.ndarray:
    quarter = n // 4
    counts = (quarter, quarter, quarter, n - 3 * quarter)
    radii = (1.0, 0.75, 0.5, 0.25)
    parts = []
    for count, radius in zip(counts, radii, strict=True):
        angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
        parts.append(radius * np.stack([np.cos(angles), np.sin(angles)], axis=1))
    data = np.concatenate(parts) * 3.0
    return data + 0.08 * rng.standard_normal(data.shape)


_GENERATORS = {
    "8gaussians": _eight_gaussians,
    "pinwheel": _pinwheel,
    "checkerboard": _checkerboard,
    "2spirals": _two_spirals,
    "moons": _moons,
    "circles": _circles,
    "swissroll": _swissroll,
    "rings": _rings,
}


def _check_name(name: str) -> None:
    if name not in _GENERATORS:
        raise ValueError(f"dataset must be one of {list(TOY_DATASETS)}, got {name!r}")


def sample_toy(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points (float64, ``[n, 2]``, in random order) of the toy distribution ``name``."""
    _check_name(name)
    n = check_positive_int("n", n)
    return rng.permutation(_GENERATORS[name](rng, n))


def _eight_gaussians_log_density(x: torch.Tensor) -> torch.Tensor:
    centres = torch.as_tensor(_eight_gaussian_centres(), dtype=torch.float64)
    means = EIGHT_GAUSSIANS_SCALE * centres / EIGHT_GAUSSIANS_DIVISOR
    var = (EIGHT_GAUSSIANS_STD / EIGHT_GAUSSIANS_DIVISOR) ** 2
    sq = (x.to(torch.float64)[:, None, :] - means[None]).pow(2).sum(dim=-1)
    log_comp = -0.5 * sq / var - math.log(2 * math.pi * var)
    return torch.logsumexp(log_comp, dim=1) - math.log(8)


def _checkerboard_log_density(x: torch.Tensor) -> torch.Tensor:
    u = x.to(torch.float64) / 2
    inside = ((u >= -2) & (u < 2)).all(dim=1)
    black = (torch.floor(u[:, 0]) + torch.floor(u[:, 1])) % 2 == 0
    out = torch.full((x.shape[0],), -math.inf, dtype=torch.float64)
    out[inside & black] = -math.log(CHECKERBOARD_AREA)
    return out


_DENSITIES = {
    "8gaussians": _eight_gaussians_log_density,
    "checkerboard": _checkerboard_log_density,
}


def toy_log_density(name: str, x: torch.Tensor) -> torch.Tensor | None:
    """The true ``log p(x)`` (float64, ``[N]``) of ``name`` at ``x`` (``[N, 2]``), or ``None``
    where no closed form is known."""
    _check_name(name)
    density = _DENSITIES.get(name)
    return None if density is None else density(x)


@cache
def true_nll(name: str) -> float | None:
    """Differential entropy ``E_p[-log p]`` in nats (module docstring), or ``None``."""
    _check_name(name)
    if name == "checkerboard":
        return math.log(CHECKERBOARD_AREA)
    if name != "8gaussians":
        return None
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # weight exp(-z^2 / 2)
    weights = weights / math.sqrt(2 * math.pi)  # now sums to 1: a N(0, 1) expectation
    z1, z2 = np.meshgrid(nodes, nodes, indexing="ij")
    w = np.outer(weights, weights).reshape(-1)
    sigma = EIGHT_GAUSSIANS_STD / EIGHT_GAUSSIANS_DIVISOR
    mean0 = EIGHT_GAUSSIANS_SCALE / EIGHT_GAUSSIANS_DIVISOR  # component 0 sits at (mean0, 0)
    points = np.stack([mean0 + sigma * z1.reshape(-1), sigma * z2.reshape(-1)], axis=1)
    log_p = _eight_gaussians_log_density(torch.from_numpy(points)).numpy()
    return float(-(w * log_p).sum())


class Toy2DDataModule(SplitDataModule):
    """Seeded train/val/test samples of one toy distribution (module docstring).

    Args:
        dataset: one of :data:`TOY_DATASETS`.
        n_train, n_val, n_test: points per split, each split drawn independently from its own
            stream of ``seed`` (so changing one size does not change the other splits).
        batch_size: training batch size; ``eval_batch_size`` (``None``: the same) for val/test.
        seed: seed of the data (independent of the run's global seed).
        num_workers: data loader workers.
        plot_points: points of a split given to the plots: :meth:`example_batch` returns at
            least this many (a scatter of a density needs many points).

    Batches are tensors ``[B, 2]``. The true density, where known, is exposed to the model as
    :attr:`true_nll` (a float or ``None``) and :meth:`data_log_density`.
    """

    obs_dim = 2

    def __init__(
        self,
        dataset: str = "8gaussians",
        n_train: int = 50_000,
        n_val: int = 5_000,
        n_test: int = 5_000,
        batch_size: int = 500,
        eval_batch_size: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        plot_points: int = 2_000,
    ) -> None:
        super().__init__()
        _check_name(dataset)
        self.dataset = dataset
        self.sizes = {
            "train": check_positive_int("n_train", n_train),
            "val": check_positive_int("n_val", n_val),
            "test": check_positive_int("n_test", n_test),
        }
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.eval_batch_size = (
            self.batch_size
            if eval_batch_size is None
            else check_positive_int("eval_batch_size", eval_batch_size)
        )
        self.seed = check_positive_int("seed", seed, minimum=0)
        self.num_workers = check_positive_int("num_workers", num_workers, minimum=0)
        self.plot_points = check_positive_int("plot_points", plot_points)
        self.parts: dict[str, torch.Tensor] = {}
        self.save_hyperparameters(logger=False)

    def model_dims(self) -> dict[str, int]:
        """Shape facts a model needs from its data (passed as keyword arguments to the model)."""
        return {"obs_dim": self.obs_dim}

    @property
    def true_nll(self) -> float | None:
        return true_nll(self.dataset)

    def data_log_density(self, x: torch.Tensor) -> torch.Tensor | None:
        """True ``log p(x)`` per point (float64), or ``None`` where not known."""
        return toy_log_density(self.dataset, x.detach().cpu())

    def setup(self, stage: str | None = None) -> None:
        if self.parts:
            return
        streams = np.random.SeedSequence(self.seed).spawn(3)
        for (split, n), stream in zip(self.sizes.items(), streams, strict=True):
            points = sample_toy(self.dataset, n, np.random.default_rng(stream))
            self.parts[split] = torch.as_tensor(points, dtype=torch.float32)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.parts:
            self.setup()
        return DataLoader(
            self.parts[split],
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def example_batch(self, split: str = "test", n: int = 4) -> torch.Tensor:
        """The first ``max(n, plot_points)`` points of ``split`` (for the plots)."""
        if split not in self.sizes:
            raise ValueError(f"split must be one of {list(self.sizes)}, got {split!r}")
        if not self.parts:
            self.setup()
        return self.parts[split][: max(int(n), self.plot_points)]
