"""`logger=wandb`: each run (each point of a sweep or search) as one Weights & Biases run,
offline by default.

Offline (`logger.mode=offline`, the default) nothing leaves the machine: W&B writes the run
under `outputs/wandb/offline-run-*`, and `wandb sync outputs/wandb/offline-run-*` uploads it
later. `logger.mode=online` sends it at once (needs `wandb login` and a network).

A run records the resolved config (flattened to dotted keys, values kept as numbers, lists and
text, so that W&B can plot a setting against a figure; URI passwords masked), every number of
every per-epoch row as `<stage>/<field>` against its own step metric `<stage>/step` (the
teacher's and the student's epochs each count from 0), the report's final figures in the
run's summary as `final/<name>`, and report.json,
report.md, the student checkpoint and plots/ as one artifact of type `kd-run`. A sweep is one
group (named after its directory) with one run per point; a single run is in no group. The
run ends with exit code 0, or 1 when the pipeline raises (run.py calls `stop`; the summary's
`kdcli/stopped` says why).

wandb is imported once, when the logger is made (on rank 0 only, as every logger), and is
called once per epoch and at the end, never per step. `kdcli.config.loggers` checks the
package and the keys before anything runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kdcli import __version__
from kdcli.engine.interrupt import Interrupted
from kdcli.errors import RunError, first_line
from kdcli.pipeline.metrics import JsonlLog, StoppedOnPurpose
from kdcli.pipeline.tracking import (
    ARTIFACTS,
    dotted,
    experiment_name,
    git_commit,
    is_number,
    job_place,
    run_name,
)

log = logging.getLogger(__name__)

DEFAULT_DIR = "outputs"  # W&B makes wandb/ in it; relative paths start where kd runs
ARTIFACT_TYPE = "kd-run"


class WandbLog(JsonlLog):
    """metrics.jsonl, and the run in Weights & Biases. Needs `pip install kdcli[wandb]`."""

    def __init__(
        self,
        directory: Path,
        project: str = "kdcli",
        mode: str = "offline",
        dir: str = DEFAULT_DIR,
        entity: str | None = None,
        group: str | None = None,
        artifacts: bool = True,
    ) -> None:
        super().__init__(directory)
        import wandb  # the extra is checked before the run

        self.directory = Path(directory)
        self.artifacts = artifacts
        self.stages: set[str] = set()
        place = job_place(self.directory)
        root = Path(dir) if Path(dir).is_absolute() else place.cwd / dir
        root.mkdir(parents=True, exist_ok=True)
        config = self.directory / "config.yaml"  # the resolved job config run.py has written
        params = dotted(OmegaConf.to_container(OmegaConf.load(config))) if config.is_file() else {}
        tags: dict[str, Any] = {"kdcli.version": __version__, "kdcli.run_dir": str(place.run_dir)}
        if place.sweep_dir is not None:
            tags.update({"kdcli.sweep_dir": str(place.sweep_dir), "kdcli.job_num": place.job_num})
        commit = git_commit(place.cwd)
        if commit:
            tags["kdcli.git_commit"] = commit
        if group is None and place.sweep_dir is not None:
            group = experiment_name(place)  # the sweep directory, relative to where kd runs
        settings = wandb.Settings(
            silent=True,
            console="off",
            disable_git=True,
            save_code=False,
            x_disable_stats=True,
            x_save_requirements=False,
        )
        try:
            self.run = wandb.init(
                mode=mode,  # type: ignore[arg-type]  # offline or online (config/loggers.py)
                dir=str(root),
                project=project,
                entity=entity,
                group=group,
                name=run_name(place),
                job_type="kd train",
                config={**params, **tags},
                settings=settings,
            )
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as error:  # whatever W&B refuses: the run has not begun
            raise RunError(f"logger=wandb: W&B refused a new run ({mode}): {error}") from None
        self.warned = False

    def row(self, row: dict[str, Any]) -> None:
        """One call per epoch; a failure here is warned about once, and the run trains on
        (the rows stay in metrics.jsonl)."""
        super().row(row)
        stage = str(row["stage"])
        values = {f"{stage}/{k}": v for k, v in row.items() if k not in ("stage", "epoch", "step")}
        numbers = {k: v for k, v in values.items() if is_number(v)}
        numbers[f"{stage}/step"] = int(row.get("step") or 0)
        numbers[f"{stage}/epoch"] = int(row.get("epoch") or 0)
        try:
            if stage not in self.stages:  # each stage's figures against its own steps
                self.run.define_metric(f"{stage}/step")
                self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
                self.stages.add(stage)
            self.run.log(numbers)
        except Exception as error:
            if not self.warned:
                log.warning("logger=wandb: W&B refused the epoch's metrics: %s", error)
                self.warned = True

    def close(self, hparams: dict[str, Any], final: dict[str, float]) -> None:
        """The final figures and the artifacts; then the run finishes (exit code 0)."""
        try:
            self.run.config.update(dotted(hparams), allow_val_change=True)
            self.run.summary.update({f"final/{k}": v for k, v in final.items() if is_number(v)})
            if self.artifacts:
                self._log_artifacts()
            self.run.finish(exit_code=0)
        except Exception as error:  # run.py's `stop` ends the run failed
            raise RunError(
                f"logger=wandb: W&B did not take the run's results ({error}); the run "
                f"directory {self.directory} holds them."
            ) from None

    def _log_artifacts(self) -> None:
        import wandb

        files = [self.directory / name for name in ARTIFACTS]
        plots = self.directory / "plots"
        if not any(f.is_file() for f in files) and not plots.is_dir():
            return
        artifact = wandb.Artifact(f"run-{self.run.id}", type=ARTIFACT_TYPE)
        for file in files:
            if file.is_file():
                artifact.add_file(str(file))
        if plots.is_dir():  # file by file: add_dir prints a line of its own
            for plot in sorted(p for p in plots.rglob("*") if p.is_file()):
                artifact.add_file(str(plot), name=f"plots/{plot.relative_to(plots).as_posix()}")
        self.run.log_artifact(artifact)

    def stop(self, error: BaseException) -> None:
        """The run failed, or a signal or a pruner stopped it: it ends with exit code 1 and
        `kdcli/stopped` in its summary."""
        stopped = isinstance(error, (Interrupted, KeyboardInterrupt, StoppedOnPurpose))
        why = f"stopped: {first_line(error)}" if stopped else f"failed: {first_line(error)}"
        try:
            self.run.summary["kdcli/stopped"] = why
            self.run.finish(exit_code=1)
        except Exception as problem:  # the run's own error is the one to report
            log.warning("logger=wandb: could not end the run: %s", problem)
