"""MNIST (LeCun et al.): 70 000 grey 28x28 images of handwritten digits, downloaded on first use.

Files: the four gzip'd IDX files of the original distribution, looked for in ``data_dir`` (each
also accepted uncompressed, without ``.gz``); missing ones are downloaded from the first mirror
that answers (``mirrors``) and checked against their published MD5 sums. Without network access
the run stops with an error naming the files, the folder and the URLs tried.

IDX format (big-endian): a 4-byte magic number ``0x00 0x00 <type> <ndim>`` (type ``0x08``:
unsigned bytes; 2051 = ``0x00000803`` for the image files, 2049 = ``0x00000801`` for the label
files), ``ndim`` 4-byte dimension sizes, then the values in C order. :func:`read_idx` parses it
(gzip detected from the file's first bytes).

Splits: ``val`` is ``n_val`` images of the 60 000 training images drawn at random (seeded by
``seed``), ``train`` the rest, ``test`` the 10 000 test images. Batches: see
:mod:`datamodules.classification`.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import shutil
import struct
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from datamodules.classification import ImageClassificationDataModule, seeded_partition
from datamodules.timeseries import check_positive_int

log = logging.getLogger(__name__)

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
#: (file name, MD5 of the .gz file) of each part
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


class MNISTDownloadError(RuntimeError):
    """No mirror delivered an MNIST file (offline, blocked, or a corrupted download)."""


# ------------------------------------------------------------------------------------ IDX files
def read_idx(path: str | Path, expected_magic: int) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzip'd or not), checking its magic number.

    Raises ``ValueError`` naming the file for a wrong magic number, a truncated header, or a
    payload whose size disagrees with the dimensions in the header.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4:
        raise ValueError(f"'{path}' is not an IDX file: {len(raw)} bytes, no magic number")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise ValueError(
            f"'{path}' has IDX magic number {magic}, expected {expected_magic} "
            f"({'images' if expected_magic == IMAGES_MAGIC else 'labels'} file)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"'{path}': IDX header of {ndim} dimensions is truncated")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != math.prod(dims):
        raise ValueError(
            f"'{path}': header dimensions {list(dims)} need {math.prod(dims)} values, "
            f"the file holds {data.size}"
        )
    return data.reshape(dims)


def read_idx_images(path: str | Path) -> torch.Tensor:
    """Images ``[N, H, W]`` (uint8) of an ``idx3-ubyte`` file."""
    return torch.from_numpy(read_idx(path, IMAGES_MAGIC).copy())


def read_idx_labels(path: str | Path) -> torch.Tensor:
    """Labels ``[N]`` (int64) of an ``idx1-ubyte`` file."""
    return torch.from_numpy(read_idx(path, LABELS_MAGIC).astype(np.int64))


# ------------------------------------------------------------------------------------- download
def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def local_file(data_dir: str | Path, name: str) -> Path | None:
    """``data_dir/name`` (gzip'd) or the same without ``.gz``, whichever exists."""
    for candidate in (Path(data_dir) / name, Path(data_dir) / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def download_file(
    name: str, md5: str, data_dir: Path, mirrors: Sequence[str], timeout: float
) -> Path:
    """Fetch ``name`` from the first mirror that delivers it with the right MD5 sum."""
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / name
    partial = target.with_suffix(".part")
    errors = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        try:
            log.info(f"downloading {url}")
            with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as f:
                shutil.copyfileobj(response, f)
        except OSError as err:  # URLError, HTTPError, timeouts, connection errors
            errors.append(f"{url}: {err}")
            continue
        got = _md5(partial)
        if got != md5:
            errors.append(f"{url}: MD5 {got}, expected {md5}")
            continue
        partial.replace(target)
        return target
    partial.unlink(missing_ok=True)
    raise MNISTDownloadError(
        f"could not download MNIST file '{name}' into '{data_dir}' (offline?). Tried:\n  "
        + "\n  ".join(errors)
        + f"\nPut the four files {[f for f, _ in FILES.values()]} into '{data_dir}' by hand, "
        "or point datamodule.data_dir at a folder that has them."
    )


def ensure_files(
    data_dir: str | Path, download: bool, mirrors: Sequence[str], timeout: float = 30.0
) -> dict[str, Path]:
    """The path of each of the four files, downloading missing ones when ``download``."""
    data_dir = Path(data_dir)
    paths = {}
    for part, (name, md5) in FILES.items():
        path = local_file(data_dir, name)
        if path is None:
            if not download:
                raise FileNotFoundError(
                    f"MNIST file '{name}' not found in '{data_dir}' and datamodule.download=false"
                )
            path = download_file(name, md5, data_dir, mirrors, timeout)
        paths[part] = path
    return paths


# ---------------------------------------------------------------------------------- data module
class MNISTDataModule(ImageClassificationDataModule):
    """MNIST (module docstring).

    Args:
        data_dir: folder of the IDX files (created and filled on first use).
        download: fetch missing files; false: a missing file is an error.
        n_val: training images held out for validation.
        mirrors: base URLs tried in order for each missing file.
        timeout: seconds to wait on a mirror.
        batch_size, normalize, crop_padding, seed, num_workers: see
            :class:`~datamodules.classification.ImageClassificationDataModule`.
    """

    input_shape = (1, 28, 28)
    n_classes = 10

    def __init__(
        self,
        data_dir: str = "data/mnist",
        download: bool = True,
        n_val: int = 5000,
        batch_size: int = 128,
        normalize: bool = True,
        crop_padding: int = 0,
        seed: int = 0,
        num_workers: int = 0,
        mirrors: Sequence[str] = MIRRORS,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(batch_size, normalize, crop_padding, seed, num_workers)
        self.data_dir = Path(data_dir)
        self.download = bool(download)
        self.n_val = check_positive_int("datamodule.n_val", n_val)
        self.mirrors = tuple(mirrors)
        self.timeout = float(timeout)
        self.save_hyperparameters(logger=False)

    def prepare_data(self) -> None:
        ensure_files(self.data_dir, self.download, self.mirrors, self.timeout)

    def _read_pair(self, paths: dict[str, Path], split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images = read_idx_images(paths[f"{split}_images"])
        labels = read_idx_labels(paths[f"{split}_labels"])
        if tuple(images.shape[1:]) != self.input_shape[1:]:
            raise ValueError(
                f"MNIST {split} images must be {self.input_shape[1]}x{self.input_shape[2]}, "
                f"'{paths[f'{split}_images']}' holds {list(images.shape[1:])}"
            )
        if len(images) != len(labels):
            raise ValueError(f"MNIST {split} set: {len(images)} images but {len(labels)} labels")
        if len(labels) and int(labels.max()) >= self.n_classes:
            raise ValueError(
                f"MNIST {split} labels must be 0-{self.n_classes - 1}, got {int(labels.max())}"
            )
        return images.unsqueeze(1).float() / 255.0, labels

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        paths = ensure_files(self.data_dir, self.download, self.mirrors, self.timeout)
        train_x, train_y = self._read_pair(paths, "train")
        if self.n_val >= len(train_y):
            raise ValueError(
                f"datamodule.n_val must be below the {len(train_y)} training images, "
                f"got {self.n_val}"
            )
        train, val = seeded_partition(
            len(train_y), (len(train_y) - self.n_val, self.n_val), self.seed
        )
        return {
            "train": (train_x[train], train_y[train]),
            "val": (train_x[val], train_y[val]),
            "test": self._read_pair(paths, "test"),
        }
