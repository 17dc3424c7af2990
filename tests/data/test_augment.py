import torch
import torch.nn.functional as F

from kdcli.data.augment import ShiftFlip
from kdcli.data.base import DatasetInfo
from kdcli.data.memory import EpochLoader, Split

INFO = DatasetInfo("toy", 4, 3, 8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def toy_split(count: int = 24) -> Split:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 8, 8), dtype=torch.uint8, generator=generator)
    return Split(images, torch.arange(count) % 4)


def views(loader: EpochLoader, epoch: int) -> dict[int, torch.Tensor]:
    """Each sample's training view in `epoch`, by its index in the split."""
    found = {}
    for batch in loader.epoch(epoch):
        found.update({int(i): x for i, x in zip(batch.index, batch.x, strict=True)})
    return found


def test_shift_is_pad_then_crop():
    images = toy_split(5).images
    params = ShiftFlip(max_shift=2, flip=True).sample(5, seed=1, epoch=0)
    out = ShiftFlip(max_shift=2, flip=True).apply(images, params)
    padded = F.pad(images, (2, 2, 2, 2))
    for k, (dy, dx, flip) in enumerate(params.tolist()):
        expected = padded[k, :, dy : dy + 8, dx : dx + 8]
        assert torch.equal(out[k], expected.flip(-1) if flip else expected)


def test_a_view_depends_on_seed_epoch_and_sample_only():
    augmentation = ShiftFlip(max_shift=4, flip=True)
    split = toy_split()
    small = EpochLoader(split, INFO, 4, train=True, seed=7, augmentation=augmentation)
    large = EpochLoader(split, INFO, 8, train=True, seed=7, augmentation=augmentation)
    by_small, by_large = views(small, 3), views(large, 3)
    assert by_small.keys() == by_large.keys()
    assert all(torch.equal(by_small[i], by_large[i]) for i in by_small)
    assert any(not torch.equal(by_small[i], views(small, 4)[i]) for i in by_small)
    other_seed = EpochLoader(split, INFO, 4, train=True, seed=8, augmentation=augmentation)
    assert any(not torch.equal(by_small[i], views(other_seed, 3)[i]) for i in by_small)


def test_evaluation_batches_are_in_order_and_unaugmented():
    split = toy_split(10)
    loader = EpochLoader(split, INFO, 4, train=False, augmentation=ShiftFlip(4, True))
    batches = list(loader.epoch(5))
    assert [len(b.y) for b in batches] == [4, 4, 2]
    x = torch.cat([b.x for b in batches])
    assert torch.allclose(x, (split.images.float() / 255 - 0.5) / 0.25, atol=1e-5)


def test_training_drops_the_last_partial_batch_and_shuffles():
    loader = EpochLoader(toy_split(10), INFO, 4, train=True, seed=0)
    batches = list(loader.epoch(0))
    assert len(loader) == len(batches) == 2
    assert torch.cat([b.index for b in batches]).tolist() != list(range(8))
