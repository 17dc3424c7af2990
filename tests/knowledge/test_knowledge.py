"""Soft labels that match the student's views: stored per epoch, top-k compressed, or online;
stored finite and exact whatever the teacher's scale."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from kd_pipeline import CPU, train_in_process
from kd_settings import TINY

from kdcli.config.checks import check_overrides
from kdcli.config.objects import build
from kdcli.data.digits import Digits
from kdcli.errors import UserError
from kdcli.knowledge.format import (
    SoftLabels,
    all_finite,
    encode_soft_labels,
    load_array,
    nonfinite_files,
    store_features,
    topk_probabilities,
    views_bytes,
    write_views,
)
from kdcli.knowledge.predict import predict_views
from kdcli.knowledge.teacher import OnlineTeacher, StoredKnowledge
from kdcli.losses import SoftTargetKD
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


def test_a_runs_stored_views_are_the_teacher_on_the_views_its_student_draws(tmp_path):
    """The claim end to end: for every epoch e and training sample i, what `kd train` stored
    is the trained teacher's output on the view of i that the student's own loader
    (data.train_loader(student.batch_size, seed)) draws in epoch e. Seed 3, so that a
    hard-coded 0 (or seed + 1) in the soft-label stage fails."""
    settings = [*TINY, "baseline=false", "precision=fp32", "soft_labels.mode=views"]
    settings += ["student.epochs=2", "seed=3"]
    report = train_in_process(tmp_path, *settings)
    stored = np.load(Path(report["soft_labels"]["path"]) / "logits.npy", allow_pickle=False)
    stored = torch.from_numpy(stored).float()
    assert stored.shape == (2, 1437, 10), "[epochs, training samples, classes]"

    # the run's teacher, loaded as kd train loads teacher.checkpoint, and the run's data
    [cfg] = check_overrides([*settings, f"teacher.checkpoint={report['teacher']['checkpoint']}"])
    again = build(cfg, CPU)
    teacher = again.teacher.module.eval()
    loader = again.data.train_loader(cfg.student.batch_size, cfg.seed)
    for epoch in range(2):
        seen = torch.zeros(1437, dtype=torch.bool)
        for batch in loader.epoch(epoch):
            with torch.no_grad():
                expected = teacher(batch.x).softmax(-1)
            # stored as float16 logits shifted by their row's maximum (knowledge/format.py):
            # the same softmax, to float16's 11 significant bits (measured: 2e-5 apart; the
            # views of another seed are up to 2e-2 apart)
            got = stored[epoch, batch.index].softmax(-1)
            torch.testing.assert_close(got, expected, atol=1e-3, rtol=0)
            seen[batch.index] = True
        assert int(seen.sum()) > 1437 - 64, "every batch the student draws (64 each) was compared"


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


def kd_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return SoftTargetKD(alpha=1.0, temperature=4.0)(student, teacher, torch.zeros(len(student)))


def huge_logits() -> torch.Tensor:
    """Teacher logits around 1e5, as from an overconfident teacher; the first row spans more
    than float16 holds (2e5 > 65504), the second is close ties far above float16's max."""
    return torch.tensor(
        [
            [1.0e5, -1.0e5, 3.0e4, 0.0, 99_990.0],
            [1.0e5 + 3.0, 1.0e5, 1.0e5 + 1.0, 1.0e5 - 2.0, 1.0e5 + 0.5],
        ]
    )


def test_stored_logits_are_finite_and_keep_the_softmax_of_huge_logits():
    logits = huge_logits()
    with np.errstate(over="ignore"):
        assert not np.isfinite(logits.numpy().astype(np.float16)).all(), "raw float16 overflows"
    arrays, clamped = encode_soft_labels(logits, None, np.dtype(np.float16))
    stored = arrays["logits"]
    assert stored.dtype == np.float16 and np.isfinite(stored).all()
    assert (stored.max(axis=1) == 0).all(), "each row is shifted by its maximum"
    assert clamped == 1, "only the first row's tail lies beyond -65504"
    restored = SoftLabels(torch.from_numpy(stored)).logits(0, torch.arange(2))
    for temperature in (1.0, 4.0, 20.0):
        exact = (logits.double() / temperature).softmax(1)
        torch.testing.assert_close((restored.double() / temperature).softmax(1), exact)
    student = torch.randn(2, 5)
    torch.testing.assert_close(kd_loss(student, restored), kd_loss(student, logits))


def test_shifting_keeps_ordinary_logits_as_they_were():
    torch.manual_seed(0)
    logits = torch.randn(8, 10) * 5
    arrays, clamped = encode_soft_labels(logits, None, np.dtype(np.float32))
    assert clamped == 0
    shifted = torch.from_numpy(arrays["logits"])
    torch.testing.assert_close(shifted, logits - logits.amax(1, keepdim=True))
    torch.testing.assert_close(shifted.softmax(1), logits.softmax(1))


def test_topk_of_a_confident_teacher_gives_finite_logits_and_loss():
    """The kept probabilities of a near one-hot row underflow float16 to 0; log(0) = -inf
    would make the KL term NaN."""
    arrays, _ = encode_soft_labels(huge_logits(), 3, np.dtype(np.float16))
    assert (arrays["topk_probs"][:, 1:] == 0).any(), "probabilities below float16's smallest"
    soft = SoftLabels(
        torch.from_numpy(arrays["topk_probs"]),
        torch.from_numpy(arrays["topk_classes"]),
        num_classes=5,
    )
    restored = soft.logits(0, torch.arange(2))
    assert torch.isfinite(restored).all()
    assert restored.argmax(1).tolist() == [0, 0]
    assert torch.isfinite(kd_loss(torch.randn(2, 5), restored))


def test_all_finite_checks_every_chunk():
    values = np.zeros(10, dtype=np.float16)
    assert all_finite(values, chunk=3)
    values[9] = np.inf
    assert not all_finite(values, chunk=3)
    assert all_finite(np.array([1, 2], dtype=np.int16))


def test_a_stored_array_with_nan_is_refused_naming_its_path(tmp_path):
    path = tmp_path / "entry" / "logits.npy"
    path.parent.mkdir()
    np.save(path, np.array([[0.0, np.nan]], dtype=np.float16))
    with pytest.raises(UserError, match=f"{path}.*delete {path.parent}"):
        load_array(path)
    assert nonfinite_files(path.parent) == ["logits.npy"]


def test_features_beyond_float16_are_stored_as_float32(tmp_path):
    features = {"stage1": torch.full((2, 3), 1e5), "stage2": torch.full((2, 3), -7.5)}
    dtypes = store_features(tmp_path, features, np.dtype(np.float16))
    assert dtypes == {"stage1": "float32", "stage2": "float16"}
    big = np.load(tmp_path / "feature-stage1.npy")
    assert big.dtype == np.float32 and (big == 1e5).all(), "not shifted, not overflowed"
    assert np.load(tmp_path / "feature-stage2.npy").dtype == np.float16


def test_views_of_finished_epochs_survive_a_killed_build_and_are_not_recomputed(digits, tmp_path):
    torch.manual_seed(0)
    teacher = SmallCNN(10, 1, 8, width=8).eval()
    loader = digits.train_loader(batch_size=64, seed=5)
    args = (teacher, loader, 3, digits.num_train, (10,), None, np.dtype("float16"))
    straight = tmp_path / "straight"
    straight.mkdir()
    write_views(straight, *args, lambda logits: None)

    batches = []

    def dies_in_the_last_epoch(logits):
        batches.append(len(logits))
        if len(batches) == 2 * len(loader) + 3:
            raise KeyboardInterrupt  # kill -9 would leave the same files

    progress, entry = tmp_path / "views.partial", tmp_path / "entry"
    entry.mkdir()
    with pytest.raises(KeyboardInterrupt):
        write_views(entry, *args, dies_in_the_last_epoch, progress=progress)
    assert json.loads((progress / "progress.json").read_text())["epochs"] == 2

    batches.clear()
    _, images, resumed = write_views(
        entry, *args, lambda logits: batches.append(1), progress=progress
    )
    assert resumed == 2 and len(batches) == len(loader), "only the last epoch is computed again"
    assert images == 3 * len(loader) * 64
    assert not progress.exists()
    stored = np.load(entry / "logits.npy")
    assert np.array_equal(stored, np.load(straight / "logits.npy"))


def test_unusable_views_progress_is_ignored_and_the_build_starts_afresh(digits, tmp_path, caplog):
    torch.manual_seed(0)
    teacher = SmallCNN(10, 1, 8, width=8).eval()
    loader = digits.train_loader(batch_size=64, seed=5)
    progress, entry = tmp_path / "views.partial", tmp_path / "entry"
    progress.mkdir()
    entry.mkdir()
    (progress / "progress.json").write_text("{not json")
    args = (teacher, loader, 2, digits.num_train, (10,), None, np.dtype("float16"))
    _, images, resumed = write_views(entry, *args, lambda logits: None, progress=progress)
    assert resumed == 0 and "ignoring the unfinished views" in caplog.text
    assert images == 2 * len(loader) * 64 and (entry / "logits.npy").is_file()
