"""`kd train` on each on-disk format through the real command, and its bad-input exits."""

import json

import pytest
from dataset_files import tiny_train_args, write_cifar10, write_cifar100, write_imagefolder
from dataset_files import write_mnist as write_mnist_tree


def write_fashion_mnist(root):
    write_mnist_tree(root, folder="FashionMNIST")


@pytest.mark.parametrize(
    ("dataset", "writer", "shape"),
    [
        ("cifar10", write_cifar10, (10, 3, 32)),
        ("cifar100", write_cifar100, (100, 3, 32)),
        ("mnist", write_mnist_tree, (10, 1, 28)),
        ("fashion_mnist", write_fashion_mnist, (10, 1, 28)),
    ],
)
def test_kd_train_on_a_standard_set(kd, tmp_path, data_root, dataset, writer, shape):
    writer(data_root)
    result = kd(*tiny_train_args(tmp_path, f"dataset={dataset}", f"dataset.root={data_root}"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    facts = report["dataset"]
    assert (facts["num_classes"], facts["channels"], facts["image_size"]) == shape
    assert 0.0 <= report["student"]["top1"] <= 1.0


def test_kd_train_on_an_imagefolder_of_png_and_jpeg(kd, tmp_path, data_root):
    write_imagefolder(data_root, per_class=6, splits=())
    args = tiny_train_args(
        tmp_path,
        "dataset=imagefolder",
        f"dataset.root={data_root}",
        "dataset.image_size=16",
        "dataset.workers=1",
        "dataset.val_fraction=0.2",
    )
    result = kd(*args)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["dataset"]["num_classes"] == 3 and report["dataset"]["image_size"] == 16
    assert "val_top1" in report["teacher"]


@pytest.mark.parametrize(
    ("setup", "overrides", "expected"),
    [
        ("none", ["dataset=cifar10"], "dataset.download=true"),
        ("truncated_mnist", ["dataset=mnist"], "train-images-idx3-ubyte.gz is not a readable"),
        ("empty_class", ["dataset=imagefolder"], "holds no images"),
        ("none", ["dataset=imagefolder", "dataset.root=???"], "dataset.root=..."),
    ],
)
def test_bad_data_exits_2_before_writing_anything(
    kd, tmp_path, data_root, setup, overrides, expected
):
    if setup == "truncated_mnist":
        raw = write_mnist_tree(data_root)
        images = raw / "train-images-idx3-ubyte.gz"
        images.write_bytes(images.read_bytes()[:100])
    if setup == "empty_class":
        write_imagefolder(data_root, per_class=2)
        (data_root / "train" / "emu").mkdir()
    result = kd(*tiny_train_args(tmp_path, f"dataset.root={data_root}", *overrides))
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_download_true_reaches_torchvision_and_fails_cleanly_offline(kd, tmp_path, data_root):
    offline = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    args = tiny_train_args(tmp_path, "dataset=cifar100", f"dataset.root={data_root}")
    result = kd(*args, "dataset.download=true", env={**offline, "no_proxy": "", "NO_PROXY": ""})
    assert result.returncode == 2, result.stderr
    assert f"could not download CIFAR-100 into {data_root}" in result.stderr
    assert not (tmp_path / "run").exists()
