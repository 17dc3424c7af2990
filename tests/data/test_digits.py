"""The embedded digits dataset and the in-memory loaders."""

import pytest
import torch

from kdcli.config.checks import check_overrides
from kdcli.data.digits import Digits
from kdcli.errors import UserError


@pytest.fixture(scope="module")
def digits():
    return Digits().load()


def test_digits_split_is_stratified_and_fixed(digits):
    assert len(digits.train) == 1437 and len(digits.test) == 360
    assert digits.train.images.dtype == torch.uint8
    assert digits.train.images.shape[1:] == (1, 8, 8)
    per_class = torch.bincount(digits.test.labels, minlength=10)
    assert per_class.min() >= 35 and per_class.max() <= 37
    again = Digits().load()
    assert torch.equal(again.test.images, digits.test.images)


def test_digits_info_matches_the_data(digits):
    info = digits.info
    assert (info.num_classes, info.channels, info.image_size) == (10, 1, 8)
    pixels = digits.train.images.float() / 255
    assert info.mean[0] == pytest.approx(pixels.mean().item(), abs=1e-3)
    assert info.std[0] == pytest.approx(pixels.std().item(), abs=1e-3)


def test_bad_test_fraction_is_bad_input():
    with pytest.raises(UserError, match=r"dataset.test_fraction=1.5 must be a number in \(0, 1\)"):
        check_overrides(["dataset.test_fraction=1.5"])
    with pytest.raises(ValueError, match="test_size"):  # from Python: scikit-learn refuses it
        Digits(test_fraction=1.5).load()


def test_train_epochs_are_a_pure_function_of_seed_and_epoch(digits):
    loader = digits.train_loader(batch_size=100, seed=3)
    first = [(b.x.clone(), b.index.clone()) for b in loader.epoch(2)]
    second = [(b.x, b.index) for b in digits.train_loader(batch_size=100, seed=3).epoch(2)]
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(first, second, strict=True)
    )
    other_epoch = next(iter(loader.epoch(3)))
    assert not torch.equal(other_epoch.index, first[0][1])


def test_a_sample_gets_the_same_view_whatever_the_batch_size(digits):
    """The view of sample i at epoch e depends on (seed, e, i) only."""
    views = {}
    for batch_size in (64, 250):
        for batch in digits.train_loader(batch_size, seed=0).epoch(1):
            for i, x in zip(batch.index.tolist(), batch.x, strict=True):
                views.setdefault(i, []).append(x)
    shared = [v for v in views.values() if len(v) == 2]
    assert len(shared) > 1000
    assert all(torch.equal(a, b) for a, b in shared)


def test_training_drops_the_last_incomplete_batch_and_eval_keeps_it(digits):
    train = digits.train_loader(batch_size=100, seed=0)
    assert len(train) == 14 and sum(b.y.numel() for b in train.epoch(0)) == 1400
    test = digits.eval_loader("test", batch_size=100)
    batches = list(test.epoch(0))
    assert len(batches) == len(test) == 4
    assert torch.equal(torch.cat([b.index for b in batches]), torch.arange(360))


def test_augmentation_off_gives_the_clean_images(digits):
    clean = Digits(augment=False).load()
    batch = next(iter(clean.train_loader(batch_size=32, seed=0).epoch(0)))
    expected = clean.eval_loader("train", 32).normalise(clean.train.images[batch.index])
    assert torch.equal(batch.x, expected)
