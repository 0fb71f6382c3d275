"""Irregularly sampled time series on a shared time grid, with masks, and their data module.

Every data set here is stored on a time grid shared by all of its series: an *observation window*
``t_obs`` (``T`` times) followed by an *extrapolation window* ``t_extrap`` (``E`` later times).
Irregular sampling and missing values are expressed by a per-series ``mask`` over the window, so
a batch is solved by one ODE solve over the shared times, as in Rubanova et al. (2019).

A batch (and :meth:`TimeSeriesDataset.collate`) is a dict of tensors:

========== ============ ========================================================================
key        shape        meaning
========== ============ ========================================================================
t_obs      [T]          observation times (strictly increasing)
t_extrap   [E]          extrapolation times (strictly increasing, all after ``t_obs[-1]``)
values     [B, T, D]    noisy observations, zero where ``mask`` is zero
mask       [B, T, D]    1.0 where a value was observed, else 0.0
truth      [B, T, D]    noiseless values at ``t_obs`` (for the interpolation error)
extrap     [B, E, D]    noiseless values at ``t_extrap`` (for the extrapolation error)
========== ============ ========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.splits import SplitDataModule, check_split

BATCH_KEYS = ("values", "mask", "truth", "extrap")


@dataclass(frozen=True)
class TimeSeriesData:
    """A whole generated data set (see the module docstring for the meaning of each field)."""

    t_obs: torch.Tensor
    t_extrap: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    truth: torch.Tensor
    extrap: torch.Tensor

    def __post_init__(self) -> None:
        n, t, d = self.values.shape
        expected = {
            "t_obs": (t,),
            "mask": (n, t, d),
            "truth": (n, t, d),
            "extrap": (n, len(self.t_extrap), d),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"TimeSeriesData.{name} must have shape {shape}, got {got}")
        times = torch.cat([self.t_obs, self.t_extrap])
        if not bool((times[1:] > times[:-1]).all()):
            raise ValueError("t_obs followed by t_extrap must be strictly increasing")

    def __len__(self) -> int:
        return self.values.shape[0]

    @classmethod
    def from_arrays(cls, t, n_window: int, noisy, mask, clean) -> TimeSeriesData:
        """From NumPy arrays: times ``t`` (window then extrapolation), the noisy observed window
        ``noisy``, its ``mask`` and the noiseless series ``clean`` over all times (float32)."""

        def f32(x):
            return torch.as_tensor(x, dtype=torch.float32)

        return cls(
            t_obs=f32(t[:n_window]),
            t_extrap=f32(t[n_window:]),
            values=f32(noisy * mask),
            mask=f32(mask),
            truth=f32(clean[:, :n_window]),
            extrap=f32(clean[:, n_window:]),
        )

    def subset(self, index: torch.Tensor) -> TimeSeriesData:
        """The series at ``index`` (the time grid is shared, so it is kept whole)."""
        return TimeSeriesData(
            self.t_obs, self.t_extrap, *(getattr(self, k)[index] for k in BATCH_KEYS)
        )


class TimeSeriesDataset(Dataset):
    """Indexable view of :class:`TimeSeriesData`; use :meth:`collate` as the loader's collate_fn."""

    def __init__(self, data: TimeSeriesData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: getattr(self.data, k)[i] for k in BATCH_KEYS}

    def collate(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = {k: torch.stack([item[k] for item in items]) for k in BATCH_KEYS}
        batch["t_obs"] = self.data.t_obs
        batch["t_extrap"] = self.data.t_extrap
        return batch




def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int, or a ValueError naming ``name``, the bound and the value received."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_nonnegative(name: str, value) -> float:
    """``value`` as a float, or a ValueError naming ``name`` and the value received."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


class TimeSeriesSplit:
    """Seeded train/val/test partition of ``n`` series by fractions."""

    def __init__(self, n: int, split: Sequence[float], rng: np.random.Generator) -> None:
        fractions = check_split(split)
        n_train = int(round(fractions[0] * n))
        n_val = int(round(fractions[1] * n))
        n_test = n - n_train - n_val
        if min(n_train, n_val, n_test) < 1:
            raise ValueError(
                f"split {list(fractions)} of {n} series leaves an empty part "
                f"(train={n_train}, val={n_val}, test={n_test}); use more series"
            )
        order = torch.from_numpy(rng.permutation(n))
        self.train = order[:n_train]
        self.val = order[n_train : n_train + n_val]
        self.test = order[n_train + n_val :]


class TimeSeriesDataModule(SplitDataModule):
    """Base data module: generates its data once from ``seed`` and splits it train/val/test.

    Subclasses set :attr:`obs_dim` and implement :meth:`generate`. The same ``seed`` always gives
    the same series and the same split, whatever the global seed of the run.
    """

    obs_dim: int = 0

    def __init__(
        self, batch_size: int, split: Sequence[float], seed: int, num_workers: int = 0
    ) -> None:
        super().__init__()
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.split = check_split(split)
        self.seed = check_positive_int("seed", seed, minimum=0)
        self.num_workers = check_positive_int("num_workers", num_workers, minimum=0)
        self.data: TimeSeriesData | None = None
        self.parts: dict[str, TimeSeriesData] = {}

    def generate(self, rng: np.random.Generator) -> TimeSeriesData:
        raise NotImplementedError(f"{type(self).__name__} must implement generate(rng)")

    def model_dims(self) -> dict[str, int]:
        """Shape facts a model needs from its data (passed as keyword arguments to the model)."""
        return {"obs_dim": self.obs_dim}

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        rng = np.random.default_rng(self.seed)
        self.data = self.generate(rng)
        split = TimeSeriesSplit(len(self.data), self.split, rng)
        self.parts = {
            "train": self.data.subset(split.train),
            "val": self.data.subset(split.val),
            "test": self.data.subset(split.test),
        }

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        if not self.parts:
            self.setup()
        dataset = TimeSeriesDataset(self.parts[part])
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=dataset.collate,
            persistent_workers=self.num_workers > 0,
        )

    def example_batch(self, split: str = "test", n_examples: int = 4) -> dict[str, torch.Tensor]:
        """The first ``n_examples`` series of ``split`` as one batch (for plots)."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if not self.parts:
            self.setup()
        data = self.parts[split]
        n = min(check_positive_int("n_examples", n_examples), len(data))
        dataset = TimeSeriesDataset(data)
        return dataset.collate([dataset[i] for i in range(n)])
