"""`kd train` end to end through the real command, on the embedded digits dataset."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


def test_train_writes_the_report_docs_report_md_documents(kd, tiny):
    result = kd("train", *tiny, "plots=true")
    assert result.returncode == 0, result.stderr
    report = result.report()
    for role in ("teacher", "student", "baseline"):
        assert 0.0 <= report[role]["top1"] <= 1.0
        assert report[role]["params"] > 0
        assert report[role]["flops"] > 0
        assert report[role]["latency_ms"] > 0
        assert report[role]["checkpoint_bytes"] > 0
    assert report["teacher"]["name"] == "smallcnn" and report["student"]["name"] == "mlp"
    assert report["teacher"]["reused"] is False
    assert report["soft_labels"]["reused"] is False
    assert report["soft_labels"]["mode"] == "views", "auto on augmented data"
    for stage in ("teacher", "soft_labels", "distill", "baseline"):
        assert report["stages"][stage]["seconds"] > 0
        assert report["stages"][stage]["images_per_s"] > 0
    assert report["kd_gain"] == report["student"]["top1"] - report["baseline"]["top1"]
    low, high = report["kd_gain_ci"]
    assert -1.0 <= low <= report["kd_gain"] <= high <= 1.0
    assert 0.0 <= report["kd_gain_p"] <= 1.0
    images = report["kd_gain_images"]
    assert images["total"] == 360, "the digits test split"
    student_only, baseline_only = images["student_only"], images["baseline_only"]
    assert (student_only - baseline_only) / 360 == pytest.approx(report["kd_gain"], abs=1e-6)
    for role in ("teacher", "student", "baseline"):
        assert 0.0 <= report[role]["ece"] <= 1.0
    assert isinstance(report["warnings"], list)
    assert all(isinstance(text, str) for text in report["warnings"])
    assert 0.0 <= report["student"]["agreement"] <= 1.0
    assert (report["loss"]["name"], report["loss"]["alpha"], report["loss"]["temperature"]) == (
        "kd",
        0.9,
        4.0,
    )

    run_dir = result.runs()[0]
    assert (run_dir / "report.md").read_text().count("| top-1 accuracy |") == 1
    assert (run_dir / "student.pt").is_file()
    assert (run_dir / "config.yaml").is_file()
    assert not (run_dir / "checkpoints").exists(), "per-epoch state is removed after a stage"

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in rows] == [
        ("teacher", 1),
        ("student", 1),
        ("baseline", 1),
    ]
    for row in rows:
        assert row["step"] == 22 and row["lr"] >= 0 and row["seconds"] > 0
        assert 0 <= row["train_top1"] <= 1 and row["loss"] > 0 and row["images_per_s"] > 0
    assert report["metrics"] == "metrics.jsonl"
    assert report["plots"] == ["plots/curves.png", "plots/confusion.png", "plots/reliability.png"]
    for plot in report["plots"]:
        assert (run_dir / plot).read_bytes().startswith(b"\x89PNG")
        assert f"]({plot})" in (run_dir / "report.md").read_text()
    assert "top-1 accuracy" in result.stdout, "the table goes to stdout"
    assert "KD gain" in result.stdout and "95% CI" in result.stdout
    for text in report["warnings"]:  # 1-epoch models: the checks fire or not, but visibly
        assert text[:40] in " ".join(result.stdout.split())


def test_student_checkpoint_loads_with_weights_only(kd, tiny):
    result = kd("train", *tiny, "baseline=false")
    assert result.returncode == 0, result.stderr
    payload = torch.load(result.runs()[0] / "student.pt", weights_only=True)
    # the model's config option and plain values: kd eval rebuilds it from kdcli's own config
    assert payload["format"] == "kdcli-model/2" and payload["model"] == "mlp"
    assert payload["model_config"] == {"hidden": [32], "dropout": 0.1}
    assert "fc.weight" in payload["state_dict"]


def soft_label_entry(tmp_path: Path) -> tuple[Path, dict]:
    [entry] = [p for p in (tmp_path / "outputs/cache/soft_labels").iterdir() if p.is_dir()]
    return entry, json.loads((entry / "manifest.json").read_text())


def test_static_soft_labels_are_a_plain_array_with_a_manifest(kd, tiny, tmp_path):
    assert kd("train", *tiny, "baseline=false", "soft_labels.mode=static").returncode == 0
    entry, manifest = soft_label_entry(tmp_path)
    logits = np.load(entry / "logits.npy", allow_pickle=False)
    assert logits.dtype == np.float16
    assert logits.shape == (1437, 10)
    assert manifest["mode"] == "static" and set(manifest["files"]) == {"logits.npy"}


def test_auto_stores_every_epochs_view_for_augmented_data(kd, tiny, tmp_path):
    result = kd("train", *tiny, "student.epochs=3", "baseline=false")
    assert result.returncode == 0, result.stderr
    entry, manifest = soft_label_entry(tmp_path)
    assert np.load(entry / "logits.npy", allow_pickle=False).shape == (3, 1437, 10)
    report = result.report()["soft_labels"]
    assert report["mode"] == manifest["mode"] == "views"
    assert report["bytes"] == (entry / "logits.npy").stat().st_size


def test_auto_keeps_one_view_when_the_data_is_not_augmented(kd, tiny):
    result = kd("train", *tiny, "baseline=false", "dataset.augment=false")
    assert result.returncode == 0, result.stderr
    assert result.report()["soft_labels"]["mode"] == "static"


def test_auto_runs_the_teacher_online_when_views_exceed_max_gb(kd, tiny, tmp_path):
    result = kd("train", *tiny, "baseline=false", "soft_labels.max_gb=1e-9")
    assert result.returncode == 0, result.stderr
    report = result.report()
    assert report["soft_labels"] == {
        "mode": "online",
        "features": "none",
        "layers": [],
        "reused": False,
        "bytes": 0,
    }
    assert "soft_labels" not in report["stages"]
    assert not (tmp_path / "outputs/cache/soft_labels").exists()


def test_topk_views_store_probabilities_and_classes(kd, tiny, tmp_path):
    result = kd("train", *tiny, "baseline=false", "soft_labels.topk=3", "student.epochs=2")
    assert result.returncode == 0, result.stderr
    entry, manifest = soft_label_entry(tmp_path)
    probs = np.load(entry / "topk_probs.npy", allow_pickle=False)
    classes = np.load(entry / "topk_classes.npy", allow_pickle=False)
    assert probs.shape == classes.shape == (2, 1437, 3)
    assert classes.dtype == np.int16 and manifest["topk"] == 3
    assert (probs.astype(np.float32).sum(-1) <= 1.001).all()


def test_second_run_reuses_teacher_and_soft_labels(kd, tiny):
    first = kd("train", *tiny, "baseline=false")
    second = kd("train", *tiny, "baseline=false", "loss.alpha=0.5")
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    reports = [json.loads((run / "report.json").read_text()) for run in second.runs()]
    assert [r["teacher"]["reused"] for r in reports] == [False, True]
    assert [r["soft_labels"]["reused"] for r in reports] == [False, True]
    assert reports[0]["teacher"]["top1"] == reports[1]["teacher"]["top1"]


def test_other_teacher_settings_train_a_new_teacher(kd, tiny):
    assert kd("train", *tiny, "baseline=false").returncode == 0
    result = kd("train", *tiny, "baseline=false", "seed=1")
    assert result.returncode == 0
    report = json.loads((result.runs()[-1] / "report.json").read_text())
    assert report["teacher"]["reused"] is False


def test_same_command_and_seed_give_the_same_accuracies(kd, tiny, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    reports = []
    for where in ("a", "b"):
        result = kd("train", *tiny, cwd=tmp_path / where)
        assert result.returncode == 0, result.stderr
        reports.append(result.report())
    for role in ("teacher", "student", "baseline"):
        assert reports[0][role]["top1"] == reports[1][role]["top1"]
        assert reports[0][role]["nll"] == reports[1][role]["nll"]


def test_hard_distillation_runs(kd, tiny):
    result = kd("train", *tiny, "loss=hard", "baseline=false")
    assert result.returncode == 0, result.stderr
    report = result.report()
    assert report["loss"]["name"] == "hard"
    assert "baseline" not in report and "kd_gain" not in report


def test_ce_needs_no_soft_labels(kd, tiny, tmp_path):
    result = kd("train", *tiny, "loss=ce", "baseline=false")
    assert result.returncode == 0, result.stderr
    assert result.report()["soft_labels"] == {"mode": "none", "reused": False}
    assert not (tmp_path / "outputs/cache/soft_labels").exists()


def test_teacher_checkpoint_is_loaded_not_trained(kd, tiny, tmp_path):
    from kdcli.models.smallcnn import SmallCNN

    torch.manual_seed(0)
    torch.save(SmallCNN(10, 1, 8, width=8).state_dict(), tmp_path / "teacher.pt")
    result = kd("train", *tiny, "baseline=false", "teacher.checkpoint=teacher.pt")
    assert result.returncode == 0, result.stderr
    report = result.report()
    assert report["teacher"]["source"] == "checkpoint"
    assert report["teacher"]["reused"] is True
    assert report["stages"]["teacher"]["images_per_s"] is None, "nothing was trained"
    assert not (tmp_path / "outputs/cache/teachers").exists()


def test_multirun_trains_one_teacher_for_three_jobs(kd, tiny, tmp_path):
    result = kd("train", "-m", *tiny, "loss.alpha=0.1,0.5,0.9")
    assert result.returncode == 0, result.stderr
    runs = result.runs()
    assert len(runs) == 3
    reports = [json.loads((run / "report.json").read_text()) for run in runs]
    assert sorted(r["loss"]["alpha"] for r in reports) == [0.1, 0.5, 0.9]
    assert sum(not r["teacher"]["reused"] for r in reports) == 1
    assert sum(not r["soft_labels"]["reused"] for r in reports) == 1
    assert sum(not r["baseline"]["reused"] for r in reports) == 1
    teachers = (tmp_path / "outputs/cache/teachers").iterdir()
    assert len([p for p in teachers if p.is_dir()]) == 1


def test_the_kd_script_is_the_same_as_python_dash_m(kd):
    # the installed console script on purpose, not kd_command's `python -m kdcli`
    kd_script = Path(sys.executable).parent / "kd"
    assert kd_script.is_file(), "the kd console script is installed beside the interpreter"
    done = subprocess.run([kd_script, "list", "loss"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout == kd("list", "loss").stdout


def test_a_diverging_run_exits_1_with_a_clear_message(kd, tiny):
    result = kd("train", *tiny, "student.optimizer.lr=1e30", "baseline=false")
    assert result.returncode == 1
    assert "kd: failed: the student loss became" in result.stderr
    assert "student.optimizer.lr" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_teacher_below_min_top1_stops_the_run_before_any_soft_labels(kd, tiny, tmp_path):
    result = kd("train", *tiny, "teacher.min_top1=1.0", "dataset.val_fraction=0.2")
    assert result.returncode == 1, result.stderr
    assert "teacher.min_top1=1.0" in result.stderr
    assert "on the validation split, below the 100.00% asked" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs/cache/soft_labels").exists(), "no soft labels computed"
    assert list((tmp_path / "outputs/cache/teachers").iterdir()), "the teacher stays cached"
    assert not result.runs(), "no report"
