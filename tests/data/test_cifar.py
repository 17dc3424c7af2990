import pickle

import numpy as np
import pytest
import torch
from dataset_files import cifar_batch, write_cifar10, write_cifar100

from kdcli.data.cifar import CIFAR10, CIFAR100
from kdcli.errors import UserError


def test_cifar10_reads_the_batches_in_order(data_root):
    written = write_cifar10(data_root, per_batch=4, test=10)
    data = CIFAR10(root=str(data_root)).load()
    expected = np.concatenate([written[f"data_batch_{i}"] for i in range(1, 6)])
    assert data.train.images.dtype == torch.uint8
    assert data.train.images.shape == (20, 3, 32, 32)
    assert torch.equal(data.train.images, torch.from_numpy(expected))
    assert torch.equal(data.test.images, torch.from_numpy(written["test_batch"]))
    assert data.labels("train").tolist() == [0, 1, 2, 3] * 5
    assert data.info.model_kwargs() == {"num_classes": 10, "in_channels": 3, "image_size": 32}


def test_cifar10_root_may_be_the_batches_folder_itself(data_root):
    write_cifar10(data_root)
    data = CIFAR10(root=str(data_root / "cifar-10-batches-py")).load()
    assert data.num_train == 20


def test_cifar100_uses_the_fine_labels(data_root):
    write_cifar100(data_root, train=20, test=10)
    data = CIFAR100(root=str(data_root)).load()
    assert data.info.num_classes == 100
    assert data.labels("train").tolist() == [(3 * i) % 100 for i in range(20)]


def test_missing_files_name_the_folder_and_the_download_flag(data_root):
    with pytest.raises(UserError) as error:
        CIFAR10(root=str(data_root)).check()
    message = str(error.value)
    assert str(data_root / "cifar-10-batches-py") in message
    assert "data_batch_1" in message and "dataset.download=true" in message


def test_a_truncated_batch_is_named(data_root):
    write_cifar10(data_root)
    batch = data_root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(UserError, match="data_batch_3 is not a readable CIFAR batch"):
        CIFAR10(root=str(data_root)).check()


def test_a_batch_that_would_run_code_is_refused(data_root, tmp_path):
    write_cifar10(data_root)
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (data_root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(UserError, match="test_batch is not a readable CIFAR batch"):
        CIFAR10(root=str(data_root)).check()
    assert not marker.exists()


def test_labels_outside_the_classes_are_an_error(data_root):
    write_cifar10(data_root)
    images = np.zeros((2, 3, 32, 32), np.uint8)
    test_batch = data_root / "cifar-10-batches-py" / "test_batch"
    cifar_batch(test_batch, images, np.array([3, 12]), "labels")
    with pytest.raises(UserError, match="outside 0..9"):
        CIFAR10(root=str(data_root)).check()


def test_download_true_calls_torchvision_with_the_root(data_root, monkeypatch):
    calls = []

    class FakeDownload:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_cifar10(data_root)

    monkeypatch.setattr("torchvision.datasets.CIFAR10", FakeDownload)
    CIFAR10(root=str(data_root), download=True).check()
    assert calls == [(str(data_root), True, True)]


def test_a_failed_download_is_a_user_error(data_root, monkeypatch):
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("network is unreachable")

    monkeypatch.setattr("torchvision.datasets.CIFAR100", offline)
    with pytest.raises(UserError, match="could not download CIFAR-100 into"):
        CIFAR100(root=str(data_root), download=True).check()


def test_val_fraction_holds_out_each_class_disjointly(data_root):
    write_cifar10(data_root, per_batch=10, test=10)  # 50 images, 5 per class
    full = CIFAR10(root=str(data_root)).load()
    data = CIFAR10(root=str(data_root), val_fraction=0.2, split_seed=3).load()
    assert data.splits == ("train", "val", "test")
    assert data.num_train == 40 and len(data.val) == 10
    assert torch.bincount(data.labels("val"), minlength=10).tolist() == [1] * 10
    pooled = torch.cat([data.train.images, data.val.images]).flatten(1)
    assert torch.equal(pooled.sort(0).values, full.train.images.flatten(1).sort(0).values)
    again = CIFAR10(root=str(data_root), val_fraction=0.2, split_seed=3).load()
    assert torch.equal(again.val.images, data.val.images)
    assert torch.equal(data.test.images, full.test.images)  # the test split is untouched
