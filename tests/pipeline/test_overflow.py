"""End to end: a teacher whose logits reach 1e5 (beyond float16's 65504) distills without NaN
in every soft-label mode, and a teacher that outputs NaN is named as the cause."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kdcli.data.digits import Digits
from kdcli.models.smallcnn import SmallCNN
from kdcli.store.checkpoint import save_model


@pytest.fixture(scope="module")
def digits():
    return Digits().load()


def teacher_logits(model: SmallCNN, digits) -> torch.Tensor:
    loader = digits.eval_loader("train", 4096)
    with torch.no_grad():
        return torch.cat([model.eval()(batch.x) for batch in loader.epoch(0)])


@pytest.fixture(scope="module")
def huge_teacher(digits, tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """TINY's teacher (a smallcnn of width 8) with its head scaled so that its largest logit
    on the training set is 1e5 (untrained: what matters here is the scale)."""
    torch.manual_seed(0)
    model = SmallCNN(10, 1, 8, width=8)
    scale = 1e5 / teacher_logits(model, digits).abs().max()
    with torch.no_grad():
        model.fc.weight *= scale
        model.fc.bias *= scale
    logits = teacher_logits(model, digits)
    assert logits.abs().max() > 9e4 and (logits.amax(1) - logits.amin(1)).max() > 65504
    path = tmp_path_factory.mktemp("teacher") / "huge.pt"
    save_model(path, model)
    return path, logits


def test_a_teacher_with_logits_near_1e5_distills_in_every_mode(kd, tiny, tmp_path, huge_teacher):
    path, logits = huge_teacher
    result = kd(
        "train",
        "-m",
        *tiny,
        "baseline=false",
        f"teacher.checkpoint={path}",
        "soft_labels.mode=static,views",
        "soft_labels.topk=null,3",
    )
    assert result.returncode == 0, result.stderr
    assert "overflow" not in result.stderr and "nan" not in result.stderr.lower()
    reports = [json.loads((run / "report.json").read_text()) for run in result.runs()]
    modes = sorted((r["soft_labels"]["mode"], r["soft_labels"]["topk"] or 0) for r in reports)
    assert modes == [("static", 0), ("static", 3), ("views", 0), ("views", 3)]
    for report in reports:
        assert np.isfinite(report["student"]["nll"])

    [entry] = [
        tmp_path / r["soft_labels"]["path"]
        for r in reports
        if (r["soft_labels"]["mode"], r["soft_labels"]["topk"]) == ("static", None)
    ]
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["soft_label_format"] == 2 and manifest["clamped_rows"] > 0
    assert "clamped" in result.stderr, "the clamp is said on the terminal"
    stored = np.load(entry / "logits.npy")
    assert stored.dtype == np.float16 and np.isfinite(stored).all()
    assert (stored.max(axis=1) == 0).all()
    for temperature in (1.0, 4.0):
        exact = (logits.double() / temperature).softmax(1)
        restored = (torch.from_numpy(stored).double() / temperature).softmax(1)
        torch.testing.assert_close(restored, exact, atol=2e-3, rtol=0)


@pytest.fixture
def nan_teacher(tmp_path) -> Path:
    torch.manual_seed(0)
    model = SmallCNN(10, 1, 8, width=8)
    with torch.no_grad():
        model.fc.bias[3] = float("nan")
    save_model(tmp_path / "nan.pt", model)
    return tmp_path / "nan.pt"


def test_a_nan_teacher_is_named_when_its_soft_labels_are_stored(kd, tiny, tmp_path, nan_teacher):
    result = kd("train", *tiny, "soft_labels.mode=static", f"teacher.checkpoint={nan_teacher}")
    assert result.returncode == 1
    assert "the teacher smallcnn gave NaN or inf logits on 1437 training image(s)" in result.stderr
    assert "(stage soft_labels)" in result.stderr
    assert f"teacher.checkpoint={nan_teacher}" in result.stderr
    assert "Traceback" not in result.stderr
    entries = tmp_path / "outputs/cache/soft_labels"
    assert not any(p.is_dir() for p in entries.glob("*")), "nothing was cached"


def test_a_nan_teacher_run_online_is_named_by_the_training_loop(kd, tiny, nan_teacher):
    result = kd("train", *tiny, "soft_labels.mode=online", f"teacher.checkpoint={nan_teacher}")
    assert result.returncode == 1
    assert "the student loss became nan in epoch 1, step 1 of" in result.stderr
    assert "teacher's soft labels" in result.stderr
    assert "student.optimizer.lr" not in result.stderr
