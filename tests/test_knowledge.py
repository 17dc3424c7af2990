"""Soft labels that match the student's views: stored per epoch, top-k compressed, or online."""

import numpy as np
import pytest
import torch

from kdcli.data.digits import Digits
from kdcli.knowledge.format import SoftLabels, predict_views, topk_probabilities, views_bytes
from kdcli.knowledge.teacher import OnlineTeacher, StoredKnowledge
from kdcli.models.smallcnn import SmallCNN


@pytest.fixture(scope="module")
def digits():
    return Digits(max_shift=2).load()


def stored_views(teacher, loader, epochs, num_samples, num_classes) -> torch.Tensor:
    views = torch.zeros(epochs, num_samples, num_classes)

    def write(epoch, index, logits):
        views[epoch, index] = logits

    predict_views(teacher, loader, epochs, write)
    return views


def test_views_equal_the_teacher_on_the_students_exact_view(digits):
    """What `views` stored for epoch e is what the teacher says online on the batch the
    student draws in epoch e, step after step."""
    torch.manual_seed(0)
    teacher = SmallCNN(10, 1, 8, width=8).eval()
    loader = digits.train_loader(batch_size=64, seed=5)
    views = stored_views(teacher, loader, 3, digits.num_train, 10)
    stored = StoredKnowledge(SoftLabels(views, per_epoch=True))
    online = OnlineTeacher(teacher, [])
    for epoch in range(3):
        for step, batch in enumerate(loader.epoch(epoch)):
            assert torch.allclose(
                stored(epoch, batch).logits, online(epoch, batch).logits, atol=1e-5
            )
            if step == 4:
                break


def test_views_differ_from_the_clean_view_when_augmented(digits):
    torch.manual_seed(0)
    teacher = SmallCNN(10, 1, 8, width=8).eval()
    loader = digits.train_loader(batch_size=64, seed=5)
    views = stored_views(teacher, loader, 2, digits.num_train, 10)
    batch = next(iter(loader.epoch(1)))
    clean = teacher(digits.eval_loader("train", 4096).normalise(digits.train.images[batch.index]))
    assert not torch.allclose(views[1, batch.index], clean, atol=1e-3)
    assert not torch.allclose(views[0, batch.index], views[1, batch.index], atol=1e-3)


def test_topk_soft_labels_keep_the_top_probabilities_and_spread_the_rest():
    torch.manual_seed(0)
    logits = torch.randn(6, 10) * 3
    probs, classes = topk_probabilities(logits, 3)
    soft = SoftLabels(probs, classes, num_classes=10)
    rebuilt = soft.logits(0, torch.arange(6)).softmax(1)
    exact = logits.softmax(1)
    top = exact.topk(3, dim=1)
    assert torch.allclose(rebuilt.gather(1, top.indices), top.values, atol=1e-5)
    rest = (1 - top.values.sum(1, keepdim=True)) / 7
    mask = torch.ones_like(exact, dtype=torch.bool).scatter_(1, top.indices, False)
    assert torch.allclose(rebuilt[mask].view(6, 7), rest.expand(6, 7), atol=1e-5)
    assert torch.allclose(rebuilt.sum(1), torch.ones(6), atol=1e-5)


def test_uncompressed_soft_labels_are_the_logits():
    logits = torch.randn(4, 2, 5)
    soft = SoftLabels(logits.half(), per_epoch=True)
    assert torch.equal(soft.logits(1, torch.tensor([1, 0])), logits[1, [1, 0]].half().float())


def test_views_size_estimate():
    float16 = np.dtype(np.float16)
    assert views_bytes(240, 50_000, 100, None, float16) == 240 * 50_000 * 100 * 2
    assert views_bytes(240, 50_000, 100, 10, float16) == 240 * 50_000 * 10 * (2 + 2)
