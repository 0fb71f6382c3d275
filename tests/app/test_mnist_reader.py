"""The MNIST IDX reader and data module on small files written here in MNIST's own format (gzip'd
and raw); nothing is downloaded."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.mnist import (
    FILES,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    MNISTDataModule,
    MNISTDownloadError,
    read_idx,
    read_idx_images,
    read_idx_labels,
)


def write_idx(path: Path, array: np.ndarray, magic: int, compress: bool = True) -> Path:
    """``array`` (uint8) as an IDX file: big-endian magic number, dimension sizes, values."""
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_mnist_folder(folder: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> dict:
    """A folder with the four MNIST files (28x28 random images, labels cycling 0-9)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / FILES[f"{split}_images"][0], images, IMAGES_MAGIC)
        write_idx(folder / FILES[f"{split}_labels"][0], labels, LABELS_MAGIC)
        data[split] = (images, labels)
    return data


@pytest.mark.parametrize("compress", [True, False])
def test_reader_round_trips_images_and_labels(tmp_path, compress):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.uint8)
    suffix = ".gz" if compress else ""
    image_file = write_idx(tmp_path / f"img-idx3-ubyte{suffix}", images, IMAGES_MAGIC, compress)
    label_file = write_idx(tmp_path / f"lab-idx1-ubyte{suffix}", labels, LABELS_MAGIC, compress)

    got_images = read_idx_images(image_file)
    got_labels = read_idx_labels(label_file)
    assert got_images.shape == (7, 5, 4) and got_images.dtype == torch.uint8
    assert got_labels.shape == (7,) and got_labels.dtype == torch.int64
    assert np.array_equal(got_images.numpy(), images)
    assert got_labels.tolist() == [3, 1, 4, 1, 5, 9, 2]
    # the magic numbers are what MNIST's files carry: 0x0803 (3-D ubyte), 0x0801 (1-D ubyte)
    assert (IMAGES_MAGIC, LABELS_MAGIC) == (0x0803, 0x0801) == (2051, 2049)


def test_bad_magic_number_is_named(tmp_path):
    labels = write_idx(tmp_path / "labels.gz", np.zeros(4, np.uint8), LABELS_MAGIC)
    with pytest.raises(ValueError, match="magic number 2049, expected 2051 \\(images file\\)"):
        read_idx_images(labels)
    images = write_idx(tmp_path / "images.gz", np.zeros((2, 3, 3), np.uint8), IMAGES_MAGIC)
    with pytest.raises(ValueError, match="magic number 2051, expected 2049 \\(labels file\\)"):
        read_idx_labels(images)


def test_truncated_payload_is_named(tmp_path):
    path = tmp_path / "short.gz"
    header = struct.pack(">I", IMAGES_MAGIC) + struct.pack(">3I", 2, 28, 28)
    path.write_bytes(gzip.compress(header + bytes(100)))
    with pytest.raises(ValueError, match=r"dimensions \[2, 28, 28\] need 1568 values.* 100"):
        read_idx(path, IMAGES_MAGIC)


def test_datamodule_reads_a_generated_folder(tmp_path):
    data = write_mnist_folder(tmp_path / "mnist")
    dm = MNISTDataModule(data_dir=str(tmp_path / "mnist"), download=False, n_val=8, batch_size=5)
    dm.prepare_data()
    dm.setup()
    assert dm.model_dims() == {"input_shape": [1, 28, 28], "n_classes": 10}
    sizes = {split: len(part) for split, part in dm.parts.items()}
    assert sizes == {"train": 22, "val": 8, "test": 10}
    test = dm.parts["test"]
    assert test.inputs.shape == (10, 1, 28, 28) and test.inputs.dtype == torch.float32
    assert test.labels.tolist() == data["test"][1].tolist()
    expected = (data["test"][0] / 255.0 - dm.mean) / dm.std
    assert torch.allclose(test.inputs[:, 0], torch.as_tensor(expected).float(), atol=1e-5)
    train_pixels = dm.parts["train"].inputs
    assert abs(float(train_pixels.mean())) < 1e-5 and abs(float(train_pixels.std()) - 1) < 1e-4
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"].shape == (5, 1, 28, 28) and batch["labels"].dtype == torch.int64
    # the same seed gives the same validation images
    again = MNISTDataModule(data_dir=str(tmp_path / "mnist"), download=False, n_val=8)
    again.setup()
    assert torch.equal(again.parts["val"].labels, dm.parts["val"].labels)


def test_uncompressed_files_are_accepted(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 3)):
        name_images, name_labels = FILES[f"{split}_images"][0], FILES[f"{split}_labels"][0]
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(folder / name_images.removesuffix(".gz"), images, IMAGES_MAGIC, False)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(folder / name_labels.removesuffix(".gz"), labels, LABELS_MAGIC, False)
    dm = MNISTDataModule(data_dir=str(folder), download=False, n_val=2)
    dm.setup()
    assert len(dm.parts["train"]) == 10 and len(dm.parts["test"]) == 3


def test_missing_files_without_download_are_named(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path / "empty"), download=False)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz' not found in"):
        dm.setup()


def test_offline_download_fails_clearly(tmp_path):
    # a closed local port: the connection is refused at once, nothing leaves the machine
    mirror = "http://127.0.0.1:9/mnist/"
    dm = MNISTDataModule(data_dir=str(tmp_path / "dl"), mirrors=[mirror], timeout=2.0)
    with pytest.raises(MNISTDownloadError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "could not download MNIST file 'train-images-idx3-ubyte.gz'" in message
    assert f"{mirror}train-images-idx3-ubyte.gz" in message
    assert str(tmp_path / "dl") in message
    assert not list((tmp_path / "dl").glob("*.part"))


def test_wrong_image_size_is_named(tmp_path):
    folder = tmp_path / "small"
    write_mnist_folder(folder)
    write_idx(folder / FILES["test_images"][0], np.zeros((10, 8, 8), np.uint8), IMAGES_MAGIC)
    dm = MNISTDataModule(data_dir=str(folder), download=False, n_val=5)
    with pytest.raises(ValueError, match=r"test images must be 28x28, .* holds \[8, 8\]"):
        dm.setup()
