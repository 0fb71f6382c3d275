r"""Trajectories of Robertson's stiff chemical kinetics (ROBER), for learning stiff dynamics.

Robertson's three-species reaction system (H. H. Robertson, 1966; problem ROBER of the IVP test
set of Mazzia and Magherini):

.. math::
    \dot y_1 = -k_1 y_1 + k_3 y_2 y_3, \qquad
    \dot y_2 = k_1 y_1 - k_2 y_2^2 - k_3 y_2 y_3, \qquad
    \dot y_3 = k_2 y_2^2,

with :math:`k = (0.04, 3\cdot10^7, 10^4)`. Its rates span eleven orders of magnitude: ``y2``
rises to about :math:`3.6\cdot10^{-5}` within :math:`10^{-3}` time units and then decays while
``y1`` turns into ``y3`` up to :math:`t = 10^{5}` and beyond; the Jacobian's eigenvalues reach
:math:`-10^4`, so explicit methods are limited to steps of about :math:`10^{-4}`.

Following Kim et al. (2021, "Stiff neural ordinary differential equations", Chaos 31, 093122),
each trajectory is sampled on a logarithmic time grid (``n_times`` points from ``t_min`` to
``t_max``, after ``t = 0``). Trajectory ``i`` starts from :math:`y_0 = (a_i, 0, 1 - a_i)`,
:math:`a_i \sim U[y1_{low}, 1]` (:math:`y_1 + y_2 + y_3 = 1` is conserved), and is computed
with SciPy's Radau method at ``rtol = 1e-10`` and a per-species ``atol`` far below each
species' scale, with the analytic Jacobian. Optional multiplicative noise
(``noise_std``, relative to each species' scale) is added to the training targets only.

A batch is a dict with ``t`` (``[T]``, shared times, ``t[0] = 0``) and ``y`` (``[B, T, 3]``);
:meth:`RobertsonDataModule.model_dims` passes the state dimension and the species scales (the
largest value of each species over the training trajectories) to the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.splits import SplitDataModule, check_split
from datamodules.timeseries import check_nonnegative, check_positive_int

RATES = (0.04, 3.0e7, 1.0e4)


def robertson_rhs(y: np.ndarray, rates: Sequence[float]) -> np.ndarray:
    """ROBER's right-hand side for states ``y`` of shape ``[3]`` or ``[3, n]``."""
    k1, k2, k3 = rates
    y1, y2, y3 = y
    return np.array([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k2 * y2**2 - k3 * y2 * y3, k2 * y2**2])


def robertson_jacobian(y: np.ndarray, rates: Sequence[float]) -> np.ndarray:
    """``d rhs / d y`` at a state ``y`` of shape ``[3]``."""
    k1, k2, k3 = rates
    _, y2, y3 = y
    return np.array([
        [-k1, k3 * y3, k3 * y2],
        [k1, -2 * k2 * y2 - k3 * y3, -k3 * y2],
        [0.0, 2 * k2 * y2, 0.0],
    ])


def robertson_trajectories(
    y0s: np.ndarray, times: np.ndarray, rates: Sequence[float] = RATES
) -> np.ndarray:
    """Accurate solutions ``[n, len(times), 3]`` from each row of ``y0s`` (SciPy Radau)."""
    from scipy.integrate import solve_ivp  # the `train` extra installs SciPy

    out = np.empty((len(y0s), len(times), 3))
    atol = np.array([1e-14, 1e-18, 1e-14])
    for i, y0 in enumerate(y0s):
        sol = solve_ivp(lambda t, y: robertson_rhs(y, rates), (times[0], times[-1]), y0,
                        method="Radau", t_eval=times, rtol=1e-10, atol=atol,
                        jac=lambda t, y: robertson_jacobian(y, rates))
        if not sol.success:
            raise RuntimeError(f"the reference solution of trajectory {i} failed: {sol.message}")
        out[i] = sol.y.T
    return out


class TrajectoryDataset(Dataset):
    """Trajectories ``[n, T, D]`` on shared times ``[T]``; items are single trajectories."""

    def __init__(self, times: torch.Tensor, values: torch.Tensor) -> None:
        self.times, self.values = times, values

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.values[index]

    def collate(self, items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"t": self.times, "y": torch.stack(items)}


class RobertsonDataModule(SplitDataModule):
    """ROBER trajectories (see the module docstring).

    Args:
        n_trajectories: trajectories in all (split into train / val / test by ``split``).
        n_times: logarithmically spaced sample times from ``t_min`` to ``t_max`` (after 0).
        t_min, t_max: first and last sample time.
        y1_low: initial ``y1`` drawn from ``U[y1_low, 1]`` (``y3 = 1 - y1``, ``y2 = 0``).
        noise_std: multiplicative Gaussian noise of the training targets, relative to each
            species' scale (0: exact data).
        batch_size: trajectories per batch; ``None`` (default): the whole split in one batch.
        split: fractions of trajectories for train, val and test.
        seed: seed of the generator of initial states and noise.
        num_workers: DataLoader workers.
    """

    state_dim = 3

    def __init__(
        self,
        n_trajectories: int = 16,
        n_times: int = 40,
        t_min: float = 1.0e-5,
        t_max: float = 1.0e5,
        y1_low: float = 0.5,
        noise_std: float = 0.0,
        batch_size: int | None = None,
        split: Sequence[float] = (0.5, 0.25, 0.25),
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.n_trajectories = check_positive_int("n_trajectories", n_trajectories, minimum=3)
        self.n_times = check_positive_int("n_times", n_times, minimum=2)
        if not 0 < t_min < t_max:
            raise ValueError(f"datamodule.t_min and t_max must satisfy 0 < t_min < t_max, got "
                             f"t_min={t_min!r}, t_max={t_max!r}")
        self.t_min, self.t_max = float(t_min), float(t_max)
        if not 0 <= y1_low <= 1:
            raise ValueError(f"datamodule.y1_low must be in [0, 1], got {y1_low!r}")
        self.y1_low = float(y1_low)
        self.noise_std = check_nonnegative("noise_std", noise_std)
        if batch_size is not None:
            check_positive_int("batch_size", batch_size)
        self.batch_size = batch_size
        self.split = check_split(split)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.parts: dict[str, TrajectoryDataset] = {}
        self.scales: list[float] | None = None
        self.save_hyperparameters(logger=False)

    def model_dims(self) -> dict[str, object]:
        """The state dimension and the species scales (generating the data if needed)."""
        self.setup()
        return {"state_dim": self.state_dim, "scales": list(self.scales)}

    def setup(self, stage: str | None = None) -> None:
        if self.parts:
            return
        rng = np.random.default_rng(self.seed)
        times = np.concatenate([[0.0], np.geomspace(self.t_min, self.t_max, self.n_times)])
        a = rng.uniform(self.y1_low, 1.0, self.n_trajectories)
        y0s = np.stack([a, np.zeros_like(a), 1.0 - a], axis=1)
        values = robertson_trajectories(y0s, times)
        n_train = max(1, round(self.split[0] * self.n_trajectories))
        n_val = max(1, round(self.split[1] * self.n_trajectories))
        order = rng.permutation(self.n_trajectories)
        index = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
                 "test": order[n_train + n_val:]}
        if len(index["test"]) == 0:
            raise ValueError(f"datamodule.n_trajectories={self.n_trajectories} leaves no test "
                             f"trajectory with split={list(self.split)}")
        scales = values[index["train"]].max(axis=(0, 1))
        self.scales = [float(s) for s in scales]
        train = values[index["train"]]
        if self.noise_std > 0:
            noise = 1.0 + self.noise_std * rng.standard_normal(train[:, 1:].shape)
            train = train.copy()
            train[:, 1:] *= noise  # the initial state stays exact: it is the model's input
        t = torch.as_tensor(times)
        self.parts = {
            "train": TrajectoryDataset(t, torch.as_tensor(train)),
            "val": TrajectoryDataset(t, torch.as_tensor(values[index["val"]])),
            "test": TrajectoryDataset(t, torch.as_tensor(values[index["test"]])),
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        data = self.parts[split]
        return DataLoader(data, batch_size=self.batch_size or len(data), shuffle=shuffle,
                          collate_fn=data.collate, num_workers=self.num_workers)

    def example_batch(self, split: str = "test", n_examples: int = 4) -> dict[str, torch.Tensor]:
        """The first ``n_examples`` trajectories of ``split`` as one batch (for plots)."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        self.setup()
        data = self.parts[split]
        n = min(check_positive_int("n_examples", n_examples), len(data))
        return data.collate([data[i] for i in range(n)])
