"""scikit-learn's bundled handwritten digits: 1797 grey images of 8x8 pixels, classes 0-9.

The data ship with scikit-learn (``sklearn.datasets.load_digits``): nothing is downloaded. Pixel
values 0-16 are scaled to ``[0, 1]``; the images are partitioned at random (seeded by ``seed``)
into train/val/test parts by the fractions ``split``. Batches: see
:mod:`datamodules.classification`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from datamodules.classification import ImageClassificationDataModule, seeded_partition
from datamodules.splits import check_split


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits: images ``[1797, 1, 8, 8]`` float32 in ``[0, 1]``, labels ``[1797]``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.as_tensor(bunch.target, dtype=torch.int64)


class DigitsDataModule(ImageClassificationDataModule):
    """The 8x8 digits (module docstring).

    Args:
        split: fractions (train, val, test) of the 1797 images.
        batch_size, normalize, crop_padding, seed, num_workers: see
            :class:`~datamodules.classification.ImageClassificationDataModule`.
    """

    input_shape = (1, 8, 8)
    n_classes = 10

    def __init__(
        self,
        split: Sequence[float] = (0.6, 0.2, 0.2),
        batch_size: int = 64,
        normalize: bool = True,
        crop_padding: int = 0,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, normalize, crop_padding, seed, num_workers)
        self.split = check_split(split)
        self.save_hyperparameters(logger=False)

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        images, labels = load_digits_tensors()
        n = len(labels)
        n_train = int(round(self.split[0] * n))
        n_val = int(round(self.split[1] * n))
        sizes = (n_train, n_val, n - n_train - n_val)
        if min(sizes) < 1:
            raise ValueError(
                f"datamodule.split {list(self.split)} of {n} images leaves an empty part "
                f"(train, val, test) = {sizes}"
            )
        parts = seeded_partition(n, sizes, self.seed)
        return {
            name: (images[index], labels[index])
            for name, index in zip(("train", "val", "test"), parts, strict=True)
        }
