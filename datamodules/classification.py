r"""Image classification data held in memory, and the data module shared by ``digits`` and
``mnist``.

A batch is a dict ``{"inputs": [B, C, H, W] float32, "labels": [B] int64}``. Pixels are scaled to
:math:`[0, 1]` by the subclass; with ``normalize=true`` they are then standardised with the mean
:math:`m` and standard deviation :math:`s` of all training pixels, :math:`x \mapsto (x - m)/s`.

With ``crop_padding = p > 0`` every training batch (on its device, after transfer) is randomly
shifted: padded by :math:`p` background pixels on each side and cropped back to its size at a
random offset per image (torchvision's ``RandomCrop(size, padding=p)``, as in torchdiffeq's MNIST
example). Validation and test batches are never changed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from datamodules.splits import SplitDataModule
from datamodules.timeseries import check_positive_int

SPLITS = ("train", "val", "test")


class LabelledImages(Dataset):
    """``inputs[i]``, ``labels[i]`` as ``{"inputs": ..., "labels": ...}`` items."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        if inputs.dim() != 4 or labels.shape != inputs.shape[:1]:
            raise ValueError(
                "LabelledImages expects inputs [N, C, H, W] and labels [N], got "
                f"{tuple(inputs.shape)} and {tuple(labels.shape)}"
            )
        self.inputs = inputs
        self.labels = labels

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"inputs": self.inputs[i], "labels": self.labels[i]}


def random_shift(images: torch.Tensor, padding: int, fill: float = 0.0) -> torch.Tensor:
    """Each image of ``images`` (``[B, C, H, W]``) padded by ``padding`` pixels of value ``fill``
    and cropped back to ``H x W`` at an independent uniformly random offset."""
    if padding == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, value=fill)
    dy = torch.randint(0, 2 * padding + 1, (b,), device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), device=images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()


def class_cycling_order(labels: torch.Tensor) -> torch.Tensor:
    """Indices ordering ``labels`` as: first example of each class (in class order), then the
    second of each, ... (so that the first ``n`` examples cover as many classes as possible)."""
    rank = torch.zeros_like(labels)
    for c in labels.unique():
        where = labels == c
        rank[where] = torch.arange(int(where.sum()))
    key = rank * (int(labels.max()) + 1) + labels
    return torch.argsort(key, stable=True)


def seeded_partition(n: int, sizes: Sequence[int], seed: int) -> list[torch.Tensor]:
    """A random permutation of ``range(n)`` (numpy generator seeded with ``seed``) cut into
    consecutive parts of the given ``sizes``."""
    if sum(sizes) != n or min(sizes) < 1:
        raise ValueError(f"partition sizes {list(sizes)} must be >= 1 and sum to {n}")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    return list(torch.split(order, list(sizes)))


class ImageClassificationDataModule(SplitDataModule):
    """Base data module (module docstring). Subclasses set :attr:`input_shape` and
    :attr:`n_classes` and implement :meth:`load`, returning the three splits with pixels in
    :math:`[0, 1]`.

    Args:
        batch_size: examples per training batch (also used for validation and test).
        normalize: standardise with the training pixels' mean and standard deviation.
        crop_padding: random-shift augmentation of training batches (0: off).
        seed: seed of the train/val/test partition (independent of the run's seed).
        num_workers: data loader worker processes.
    """

    input_shape: tuple[int, int, int] = (1, 1, 1)
    n_classes: int = 0

    def __init__(
        self,
        batch_size: int,
        normalize: bool = True,
        crop_padding: int = 0,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.batch_size = check_positive_int("datamodule.batch_size", batch_size)
        if not isinstance(normalize, bool):
            raise ValueError(f"datamodule.normalize must be true or false, got {normalize!r}")
        self.normalize = normalize
        self.crop_padding = check_positive_int("datamodule.crop_padding", crop_padding, 0)
        self.seed = check_positive_int("datamodule.seed", seed, 0)
        self.num_workers = check_positive_int("datamodule.num_workers", num_workers, 0)
        self.parts: dict[str, LabelledImages] = {}
        self.mean, self.std = 0.0, 1.0

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{"train"|"val"|"test": (images [N, C, H, W] in [0, 1], labels [N] int64)}``."""
        raise NotImplementedError(f"{type(self).__name__} must implement load()")

    def model_dims(self) -> dict[str, object]:
        """Shape facts a model needs from its data (passed as keyword arguments to the model)."""
        return {"input_shape": list(self.input_shape), "n_classes": self.n_classes}

    def setup(self, stage: str | None = None) -> None:
        if self.parts:
            return
        loaded = self.load()
        train_x = loaded["train"][0]
        if self.normalize:
            self.mean = float(train_x.mean())
            self.std = float(train_x.std()) or 1.0
        for split in SPLITS:
            x, y = loaded[split]
            x = ((x.float() - self.mean) / self.std).contiguous()
            self.parts[split] = LabelledImages(x, y.long())

    @property
    def background(self) -> float:
        """The value of a zero pixel after normalisation (the fill of the random shifts)."""
        return (0.0 - self.mean) / self.std

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.parts:
            self.setup()
        return DataLoader(
            self.parts[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        trainer = self.trainer
        if self.crop_padding and trainer is not None and trainer.training:
            batch = dict(batch)
            batch["inputs"] = random_shift(batch["inputs"], self.crop_padding, self.background)
        return batch

    def example_batch(self, split: str = "test", n_examples: int = 4) -> dict[str, torch.Tensor]:
        """``n_examples`` examples of ``split`` covering as many classes as possible (plots)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        n = check_positive_int("n_examples", n_examples)
        if not self.parts:
            self.setup()
        data = self.parts[split]
        index = class_cycling_order(data.labels)[:n]
        return {"inputs": data.inputs[index], "labels": data.labels[index]}
