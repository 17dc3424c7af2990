"""`kd eval` (kdcli/cli/eval_command.py, kdcli/pipeline/eval_checkpoint.py,
kdcli/config/eval_config.py): a saved model's figures without training, equal to the report's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dataset_files import write_mnist
from kd_command import ONE_THREAD, run_kd
from kd_settings import TINY

from kdcli.cli.main import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """A finished tiny run with a validation split: its directory and report."""
    cwd = tmp_path_factory.mktemp("run")
    result = run_kd("train", *TINY, "dataset.val_fraction=0.1", cwd=cwd, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    return result.runs()[0], result.report()


def kd_eval(cwd: Path, *args: str):
    return run_kd("eval", *args, cwd=cwd, env=ONE_THREAD)


def test_the_students_and_the_cached_teachers_figures_equal_the_report(trained):
    run_dir, report = trained
    student = kd_eval(run_dir.parent, str(run_dir / "student.pt"), "--json")
    assert student.returncode == 0, student.stderr
    figures = json.loads(student.stdout)
    assert figures["test"]["top1"] == report["student"]["top1"]
    assert figures["test"]["nll"] == pytest.approx(report["student"]["nll"], rel=1e-6)
    assert figures["val"]["top1"] == report["student"]["val_top1"], "the run's validation split"
    assert len(figures["test"]["confusion"]) == 10 and figures["test"]["images"] == 360
    assert sum(map(sum, figures["test"]["confusion"])) == 360
    assert 0 <= figures["test"]["top1"] <= figures["test"]["top5"] <= 1

    cwd = Path(report["run_dir"]).parents[3]  # the cache path in the report is relative to it
    teacher = kd_eval(cwd, report["teacher"]["checkpoint"], "--json")
    assert teacher.returncode == 0, teacher.stderr
    assert json.loads(teacher.stdout)["test"]["top1"] == report["teacher"]["top1"]


def test_the_table_names_each_split(trained, capsys):
    run_dir, _ = trained
    assert main(["eval", str(run_dir / "student.pt"), "eval.batch_size=64"]) == 0
    out = capsys.readouterr().out
    assert "test (360 images)" in out and "validation" in out and "top-1 accuracy" in out


def test_bad_input_exits_2_naming_the_file_or_key(trained, tmp_path, capsys):
    run_dir, _ = trained
    plain = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    write_mnist(tmp_path / "data")
    cases = [
        ([str(tmp_path / "missing.pt")], "no such file"),
        ([str(plain)], "is not a kdcli model file"),
        ([str(run_dir / "student.pt"), "student.epochs=3"], "kd eval takes only dataset="),
        ([str(run_dir / "student.pt"), "eval.batch_size=0"], "eval.batch_size"),
        ([str(run_dir / "student.pt"), "dataset=nope"], "nope"),
        (
            [str(run_dir / "student.pt"), "dataset=mnist", f"dataset.root={tmp_path / 'data'}"],
            "does not match",  # 28x28 images for a model built for 8x8 digits
        ),
        ([str(run_dir / "student.pt"), "device.type=tpu"], "must be auto, cpu or cuda"),
    ]
    if not torch.cuda.is_available():
        cases.append(([str(run_dir / "student.pt"), "device=cuda"], "no CUDA GPU is visible"))
    for args, message in cases:
        assert main(["eval", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)


def test_a_file_of_the_first_format_still_evaluates(trained, tmp_path, capsys):
    """kdcli-model/1 files recorded the model config with its `_target_`: read as the name of
    kdcli's config that builds that class (never imported), they evaluate as before."""
    run_dir, report = trained
    payload = torch.load(run_dir / "student.pt", weights_only=True)
    values = payload.pop("model_config")
    del payload["model"]
    old = {**payload, "format": "kdcli-model/1",
           "model_config": {"_target_": "kdcli.models.mlp.MLP", **values}}  # fmt: skip
    (tmp_path / "config.yaml").write_bytes((run_dir / "config.yaml").read_bytes())
    torch.save(old, tmp_path / "student.pt")
    assert main(["eval", str(tmp_path / "student.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["top1"] == report["student"]["top1"]

    old["model_config"]["_target_"] = "kdcli.models.nothing.Here"
    torch.save(old, tmp_path / "student.pt")
    assert main(["eval", str(tmp_path / "student.pt")]) == 2
    assert "is none of kdcli's model configs" in capsys.readouterr().err
