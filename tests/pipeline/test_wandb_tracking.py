"""`logger=wandb` (kdcli/pipeline/wandb_tracking.py) in W&B's offline mode, each run read back
from the file W&B writes (`run-<id>.wandb`: its records as protobuf messages of wandb's own
schema, in LevelDB's log format): the logger alone, a run that stops early, and a 2-point
sweep end to end."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from kd_settings import TINY

pytest.importorskip("wandb")

import wandb  # noqa: E402
from wandb.proto import wandb_internal_pb2  # noqa: E402

from kdcli.cli.sweep_runs import find_reports  # noqa: E402
from kdcli.engine.interrupt import Interrupted  # noqa: E402
from kdcli.errors import RunError  # noqa: E402
from kdcli.pipeline import tracking  # noqa: E402
from kdcli.pipeline.tracking import Place  # noqa: E402
from kdcli.pipeline.wandb_tracking import WandbLog  # noqa: E402

ROW = {"stage": "student", "epoch": 1, "step": 22, "loss": 1.5, "train_top1": 0.5, "lr": 0.1}
HEADER, BLOCK = 7, 32 * 1024  # ":W&B", a magic number and a version; LevelDB's block


@pytest.fixture(autouse=True)
def wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """W&B's own folders (settings, staged artifacts) in the test's directory, not ~/."""
    env = {name: str(tmp_path / "wandb-home" / name) for name in
           ("WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR")}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return env


def chunks(data: bytes):
    """The records of a LevelDB log that starts after W&B's header."""
    position, parts = HEADER, b""
    while position + 7 <= len(data):
        left = BLOCK - position % BLOCK
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        kind = data[position + 6] if left >= 7 else 0
        if kind == 0 and length == 0 or left < 7:  # a block's padding
            position += left
            continue
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            yield parts + chunk
            parts = b""
        else:  # the first or a middle piece
            parts += chunk


def read_run(path: Path) -> dict[str, Any]:
    """One offline run as plain values: the run record, config, history, summary, artifacts,
    exit code."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    run: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "artifacts": []}
    for chunk in chunks(data):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            about = record.run
            run.update(group=about.run_group, name=about.display_name, project=about.project)
            run["config"].update(_values(record.run.config.update))
        elif kind == "config":
            run["config"].update(_values(record.config.update))
        elif kind == "history":
            run["history"].append({"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                                   for i in record.history.item})  # fmt: skip
        elif kind == "summary":
            run["summary"].update({"/".join(u.nested_key) or u.key: json.loads(u.value_json)
                                   for u in record.summary.update})  # fmt: skip
        elif kind == "artifact":
            files = [entry.path for entry in record.artifact.manifest.contents]
            run["artifacts"].append((record.artifact.type, sorted(files)))
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def _values(updates) -> dict[str, Any]:
    return {u.key: json.loads(u.value_json) for u in updates if u.key != "_wandb"}


def runs_under(folder: Path) -> list[dict[str, Any]]:
    """The runs W&B wrote under `folder`, once its service has written all it was sent (as it
    has when kd's process ends)."""
    wandb.teardown()
    return [read_run(p) for p in sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))]


def run_dir(tmp_path: Path, name: str = "run") -> Path:
    """A run directory as run.py leaves it before the logger is made: config.yaml written."""
    directory = tmp_path / name
    directory.mkdir(parents=True)
    config = {"loss": {"alpha": 0.3, "temperature": 4.0}, "student": {"hidden": [32, 16]},
              "uri": "postgresql://kd:s3cret@db/x"}  # fmt: skip
    (directory / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    return directory


def test_a_run_holds_config_per_epoch_metrics_final_figures_and_an_artifact(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    directory = run_dir(tmp_path)
    log = WandbLog(directory, dir=str(tmp_path / "outputs"))
    log.row({**ROW, "stage": "teacher", "step": 5})
    log.row(ROW)
    log.row({**ROW, "epoch": 2, "step": 44, "loss": 1.0, "val_top1": None})
    for name in ("report.json", "report.md", "student.pt"):
        (directory / name).write_text(name)
    (directory / "plots").mkdir()
    (directory / "plots" / "curves.png").write_bytes(b"png")
    log.close({"loss": "kd"}, {"student_top1": 0.9, "kd_gain": 0.02, "baseline_top1": None})

    [run] = runs_under(tmp_path / "outputs")
    config = run["config"]
    assert config["loss.alpha"] == 0.3 and config["student.hidden"] == [32, 16], "typed values"
    assert config["uri"] == "postgresql://kd:***@db/x", "a URI's password is masked"
    assert config["loss"] == "kd" and config["kdcli.run_dir"] == str(directory.resolve())
    student = [row for row in run["history"] if "student/loss" in row]
    assert [(r["student/step"], r["student/loss"]) for r in student] == [(22, 1.5), (44, 1.0)]
    assert "student/val_top1" not in student[1], "a figure the row leaves out is not logged"
    assert [r["teacher/step"] for r in run["history"] if "teacher/loss" in r] == [5]
    assert run["summary"]["final/student_top1"] == pytest.approx(0.9)
    assert "final/baseline_top1" not in run["summary"]
    assert run["artifacts"] == [
        ("kd-run", ["plots/curves.png", "report.json", "report.md", "student.pt"])
    ]
    assert run["exit_code"] == 0 and run["name"] == "run" and run["project"] == "kdcli"
    assert run["group"] == "", "a single run is in no group"
    assert (directory / "metrics.jsonl").is_file(), "metrics.jsonl is still written"
    assert "wandb:" not in capsys.readouterr().err, "W&B's own lines are kept quiet"


@pytest.mark.parametrize(
    ("error", "why"),
    [(RunError("loss is NaN"), "failed: loss is NaN"),
     (Interrupted(signal.SIGTERM), "stopped: SIGTERM")],
)  # fmt: skip
def test_a_run_that_stops_early_ends_with_exit_code_1_and_says_why(tmp_path, error, why):
    log = WandbLog(run_dir(tmp_path), dir=str(tmp_path / "outputs"))
    log.row(ROW)
    log.stop(error)
    [run] = runs_under(tmp_path / "outputs")
    assert run["exit_code"] == 1 and run["summary"]["kdcli/stopped"] == why


def test_a_sweeps_points_share_one_group_named_after_the_sweep(tmp_path, monkeypatch):
    sweep = tmp_path / "outputs" / "multirun" / "sweep"
    for num in (0, 1):
        directory = run_dir(sweep, str(num))
        place = Place(directory.resolve(), tmp_path, sweep.resolve(), num)
        monkeypatch.setattr(tracking, "job_place", lambda _, place=place: place)
        monkeypatch.setattr("kdcli.pipeline.wandb_tracking.job_place", tracking.job_place)
        log = WandbLog(directory, dir=str(tmp_path / "outputs"), artifacts=False)
        log.close({}, {"student_top1": 0.5})
    runs = runs_under(tmp_path / "outputs")
    assert {r["group"] for r in runs} == {"outputs/multirun/sweep"}
    assert sorted(r["name"] for r in runs) == ["0", "1"]
    assert sorted(r["config"]["kdcli.job_num"] for r in runs) == [0, 1]
    assert all(r["artifacts"] == [] for r in runs), "logger.artifacts=false"


@pytest.mark.e2e
def test_a_two_point_sweep_is_one_group_with_a_finished_run_per_point(kd, tmp_path, wandb_home):
    result = kd("train", "-m", *TINY, "logger=wandb", "baseline=false", "loss.alpha=0.3,0.7",
                env=wandb_home)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wandb:" not in result.stderr, "W&B's own lines are kept quiet"
    run_dirs = sorted(p.parent for p in tmp_path.glob("outputs/multirun/**/report.json"))
    assert len(run_dirs) == 2
    sweep = run_dirs[0].parent.resolve()
    runs = runs_under(tmp_path / "outputs")
    assert sorted(r["config"]["loss.alpha"] for r in runs) == [0.3, 0.7]
    for run in runs:
        assert run["group"] == str(sweep.relative_to(tmp_path.resolve()))
        assert run["exit_code"] == 0 and "final/student_top1" in run["summary"]
        assert len([r for r in run["history"] if "student/loss" in r]) == 1  # student.epochs=1
        [(kind, files)] = run["artifacts"]
        assert kind == "kd-run" and {"report.json", "report.md", "student.pt"} <= set(files)
    assert find_reports([tmp_path / "outputs"]) == [d / "report.json" for d in run_dirs], (
        "kd report outputs/ counts each run once"
    )
