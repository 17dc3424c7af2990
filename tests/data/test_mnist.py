import gzip

import numpy as np
import pytest
import torch
from dataset_files import idx_bytes, write_mnist

from kdcli.data.mnist import MNIST, FashionMNIST, read_idx
from kdcli.errors import UserError


def test_read_idx_plain_and_gzipped(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a-ubyte").write_bytes(idx_bytes(array))
    (tmp_path / "b-ubyte.gz").write_bytes(gzip.compress(idx_bytes(array)))
    assert np.array_equal(read_idx(tmp_path / "a-ubyte"), array)
    assert np.array_equal(read_idx(tmp_path / "b-ubyte.gz"), array)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00", "bad magic number"),  # float data, not uint8
        (idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-7], "bytes of data"),
        (b"\x00\x00\x08\x03\x00", "truncated header"),
    ],
)
def test_read_idx_names_a_corrupt_file(tmp_path, content, reason):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(UserError, match=reason) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_a_truncated_gzip_is_named(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(1000, np.uint8)))[:-12])
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz is not a readable IDX file"):
        read_idx(path)


def test_mnist_reads_torchvisions_raw_layout(data_root):
    write_mnist(data_root, train=30, test=10)
    data = MNIST(root=str(data_root)).load()
    assert data.train.images.shape == (30, 1, 28, 28)
    assert data.test.images.shape == (10, 1, 28, 28)
    assert data.labels("test").tolist() == list(range(10))
    assert data.info.model_kwargs() == {"num_classes": 10, "in_channels": 1, "image_size": 28}


def test_fashion_mnist_has_its_own_folder(data_root):
    write_mnist(data_root, folder="MNIST")
    with pytest.raises(UserError, match="FashionMNIST"):
        FashionMNIST(root=str(data_root)).check()
    write_mnist(data_root, folder="FashionMNIST", train=20)
    assert FashionMNIST(root=str(data_root)).load().num_train == 20


def test_images_and_labels_of_different_lengths(data_root):
    raw = write_mnist(data_root)
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(7, np.uint8)))
    )
    with pytest.raises(UserError, match="do not match"):
        MNIST(root=str(data_root)).check()


def test_download_true_fetches_both_splits(data_root, monkeypatch):
    calls = []

    class FakeDownload:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_mnist(data_root)

    monkeypatch.setattr("torchvision.datasets.MNIST", FakeDownload)
    assert MNIST(root=str(data_root), download=True).load().num_train == 30
    assert calls == [(str(data_root), True, True), (str(data_root), False, True)]


def test_augmentation_shifts_but_does_not_flip(data_root):
    write_mnist(data_root)
    data = MNIST(root=str(data_root), max_shift=2).load()
    assert data.augmentation.max_shift == 2 and not data.augmentation.flip
    assert MNIST(root=str(data_root), augment=False).load().augmentation is None
    assert isinstance(data.train.images, torch.Tensor)
