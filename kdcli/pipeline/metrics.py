"""Per-epoch metrics of every training stage: `metrics.jsonl` in the run directory (always),
plus the `logger` config group's choice (`csv`: metrics.csv; `tensorboard`: event files;
`mlflow`: an MLflow run, kdcli/pipeline/tracking.py).

One row per epoch and stage: `stage`, `epoch`, `step` (batches so far), `loss` and, for a
combo loss, `loss_<term>`, `train_<metric>`, `val_<metric>` when there is a validation split,
`lr`, `images_per_s`, `seconds`. A stage taken from the cache adds no rows; a resumed stage
adds the epochs it trained in this run.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


class StoppedOnPurpose(Exception):
    """A run stopped on purpose before its end, not failed (e.g. a search's pruned trial):
    a tracker marks its run KILLED, not FAILED."""


class JsonlLog:
    """`metrics.jsonl`: one JSON object a line, appended and flushed as each epoch ends."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / METRICS_FILE

    def row(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps({k: _finite(v) for k, v in row.items()}) + "\n")

    def close(self, hparams: dict[str, Any], final: dict[str, float]) -> None:
        pass

    def stop(self, error: BaseException) -> None:
        """The run ends early with `error` (a tracker marks its run failed or killed)."""


class CsvLog(JsonlLog):
    """`metrics.csv` beside metrics.jsonl: the same rows, one column per field seen."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.csv_path = Path(directory) / "metrics.csv"
        self.rows: list[dict[str, Any]] = []

    def row(self, row: dict[str, Any]) -> None:
        super().row(row)
        self.rows.append(row)
        columns = list(dict.fromkeys(key for r in self.rows for key in r))
        with open(self.csv_path, "w", newline="") as handle:  # rewritten: columns may grow
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)


class TensorBoardLog(JsonlLog):
    """TensorBoard event files in `<run dir>/tensorboard/`: every number of every row as a
    scalar `<stage>/<field>` against the step, and the run's settings with its final figures
    as hyperparameters. Needs `pip install kdcli[tensorboard]`."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        from torch.utils.tensorboard import SummaryWriter  # the extra is checked before the run

        self.writer = SummaryWriter(log_dir=str(Path(directory) / "tensorboard"))

    def row(self, row: dict[str, Any]) -> None:
        super().row(row)
        for key, value in row.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                self.writer.add_scalar(f"{row['stage']}/{key}", value, row["step"])
        self.writer.flush()

    def close(self, hparams: dict[str, Any], final: dict[str, float]) -> None:
        values = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                  for k, v in hparams.items()}  # fmt: skip
        self.writer.add_hparams(values, {f"final/{k}": v for k, v in final.items()}, run_name=".")
        self.writer.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl (a line torn by a kill is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows
