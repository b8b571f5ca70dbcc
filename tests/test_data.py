import gzip
import hashlib

import numpy as np
import pytest
from conftest import requires_data
from tests_helpers import write_idx

from bench.data.datasets import DATASETS, DataIntegrityError, DataNotFoundError
from bench.data.datasets._base import ArraySlot, DataFile, ImageDataset, read_idx


def test_idx_decoding_matches_header_and_bytes():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = write_idx(images)
    decoded = read_idx(raw)
    assert decoded.shape == (2, 3, 4)
    np.testing.assert_array_equal(decoded, images)
    with pytest.raises(DataIntegrityError, match="magic"):
        read_idx(b"\x00\x01\x08\x03" + raw[4:])
    with pytest.raises(DataIntegrityError, match="payload"):
        read_idx(raw[:-1])


def _toy_dataset(filename: str, content: bytes) -> ImageDataset:
    data_file = DataFile(
        filename,
        read_idx,
        content_sha256=frozenset({hashlib.sha256(content).hexdigest()}),
        urls=("http://127.0.0.1:9/unreachable.gz",),
    )
    slot = ArraySlot("train_images", (data_file,))
    return ImageDataset("toy", "Toy", ("a", "b"), (1, 2, 2), (slot,), "none", "none", 1, False)


def test_missing_data_names_every_place_looked_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    dataset = _toy_dataset("toy.gz", write_idx(np.zeros((1, 2, 2), np.uint8)))
    with pytest.raises(DataNotFoundError) as info:
        dataset.load(download=True)
    message = str(info.value)
    assert str(tmp_path / "data" / "toy" / "toy.gz") in message
    assert "/usr/share/datasets/toy/toy.gz" in message
    assert str(tmp_path / "cache" / "data" / "toy" / "toy.gz") in message
    assert "Download failed" in message and "unreachable" in message
    assert "BENCH_DATA_DIR" in message
    # A failed download leaves no partial file in the cache.
    assert not list((tmp_path / "cache").rglob("toy.gz*"))


def test_file_with_wrong_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    good = write_idx(np.zeros((1, 2, 2), np.uint8))
    dataset = _toy_dataset("toy.gz", good)
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.gz").write_bytes(gzip.compress(write_idx(np.ones((1, 2, 2), np.uint8))))
    with pytest.raises(DataIntegrityError, match="checksum mismatch"):
        dataset.load(download=False)
    (tmp_path / "toy" / "toy.gz").write_bytes(gzip.compress(good))
    array, _ = dataset.slots[0].candidates[0].load(tmp_path / "toy" / "toy.gz")
    assert array.shape == (1, 2, 2)


@requires_data("fashion-mnist")
def test_fashion_mnist_loads_with_canonical_sizes():
    data = DATASETS.get("fashion-mnist").load(download=False)
    assert data.train_images.shape == (60000, 1, 28, 28) and data.test_images.shape == (10000, 1, 28, 28)
    assert np.bincount(data.train_labels).tolist() == [6000] * 10
    assert np.bincount(data.test_labels).tolist() == [1000] * 10


@requires_data("mnist")
def test_mnist_reference_images_are_the_canonical_test_files():
    data = DATASETS.get("mnist").load(download=False)
    assert data.provenance["test_images"]["exact"] is True
    assert data.provenance["test_images"]["path"].endswith("t10k-images-idx3-ubyte.gz")
    assert data.train_images.shape == (60000, 1, 28, 28)
    assert int((data.test_labels == 9).sum()) == 1009


@requires_data("cifar10")
def test_cifar10_loads_as_rgb_with_canonical_sizes_and_says_it_is_lossy():
    data = DATASETS.get("cifar10").load(download=False)
    assert data.train_images.shape == (50000, 3, 32, 32) and data.test_images.shape == (10000, 3, 32, 32)
    assert np.bincount(data.train_labels).tolist() == [5000] * 10
    assert np.bincount(data.test_labels).tolist() == [1000] * 10
    # Channel means of canonical CIFAR-10 train images (R, G, B) = (125.3, 123.0, 113.9): a BGR mix-up would swap R and B.
    np.testing.assert_allclose(data.train_images.mean(axis=(0, 2, 3)), [125.3, 123.0, 113.9], atol=0.5)
    images, labels = data.provenance["train_images"], data.provenance["train_labels"]
    if images["path"].endswith("cifar10_jpeg_q75.tar"):
        assert images["exact"] is False and "JPEG" in images["note"] and labels["exact"] is True
