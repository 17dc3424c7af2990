import os

import pytest
import torch
from bad_files import bomb_png
from dataset_files import write_image, write_imagefolder

from kdcli.data.imagefolder import ImageFolder
from kdcli.data.imagefolder_scan import list_files
from kdcli.errors import UserError


def source(root, **kwargs) -> ImageFolder:
    return ImageFolder(root=str(root), image_size=16, workers=0, **kwargs)


def test_train_and_val_folders_are_the_splits(data_root):
    write_imagefolder(data_root, per_class=4, splits=("train", "val"))
    folder = source(data_root)
    folder.check()
    assert folder.tree.classes == ["cat", "dog", "owl"]
    data = folder.load()
    assert data.num_train == 12 and len(data.labels("test")) == 12
    assert {p.suffix for p in data.files["train"].paths} == {".png", ".jpg"}
    assert folder.info.model_kwargs() == {"num_classes": 3, "in_channels": 3, "image_size": 16}


def test_test_folder_is_used_when_there_is_no_val(data_root):
    write_imagefolder(data_root, per_class=2, splits=("train", "test"))
    assert source(data_root).load().files["test"].paths[0].parts[-3] == "test"


def test_a_single_tree_is_split_by_seed_per_class(data_root):
    write_imagefolder(data_root, per_class=5, splits=())
    data = source(data_root, test_fraction=0.4, val_fraction=0.34, split_seed=1).load()
    assert torch.bincount(data.labels("test")).tolist() == [2, 2, 2]
    assert torch.bincount(data.labels("val")).tolist() == [1, 1, 1]
    assert data.num_train == 6
    names = [set(data.files[s].paths) for s in data.splits]
    assert sum(len(n) for n in names) == len(set.union(*names)) == 15


def test_statistics_come_from_the_images(data_root):
    write_imagefolder(data_root, per_class=2, splits=())
    info = source(data_root, test_fraction=0.5).info
    # each channel is 200 in one class and 40 in the other two: mean 280/765, std about 75/255
    assert info.mean == pytest.approx((0.366,) * 3, abs=0.02)
    assert info.std == pytest.approx((0.30,) * 3, abs=0.03)
    assert source(data_root, mean=[0.5] * 3, std=[0.2] * 3).info.std == (0.2, 0.2, 0.2)


def test_loaders_yield_normalised_batches_on_the_device(data_root):
    write_imagefolder(data_root, per_class=4)
    data = source(data_root).load().to(torch.device("cpu"))
    loader = data.train_loader(batch_size=5, seed=0)
    batches = list(loader.epoch(0))
    assert len(loader) == len(batches) == 2
    assert batches[0].x.shape == (5, 3, 16, 16) and batches[0].x.dtype == torch.float32
    test = list(data.eval_loader("test", 5).epoch(0))
    assert torch.cat([b.index for b in test]).tolist() == list(range(12))
    assert torch.equal(torch.cat([b.y for b in test]), data.labels("test"))


def test_a_view_is_a_function_of_seed_epoch_and_index(data_root):
    write_imagefolder(data_root, per_class=4)
    data = source(data_root).load()
    first = data.train_loader(4, seed=3).images
    again = data.train_loader(4, seed=3).images
    assert torch.equal(first[(2, 5)][0], again[(2, 5)][0])
    assert any(not torch.equal(first[(2, i)][0], first[(3, i)][0]) for i in range(12))
    state = torch.get_rng_state()
    first[(0, 0)]
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone


def test_views_with_worker_processes_match(data_root):
    write_imagefolder(data_root, per_class=2)
    in_process = source(data_root).load().train_loader(3, seed=1)
    workers = ImageFolder(root=str(data_root), image_size=16, workers=1).load()
    with_workers = workers.train_loader(3, seed=1)
    for a, b in zip(in_process.epoch(1), with_workers.epoch(1), strict=True):
        assert torch.equal(a.index, b.index) and torch.equal(a.x, b.x)


def test_an_empty_class_folder_is_named(data_root):
    write_imagefolder(data_root, per_class=2)
    (data_root / "train" / "emu").mkdir()
    (data_root / "val" / "emu").mkdir()
    (data_root / "val" / "emu" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match=f"class folder {data_root / 'train' / 'emu'} holds no"):
        source(data_root).check()


def test_different_class_sets_in_train_and_val(data_root):
    write_imagefolder(data_root, per_class=2)
    write_image(data_root / "val" / "emu" / "0.png", (1, 2, 3))
    with pytest.raises(UserError, match=r"different class folders.*only in val/: \['emu'\]"):
        source(data_root).check()


def test_unreadable_images_are_counted_and_named(data_root):
    write_imagefolder(data_root, per_class=2)
    (data_root / "train" / "dog" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (data_root / "val" / "cat" / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match="2 file\\(s\\) could not be opened") as error:
        source(data_root).check()
    assert "broken.jpg" in str(error.value) and "empty.png" in str(error.value)


def test_a_file_that_fails_to_decode_is_named_by_the_loader(data_root):
    write_imagefolder(data_root, per_class=2)
    png = data_root / "val" / "owl" / "0.png"
    png.write_bytes(png.read_bytes()[:60])  # the header opens, the pixels are gone
    data = source(data_root).load()
    with pytest.raises(UserError, match=f"could not decode {png}"):
        list(data.eval_loader("test", 4).epoch(0))


def test_a_decompression_bomb_is_refused_by_its_header(data_root):
    write_imagefolder(data_root, per_class=2)
    bomb = data_root / "train" / "owl" / "bomb.png"
    bomb.write_bytes(bomb_png())
    with pytest.raises(UserError, match="1 image\\(s\\) have more pixels than dataset.max_pixels"):
        source(data_root).check()


def test_images_over_max_pixels_are_named(data_root):
    write_imagefolder(data_root, per_class=2)  # 20 x 14 = 280 pixels each
    large = data_root / "val" / "dog" / "large.png"
    write_image(large, (1, 2, 3), size=(40, 30))
    with pytest.raises(UserError, match="max_pixels=1000") as error:
        source(data_root, max_pixels=1000).check()
    assert f"{large} (40 x 30 pixels)" in str(error.value)
    source(data_root, max_pixels=1200).check()


@pytest.mark.parametrize(
    ("swap", "expected"),
    [
        (lambda png: png.write_bytes(bomb_png()), "have more pixels than dataset.max_pixels="),
        (lambda png: write_image(png, 9, size=(40, 30)), "{png}. Decoding one would take"),
    ],
    ids=["bomb", "over max_pixels"],
)
def test_an_image_swapped_after_the_scan_is_named_from_a_dataloader_worker(
    data_root, swap, expected
):
    """An exception in a worker would come back as a traceback; the file comes back named
    (a truncated or empty file comes back the same way: test_a_file_that_fails_to_decode...)."""
    write_imagefolder(data_root, per_class=2)
    data = ImageFolder(root=str(data_root), image_size=16, workers=1, max_pixels=1000).load()
    png = data_root / "val" / "owl" / "0.png"
    swap(png)
    with pytest.raises(UserError) as error:
        list(data.eval_loader("test", 6).epoch(0))
    assert expected.format(png=png) in str(error.value) and "Traceback" not in str(error.value)


def test_one_class_folder_is_refused(data_root):
    write_imagefolder(data_root / "images", per_class=2, splits=())
    for extra in ("dog", "owl"):
        for path in (data_root / "images" / extra).iterdir():
            path.rename(data_root / "images" / "cat" / f"{extra}-{path.name}")
        (data_root / "images" / extra).rmdir()
    with pytest.raises(UserError, match="distillation needs at least two") as error:
        source(data_root).check()
    assert f"dataset.root={data_root / 'images'}" in str(error.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_only_regular_files_are_listed(data_root):
    write_imagefolder(data_root, per_class=1, splits=())
    os.mkfifo(data_root / "cat" / "pipe.png")  # opening it would wait for a writer forever
    assert [p.name for p in list_files(data_root, ["cat"]).paths] == ["0.png"]


@pytest.mark.slow
def test_a_grayscale_and_colour_mix_is_an_error_unless_converted(data_root):
    write_imagefolder(data_root, per_class=2)
    gray = data_root / "train" / "cat" / "gray.png"
    write_image(gray, 128, mode="L")
    with pytest.raises(UserError, match="dataset.channels=3") as error:
        source(data_root).check()
    assert str(gray) in str(error.value)
    data = source(data_root, channels=3).load()
    assert data.info.channels == 3
    assert next(data.eval_loader("train", 16).epoch(0)).x.shape[1] == 3
    assert source(data_root, channels=1).info.channels == 1


def test_a_grayscale_tree_has_one_channel(data_root):
    for name in ("a", "b"):
        for i in range(3):
            write_image(data_root / name / f"{i}.png", 60 * i, mode="L")
    assert source(data_root, test_fraction=0.34).info.channels == 1


def test_root_must_be_a_folder(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        source(tmp_path / "nowhere").check()
