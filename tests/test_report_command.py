"""`kd report` over a real 2-point sweep: the table, the CSV, sorting, bad paths, the plot."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kd_settings import TINY

from kdcli.cli.main import main
from kdcli.cli.sweep_report import Run, sort_rows, swept_keys


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A 2-point multirun (alpha 0.1 and 0.9); returns its sweep folder."""
    cwd = tmp_path_factory.mktemp("sweep")
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    environment.pop("KD_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "kdcli", "train", "-m", *TINY, "loss.alpha=0.1,0.9"],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    [folder] = cwd.glob("outputs/multirun/*/*")
    return folder


def reports(folder: Path) -> dict[str, dict]:
    """job number -> report.json"""
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/report.json")}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_table_and_csv_show_every_run_with_its_swept_setting(sweep, capsys):
    assert main(["report", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "loss.alpha" in out and "student top-1 %" in out and "KD gain" in out
    by_job = reports(sweep)
    rows = read_csv(sweep / "report.csv")
    assert [r["run"] for r in rows] == ["0", "1"]
    assert [r["loss.alpha"] for r in rows] == ["0.1", "0.9"]
    assert "teacher.epochs" not in rows[0], "settings shared by all runs are not swept"
    for row in rows:
        report = by_job[row["run"]]
        assert float(row["student_top1"]) == report["student"]["top1"]
        assert float(row["teacher_top1"]) == report["teacher"]["top1"]
        assert float(row["kd_gain"]) == report["kd_gain"]
        assert int(row["student_params"]) == report["student"]["params"]
        assert float(row["seconds"]) == pytest.approx(
            sum(s["seconds"] for s in report["stages"].values())
        )
        assert f"{100 * report['student']['top1']:.2f}" in out
    assert sorted(r["teacher_reused"] for r in rows) == ["False", "True"]


def test_sort_by_a_column_in_either_direction(sweep, tmp_path):
    by_job = reports(sweep)
    accuracy = {job: r["student"]["top1"] for job, r in by_job.items()}
    ascending = sorted(accuracy, key=lambda job: (accuracy[job], job))
    out = tmp_path / "sorted.csv"
    assert main(["report", str(sweep), "--sort", "student_top1", "--csv", str(out)]) == 0
    assert [r["run"] for r in read_csv(out)] == ascending
    assert main(["report", str(sweep), "--sort", "loss.alpha", "--desc", "--csv", str(out)]) == 0
    assert [r["loss.alpha"] for r in read_csv(out)] == ["0.9", "0.1"]


def test_run_directories_can_be_given_one_by_one(sweep, tmp_path, capsys):
    out = tmp_path / "two.csv"
    assert main(["report", str(sweep / "1"), str(sweep / "0"), "--csv", str(out)]) == 0
    assert [r["run"] for r in read_csv(out)] == ["0", "1"]


def test_the_real_command_prints_the_table(sweep, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "kdcli", "report", str(sweep), "--csv", str(tmp_path / "r.csv")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "kd report: 2 run(s), smallcnn -> mlp" in done.stdout
    assert "…" not in done.stdout, "a table written to a pipe is not cut at 80 columns"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nowhere"], "nowhere: no such file or directory"),
        (["."], "no report.json below ."),
        (["{sweep}", "--sort", "acc"], "--sort acc: no such column"),
    ],
)
def test_bad_input_exits_2(sweep, tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)
    assert main(["report", *(a.format(sweep=sweep) for a in args)]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "report.csv").exists()


def test_plot_without_matplotlib_names_the_extra(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "r.csv"
    assert main(["report", str(sweep), "--plot", "--csv", str(out)]) == 2
    assert "pip install kdcli[plot]" in capsys.readouterr().err
    assert not out.exists(), "nothing is written when the plot cannot be drawn"


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="kdcli[plot] absent")
def test_plot_writes_a_png(sweep, tmp_path):
    out = tmp_path / "r.csv"
    assert main(["report", str(sweep), "--plot", "--csv", str(out)]) == 0
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_swept_keys_are_the_overrides_that_differ():
    runs = [
        Run(Path("a"), {}, {"loss.alpha": "0.1", "seed": "0", "loss": "kd"}),
        Run(Path("b"), {}, {"loss.alpha": "0.5", "seed": "0"}),
    ]
    assert swept_keys(runs) == ["loss.alpha", "loss"]
    assert swept_keys(runs[:1]) == ["loss.alpha", "seed", "loss"]


def test_missing_values_sort_last_either_way():
    header = ["run", "kd_gain"]
    table = [["a", None], ["b", 0.2], ["c", -0.1]]
    assert [r[0] for r in sort_rows(header, table, "kd_gain", False)] == ["c", "b", "a"]
    assert [r[0] for r in sort_rows(header, table, "kd_gain", True)] == ["b", "c", "a"]
