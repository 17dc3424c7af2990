"""`logger=mlflow`: each run (each point of a sweep or search) as one MLflow run.

A run records its resolved config (the run directory's config.yaml, flattened to dotted keys;
the password of a URI such as postgresql://user:secret@host masked) as parameters, every
number of every per-epoch row as the metric `<stage>/<field>` against the step, the report's
final figures as `final/<name>`, and report.json, report.md, the student checkpoint and plots/
as artifacts. A sweep is one experiment (named after its directory) with one run per point; a
single run goes to the experiment "kd train". The run ends FINISHED, or FAILED / KILLED when
the pipeline raises (run.py calls `stop`).

MLflow is imported once, when the logger is made (on rank 0 only, as every logger), and is
called once per epoch and at the end, never per step. `kdcli.config.loggers` checks the
package and the tracking URI before anything runs.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from kdcli import __version__
from kdcli.engine.interrupt import Interrupted
from kdcli.errors import RunError, UserError
from kdcli.pipeline.metrics import JsonlLog, StoppedOnPurpose

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///outputs/mlflow.db"
SINGLE_RUNS = "kd train"  # the experiment of runs outside a sweep, unless logger.experiment
# beside a SQLite store's database file; `kd report` skips it (cli/sweep_runs.TRACKER_COPIES)
ARTIFACT_FOLDER = "mlflow-artifacts"
ARTIFACTS = ("report.json", "report.md", "student.pt", "compressed.pt")
BATCH = 100  # parameters or tags per call: MLflow's limit for one log_batch
LONGEST_VALUE = 6000  # characters of a parameter's value: MLflow refuses longer
NOT_A_KEY = re.compile(r"[^\w./\- ]")  # what an MLflow key may not hold
PASSWORD = re.compile(r"(://[^/:@\s]*:)[^/@\s]+@")  # scheme://user:PASSWORD@host


@dataclass(frozen=True)
class Place:
    """Where this job sits: its run directory and, in a multirun, its sweep and number."""

    run_dir: Path
    cwd: Path
    sweep_dir: Path | None = None
    job_num: int | None = None


def job_place(run_dir: Path) -> Place:
    """The job's place from Hydra's runtime config (a plain run outside Hydra: cwd only)."""
    if not HydraConfig.initialized():
        return Place(Path(run_dir).resolve(), Path.cwd())
    hydra = HydraConfig.get()
    cwd = Path(hydra.runtime.cwd)
    if hydra.mode != RunMode.MULTIRUN:
        return Place(Path(run_dir).resolve(), cwd)
    return Place(
        Path(run_dir).resolve(),
        cwd,
        (cwd / hydra.sweep.dir).resolve(),
        int(hydra.job.num),
    )


def local_uri(uri: str, cwd: Path) -> str:
    """`uri` with a relative SQLite path made absolute against the directory kd runs in."""
    if not uri.startswith("sqlite:///"):
        return uri
    path = Path(uri[len("sqlite:///") :])
    return uri if path.is_absolute() else f"sqlite:///{cwd / path}"


def masked(text: str) -> str:
    """`text` with the password of any URI in it as ***."""
    return PASSWORD.sub(r"\1***@", text)


def dotted(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A config as dotted keys (`loss.alpha`) and its values as they are, the password of a
    URI in any text masked (a tracker's records are for everyone who reads them)."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(dotted(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: masked(tree) if isinstance(tree, str) else tree}


def flatten(tree: Any) -> dict[str, str]:
    """A config as MLflow parameters: `dotted`, with YAML-like values (lists as JSON; a
    password in them masked too), each key made of the characters MLflow allows and each
    value cut to MLflow's length limit."""
    params = {}
    for key, value in dotted(tree).items():
        text = masked(value if isinstance(value, str) else json.dumps(value, default=str))
        if len(text) > LONGEST_VALUE:
            text = text[: LONGEST_VALUE - 3] + "..."
        params[NOT_A_KEY.sub("_", key)[:250]] = text
    return params


def is_number(value: Any) -> bool:
    """A figure a tracker takes (a report leaves a figure it lacks as None; no booleans)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def git_commit(directory: Path) -> str | None:
    """The commit checked out where kd runs, if that is a git work tree (a few ms)."""
    if shutil.which("git") is None:
        return None
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _tags(place: Place) -> dict[str, str]:
    tags = {
        "kdcli.version": __version__,
        "kdcli.run_dir": str(place.run_dir),
        "mlflow.source.name": "kd train",
        "mlflow.source.type": "LOCAL",
    }
    if place.sweep_dir is not None:
        tags["kdcli.sweep_dir"] = str(place.sweep_dir)
        tags["kdcli.job_num"] = str(place.job_num)
    commit = git_commit(place.cwd)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def experiment_name(place: Place) -> str:
    """A sweep's directory (relative to where kd runs, when it is below it), or "kd train"."""
    if place.sweep_dir is None:
        return SINGLE_RUNS
    try:
        return str(place.sweep_dir.relative_to(place.cwd.resolve()))
    except ValueError:
        return str(place.sweep_dir)


def run_name(place: Place) -> str:
    """The run directory below the sweep's (its job number), or below where kd runs."""
    for base in (place.sweep_dir, place.cwd.resolve()):
        if base is not None and base in place.run_dir.parents:
            return str(place.run_dir.relative_to(base))
    return str(place.run_dir)


class MlflowLog(JsonlLog):
    """metrics.jsonl, and the run in an MLflow tracking store. Needs `pip install
    kdcli[mlflow]`."""

    def __init__(
        self,
        directory: Path,
        tracking_uri: str = DEFAULT_URI,
        experiment: str | None = None,
        artifacts: bool = True,
    ) -> None:
        super().__init__(directory)
        from mlflow.tracking import MlflowClient  # the extra is checked before the run

        for name in ("mlflow", "alembic"):  # their INFO lines as a store is made
            logging.getLogger(name).setLevel(logging.WARNING)
        self.directory = Path(directory)
        self.artifacts = artifacts
        place = job_place(self.directory)
        self.uri = local_uri(str(tracking_uri), place.cwd)
        name = str(experiment) if experiment is not None else experiment_name(place)
        try:
            self.client = MlflowClient(self.uri)
            experiment_id = self._experiment(name)
            run = self.client.create_run(experiment_id, tags=_tags(place), run_name=run_name(place))
        except UserError:
            raise
        except Exception as error:  # whatever the store refuses: the run has not begun
            raise RunError(f"logger=mlflow: {self._where()} refused a new run: {error}") from None
        self.run_id = run.info.run_id
        self.params: set[str] = set()
        self.warned = False
        config = self.directory / "config.yaml"  # the resolved job config run.py has written
        try:
            if config.is_file():
                self._params(flatten(OmegaConf.to_container(OmegaConf.load(config))))
        except (Interrupted, KeyboardInterrupt) as error:  # not yet the run's logger: run.py
            self.stop(error)  # would not `stop` it
            raise
        except Exception as error:
            self._end("FAILED")
            raise RunError(
                f"logger=mlflow: {self._where()} refused the parameters: {error}"
            ) from None

    def _where(self) -> str:
        return f"the tracking store logger.tracking_uri={masked(self.uri)}"

    def _experiment(self, name: str) -> str:
        """The experiment's id, made when missing (a parallel job may make it first)."""
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return str(self.client.create_experiment(name, self._artifact_location()))
            except Exception:
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise UserError(
                f"logger=mlflow: the experiment {name!r} in {self._where()} is deleted; "
                f"restore it (`mlflow experiments restore --experiment-id "
                f"{found.experiment_id}`) or name another with logger.experiment=..."
            )
        return str(found.experiment_id)

    def _artifact_location(self) -> str | None:
        """Beside a SQLite database (MLflow's default would be ./mlruns where kd runs); any
        other store's own default."""
        if not self.uri.startswith("sqlite:///"):
            return None
        return (Path(self.uri[len("sqlite:///") :]).parent / ARTIFACT_FOLDER).as_uri()

    def _params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        fresh = [Param(k, v) for k, v in params.items() if k not in self.params]
        for start in range(0, len(fresh), BATCH):
            self.client.log_batch(self.run_id, params=fresh[start : start + BATCH])
        self.params.update(p.key for p in fresh)

    def _metrics(self, values: dict[str, Any], step: int) -> None:
        """The numbers among `values` (a figure a report leaves out is None)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items() if is_number(v)]
        for start in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + BATCH])

    def row(self, row: dict[str, Any]) -> None:
        """One call per epoch; a store that fails here is warned about once, and the run
        trains on (the rows stay in metrics.jsonl)."""
        super().row(row)
        values = {f"{row['stage']}/{k}": v for k, v in row.items() if k not in ("epoch", "step")}
        try:
            self._metrics(values, int(row.get("step") or 0))
        except Exception as error:
            if not self.warned:
                log.warning(
                    "logger=mlflow: %s refused the epoch's metrics: %s", self._where(), error
                )
                self.warned = True

    def close(self, hparams: dict[str, Any], final: dict[str, float]) -> None:
        """The final figures and the artifacts; then the run is FINISHED."""
        try:
            self._params(flatten(hparams))  # those the config file does not spell out
            self._metrics({f"final/{k}": v for k, v in final.items()}, 0)
            if self.artifacts:
                self._log_artifacts()
            self.client.set_terminated(self.run_id, "FINISHED")
        except Exception as error:  # run.py's `stop` marks the run FAILED
            raise RunError(
                f"logger=mlflow: {self._where()} did not take the run's results ({error}); the "
                f"run directory {self.directory} holds them."
            ) from None

    def _log_artifacts(self) -> None:
        for name in ARTIFACTS:
            if (self.directory / name).is_file():
                self.client.log_artifact(self.run_id, str(self.directory / name))
        if (self.directory / "plots").is_dir():
            self.client.log_artifacts(self.run_id, str(self.directory / "plots"), "plots")

    def stop(self, error: BaseException) -> None:
        """The run failed (FAILED), or a signal or a pruner stopped it (KILLED)."""
        stopped = isinstance(error, (Interrupted, KeyboardInterrupt, StoppedOnPurpose))
        self._end("KILLED" if stopped else "FAILED")

    def _end(self, status: str) -> None:
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception as error:  # the run's own error is the one to report
            log.warning("logger=mlflow: could not mark the run %s: %s", status, error)
