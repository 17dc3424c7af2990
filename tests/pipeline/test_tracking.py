"""`logger=mlflow` (kdcli/pipeline/tracking.py) against a real local SQLite store, read back
through MLflow's own client: the logger alone, a 2-point sweep end to end, and a run that
fails after its MLflow run began."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from kd_settings import TINY

pytest.importorskip("mlflow")
pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from mlflow.tracking import MlflowClient  # noqa: E402

from kdcli.cli.sweep_runs import find_reports  # noqa: E402
from kdcli.engine.interrupt import Interrupted  # noqa: E402
from kdcli.pipeline import tracking  # noqa: E402
from kdcli.pipeline.metrics import StoppedOnPurpose  # noqa: E402
from kdcli.pipeline.tracking import MlflowLog, Place, flatten  # noqa: E402

ROW = {"stage": "student", "epoch": 1, "step": 22, "loss": 1.5, "train_top1": 0.5, "lr": 0.1}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module's tests (making its tables takes a second or two)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def run_dir(tmp_path: Path, name: str = "run") -> Path:
    """A run directory as run.py leaves it before the logger is made: config.yaml written."""
    directory = tmp_path / name
    directory.mkdir(parents=True)
    config = {"loss": {"alpha": 0.3, "temperature": 4.0}, "student": {"hidden": [32, 16]}}
    (directory / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    return directory


def the_run(store: str, experiment: str):
    client = MlflowClient(store)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, [e.name for e in client.search_experiments()]
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_a_run_holds_params_per_epoch_metrics_final_figures_artifacts_and_tags(
    store, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    directory = run_dir(tmp_path)
    log = MlflowLog(directory, tracking_uri=store, experiment="unit")
    log.row(ROW)
    log.row({**ROW, "epoch": 2, "step": 44, "loss": 1.0, "val_top1": float("nan")})
    for name in ("report.json", "report.md", "student.pt"):
        (directory / name).write_text(name)
    (directory / "plots").mkdir()
    (directory / "plots" / "curves.png").write_bytes(b"png")
    final = {"student_top1": 0.9, "kd_gain": 0.02, "baseline_top1": None}  # None: left out
    log.close({"loss": "kd", "loss.alpha": 0.3}, final)

    client, run = the_run(store, "unit")
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["loss.alpha"] == "0.3" and params["student.hidden"] == "[32, 16]"
    assert params["loss"] == "kd"  # the hyperparameters the config file does not spell out
    history = client.get_metric_history(run.info.run_id, "student/loss")
    assert [(m.step, m.value) for m in history] == [(22, 1.5), (44, 1.0)]
    assert "student/epoch" not in run.data.metrics and "student/step" not in run.data.metrics
    assert run.data.metrics["final/student_top1"] == pytest.approx(0.9)
    assert run.data.metrics["final/kd_gain"] == pytest.approx(0.02)
    assert "final/baseline_top1" not in run.data.metrics
    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert listed == {"report.json", "report.md", "student.pt", "plots"}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/curves.png"]
    tags = run.data.tags
    assert tags["kdcli.run_dir"] == str(directory.resolve()) and "kdcli.sweep_dir" not in tags
    assert tags["kdcli.version"] and tags["mlflow.runName"] == "run"
    assert (directory / "metrics.jsonl").is_file(), "metrics.jsonl is still written"
    assert not (tmp_path / "mlruns").exists(), "no artifacts in MLflow's ./mlruns default"


@pytest.mark.parametrize(
    ("error", "status"),
    [(RuntimeError("loss is NaN"), "FAILED"), (Interrupted(signal.SIGTERM), "KILLED"),
     (KeyboardInterrupt(), "KILLED"), (StoppedOnPurpose("pruned after epoch 2"), "KILLED")],
)  # fmt: skip
def test_a_run_that_stops_early_ends_failed_or_killed(store, tmp_path, error, status):
    experiment = f"stopped {status} {type(error).__name__}"
    log = MlflowLog(run_dir(tmp_path), tracking_uri=store, experiment=experiment)
    log.row(ROW)
    log.stop(error)
    _, run = the_run(store, experiment)
    assert run.info.status == status and run.info.end_time is not None


def test_a_sweeps_points_share_one_experiment_named_after_the_sweep(store, tmp_path, monkeypatch):
    sweep = tmp_path / "outputs" / "multirun" / "sweep"
    for num in (0, 1):
        directory = run_dir(sweep, str(num))
        place = Place(directory.resolve(), tmp_path, sweep.resolve(), num)
        monkeypatch.setattr(tracking, "job_place", lambda _, place=place: place)
        MlflowLog(directory, tracking_uri=store, artifacts=False).close({}, {"student_top1": 0.5})
    client = MlflowClient(store)
    found = client.get_experiment_by_name("outputs/multirun/sweep")
    assert found is not None
    runs = client.search_runs([found.experiment_id], order_by=["tags.kdcli.job_num"])
    assert [r.data.tags["kdcli.job_num"] for r in runs] == ["0", "1"]
    assert {r.data.tags["kdcli.sweep_dir"] for r in runs} == {str(sweep.resolve())}
    assert [r.info.run_name for r in runs] == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert client.list_artifacts(runs[0].info.run_id) == [], "logger.artifacts=false"


def test_many_parameters_go_in_batches_and_long_values_are_cut(store, tmp_path):
    directory = run_dir(tmp_path)
    many = {f"k{i}": i for i in range(250)}
    many["long"] = "x" * 10_000
    many["odd key!"] = 1
    (directory / "config.yaml").write_text(json.dumps({"many": many}))
    MlflowLog(directory, tracking_uri=store, experiment="many").close({}, {})
    _, run = the_run(store, "many")
    params = run.data.params
    assert len(params) == 252 and params["many.k249"] == "249"
    assert len(params["many.long"]) == tracking.LONGEST_VALUE and "many.odd key_" in params


def test_flatten_writes_values_as_yaml_reads_them():
    flat = flatten({"a": {"b": None, "c": True, "d": [1, {"e": 2}], "f": "text"}, "g": 0.5})
    assert flat == {"a.b": "null", "a.c": "true", "a.d": '[1, {"e": 2}]', "a.f": "text",
                    "g": "0.5"}  # fmt: skip


def test_flatten_masks_a_uris_password():
    flat = flatten({"uri": "postgresql://kd:s3cret@db:5432/mlflow", "url": "https://host:5000/x"})
    assert flat == {"uri": "postgresql://kd:***@db:5432/mlflow", "url": "https://host:5000/x"}


def test_a_relative_sqlite_path_starts_where_kd_runs(tmp_path):
    assert tracking.local_uri("sqlite:///outputs/m.db", tmp_path) == (
        f"sqlite:///{tmp_path}/outputs/m.db"
    )
    assert tracking.local_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert tracking.local_uri("http://host:5000", tmp_path) == "http://host:5000"


def test_a_two_point_sweep_is_one_experiment_with_a_finished_run_per_point(kd, tmp_path):
    result = kd("train", "-m", *TINY, "logger=mlflow", "baseline=false", "loss.alpha=0.3,0.7")
    assert result.returncode == 0, result.stderr
    assert "INFO mlflow" not in result.stderr and "alembic" not in result.stderr
    run_dirs = sorted(p.parent for p in tmp_path.glob("outputs/multirun/**/report.json"))
    assert len(run_dirs) == 2
    sweep = run_dirs[0].parent.resolve()
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiments = [e for e in client.search_experiments() if e.name != "Default"]
    assert [e.name for e in experiments] == [str(sweep.relative_to(tmp_path.resolve()))]
    runs = client.search_runs([experiments[0].experiment_id])
    assert sorted(r.data.params["loss.alpha"] for r in runs) == ["0.3", "0.7"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["kdcli.sweep_dir"] == str(sweep)
        history = client.get_metric_history(run.info.run_id, "student/loss")
        assert len(history) == 1 and history[0].step > 0  # student.epochs=1
        assert "final/student_top1" in run.data.metrics
        listed = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"report.json", "report.md", "student.pt"} <= listed
    assert not (tmp_path / "mlruns").exists()
    assert find_reports([tmp_path / "outputs"]) == [d / "report.json" for d in run_dirs], (
        "kd report outputs/ counts each run once, not its copy among the MLflow artifacts"
    )


def test_a_run_that_fails_after_its_mlflow_run_began_ends_failed(kd, tmp_path):
    result = kd("train", *TINY, "logger=mlflow", "baseline=false", "teacher.min_top1=0.999")
    assert result.returncode != 0 and "teacher.min_top1" in result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    _, run = the_run(client.tracking_uri, tracking.SINGLE_RUNS)
    assert run.info.status == "FAILED"
