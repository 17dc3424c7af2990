"""Every method through the real command, `kd train loss=<name>`, with tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from kd_command import ONE_THREAD, Result, run_kd

from kdcli.models.cifar.resnet import CifarResNet

TINY = [
    "teacher.epochs=1",
    "student.epochs=1",
    "eval.latency_runs=2",
    "plots=false",
    "baseline=false",
    "checkpoint.save=false",
]
SMALL_PAIR = ["teacher=smallcnn", "teacher.model.width=8", "student.model.width=8"]


def kd_train(tmp_path: Path, *args: str, multirun: bool = False) -> Result:
    where = (
        f"hydra.sweep.dir={tmp_path / 'sweep'}" if multirun else f"hydra.run.dir={tmp_path / 'run'}"
    )
    command = ["train", *(["-m"] if multirun else [])]
    command += [*TINY, f"cache_dir={tmp_path / 'cache'}", where, *args]
    return run_kd(*command, cwd=tmp_path, env=ONE_THREAD)


def reports(tmp_path: Path, result: Result) -> dict[str, dict]:
    """The sweep's reports by loss name."""
    assert result.returncode == 0, result.stderr[-3000:]
    found = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/report.json")]
    return {report["loss"]["name"]: report for report in found}


def test_logit_methods_use_stored_soft_labels(tmp_path):
    result = kd_train(tmp_path, *SMALL_PAIR, "loss=kd,kd_ls,dkd,dist,hard", multirun=True)
    by_loss = reports(tmp_path, result)
    assert sorted(by_loss) == ["dist", "dkd", "hard", "kd", "kd_ls"]
    for report in by_loss.values():
        assert report["soft_labels"]["mode"] == "views", "stored: digits is augmented"
        assert report["soft_labels"]["features"] == "none"
        assert 0.0 <= report["student"]["top1"] <= 1.0
    assert sum(not r["soft_labels"]["reused"] for r in by_loss.values()) == 1, "shared store"
    assert by_loss["dkd"]["loss"]["warmup"] == 5


def test_stored_features_without_augmentation_and_a_schedule(tmp_path):
    result = kd_train(
        tmp_path,
        *SMALL_PAIR,
        "loss=combo",
        "loss.terms.fitnet.loss.student_layer=stage2",
        "loss.terms.fitnet.loss.teacher_layer=stage2",
        "+loss.terms.kd.loss.schedule.temperature={kind:cosine,start:8,end:2}",
        "dataset.augment=false",
        "student.epochs=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    soft = report["soft_labels"]
    assert (soft["mode"], soft["features"], soft["layers"]) == ("static", "stored", ["stage2"])
    entry = Path(soft["path"])
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["features"] == {"stage2": [len_train(report), 16, 4, 4]}
    assert "feature-stage2.npy" in manifest["files"]


def len_train(report: dict) -> int:
    return round(1797 * 0.8) - 1  # digits' stratified 80 % train split


def test_feature_methods_on_the_default_resnet8x4_to_smallcnn_pair(tmp_path):
    """The default (CIFAR-shaped) pair with the configs' default layer paths: teacher
    `layer1`/`layer2`, student `stage1`/`stage2`. Digits is augmented, so the teacher runs
    online. The teacher is a saved untrained resnet8x4, to stay fast."""
    checkpoint = tmp_path / "resnet8x4.pt"
    teacher = CifarResNet(10, in_channels=1, image_size=8, depth=8, widths=[32, 64, 128, 256])
    torch.save(teacher.state_dict(), checkpoint)
    result = kd_train(
        tmp_path,
        f"teacher.checkpoint={checkpoint}",
        "dataset.test_fraction=0.8",
        "loss=fitnet,at,combo",
        multirun=True,
    )
    by_loss = reports(tmp_path, result)
    assert sorted(by_loss) == ["at", "combo", "fitnet"]
    for report in by_loss.values():
        assert report["soft_labels"]["mode"] == "online"
        assert report["soft_labels"]["features"] == "online"
        assert "soft_labels" not in report["stages"]
        assert 0.0 <= report["student"]["top1"] <= 1.0
    assert by_loss["at"]["soft_labels"]["layers"] == ["layer1", "layer2"]


def test_a_missing_layer_is_refused_before_anything_is_written(tmp_path):
    result = kd_train(tmp_path, "loss=fitnet", "loss.teacher_layer=layer9")
    assert result.returncode == 2
    assert "loss.teacher_layer='layer9'" in result.stderr
    assert "kd list teacher --layers resnet8x4" in result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
