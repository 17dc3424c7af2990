"""A cached teacher's and baseline's evaluation is stored with them and read by later runs
(kdcli/pipeline/stored_eval.py): the report marks it reused and its figures are the ones
computing them gives; a damaged stored evaluation is computed again. A sweep point's figures
are those of a single run with the same settings (the data and the batch-size probe are set
up once per process)."""

from __future__ import annotations

import json

import pytest
from kd_command import run_kd
from kd_settings import TINY

from kdcli.store.evaluation import logits_file

SETTINGS = [*TINY, "dataset.val_fraction=0.2"]
SWEEP = [s if s != "plots=false" else "plots=auto" for s in SETTINGS]  # none in sweep points
STORED = ("teacher", "baseline")
# figures a run measures anew or that name its own files: everything else must be equal
RUN_OWN = {"evaluation_seconds", "evaluation_reused", "reused", "source", "checkpoint"}
STUDENT_OWN = {*RUN_OWN, "latency_ms"}  # the student is measured every run
GAIN = ("kd_gain", "kd_gain_ci", "kd_gain_p", "kd_gain_images")


def figures(report: dict, role: str) -> dict:
    own = STUDENT_OWN if role == "student" else RUN_OWN
    return {k: v for k, v in report[role].items() if k not in own}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A single run that fills the cache, then a 2-point sweep (one process) that reads it."""
    cwd = tmp_path_factory.mktemp("stored")
    single = run_kd("train", *SETTINGS, "loss.alpha=0.7", cwd=cwd / "single")
    assert single.returncode == 0, single.stderr
    cache = f"cache_dir={cwd / 'single' / 'outputs' / 'cache'}"
    sweep = run_kd("train", "-m", *SWEEP, cache, "loss.alpha=0.3,0.7", cwd=cwd / "sweep")
    assert sweep.returncode == 0, sweep.stderr
    points = [json.loads((r / "report.json").read_text()) for r in sweep.runs()]
    return single, sorted(points, key=lambda r: r["loss"]["alpha"])


def test_a_later_run_reads_the_stored_evaluation_of_the_teacher_and_baseline(runs):
    single, points = runs
    first = single.report()
    assert [first[role]["evaluation_reused"] for role in (*STORED, "student")] == [False] * 3
    for point in points:
        assert [point[role]["evaluation_reused"] for role in STORED] == [True, True]
        assert point["student"]["evaluation_reused"] is False
        assert point["teacher"]["source"] == "cache"
        assert point["plots"] == []  # plots=auto draws none in a sweep point
    report_md = (single.runs()[0] / "report.md").read_text()
    assert "| evaluation | computed | computed | computed |" in report_md


def test_reused_figures_equal_computed_ones_and_a_sweep_point_equals_a_single_run(runs):
    single, points = runs
    first, same = single.report(), points[1]
    assert same["loss"]["alpha"] == first["loss"]["alpha"] == 0.7
    for role in ("teacher", "student", "baseline"):
        assert figures(same, role) == figures(first, role), role
        assert "val_top1" in figures(same, role)
    assert same["teacher"]["latency_ms"] == first["teacher"]["latency_ms"]  # the stored one
    assert [same[k] for k in GAIN] == [first[k] for k in GAIN]
    assert points[0]["student"]["top1"] != points[1]["student"]["top1"] or (
        points[0]["student"]["nll"] != points[1]["student"]["nll"]
    ), "the two sweep points trained different students"


def test_a_damaged_stored_evaluation_is_computed_again(runs):
    single, _ = runs
    first = single.report()
    cache = single.cwd / "outputs" / "cache"
    [stored] = [
        p
        for p in (cache / "evaluations").iterdir()
        if p.is_dir() and p.name.startswith("smallcnn-")
    ]
    path = stored / logits_file("test")
    path.write_bytes(path.read_bytes()[:64])
    again = run_kd("train", *SETTINGS, "loss.alpha=0.7", cwd=single.cwd)
    assert again.returncode == 0, again.stderr
    report = json.loads((again.runs()[-1] / "report.json").read_text())
    assert report["teacher"]["evaluation_reused"] is False
    assert report["baseline"]["evaluation_reused"] is True
    measured = {"latency_ms"}  # timed anew
    assert figures(report, "teacher").keys() == figures(first, "teacher").keys()
    for key, value in figures(first, "teacher").items():
        assert key in measured or report["teacher"][key] == value, key
    assert len(path.read_bytes()) > 64, "the entry was stored anew"
