"""The train/val/test loaders every data module here builds the same way."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from torch.utils.data import DataLoader


def check_split(split: Sequence[float]) -> tuple[float, float, float]:
    """``datamodule.split``: three positive fractions (train, val, test) summing to 1."""
    values = tuple(float(v) for v in split)
    if len(values) != 3 or any(v <= 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(
            "datamodule.split must be three positive fractions (train, val, test) summing to 1, "
            f"got {list(split)!r}"
        )
    return values


class SplitDataModule(L.LightningDataModule):
    """A LightningDataModule whose loaders come from ``_loader(split, shuffle)``; only the
    training split is shuffled."""

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        raise NotImplementedError(f"{type(self).__name__} must define _loader(split, shuffle)")

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
