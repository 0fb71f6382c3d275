"""The train/val/test loaders every data module here builds the same way."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader


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
