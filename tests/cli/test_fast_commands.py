"""The commands a user types to find their way (`kd --help`, `kd list`, `kd train --help`,
`kd report`, a completion Tab) answer in a fraction of a second because they never import
torch (2-3 s of start-up), torchvision, transformers, nor the search and tracking libraries.
Asserted on the modules a real `kd` process loaded, never on a time, so a busy machine cannot
fail it nor a fast one hide an import; scripts/bench_startup.py measures the times."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# torch alone costs 2-3 s; each of the others 0.4 s or more (mlflow 1.4 s), where the goal is
# 0.5 s in all: a command that needs one imports it inside the function that uses it
HEAVY = (
    "torch",
    "torchvision",
    "transformers",
    "optuna",
    "mlflow",
    "sqlalchemy",
    "matplotlib",
    "wandb",
)

# A launcher for run_kd (`python -c PROBE -m kdcli ARGS`): runs kd as `python -m kdcli` does,
# and on the way out, exit code or not, writes which heavy modules were imported.
PROBE = f"""
import atexit, json, os, runpy, sys
def note():
    with open(os.environ["KD_PROBE_OUT"], "w") as out:
        json.dump([m for m in {HEAVY!r} if m in sys.modules], out)
atexit.register(note)
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def a_run(folder: Path) -> Path:
    """A run directory as `kd report` reads it (what `kd train` writes, trimmed)."""
    (folder / ".hydra").mkdir(parents=True)
    figures = {"params": 1000, "checkpoint_bytes": 4096, "top1": 0.9}
    report = {
        "seed": 0,
        "metric": "top1",
        "metric_label": "top-1",
        "teacher": {**figures, "name": "resnet18"},
        "student": {**figures, "name": "smallcnn"},
        "baseline": {**figures, "name": "smallcnn", "top1": 0.85},
        "kd_gain": 0.05,
        "warnings": [],
        "stages": {"distill": {"seconds": 1.0}},
    }
    (folder / "report.json").write_text(json.dumps(report))
    (folder / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    return folder


def a_search(folder: Path) -> Path:
    """A search's sweep directory: search.json and its one trial's run."""
    a_run(folder / "0")
    report = json.loads((folder / "0" / "report.json").read_text())
    report["student"]["val_top1"] = 0.88
    (folder / "0" / "report.json").write_text(json.dumps(report))
    trial = {"number": 0, "state": "complete", "params": {"loss.alpha": 0.5}, "value": 0.88}
    search = {
        "kind": "kdcli search",
        "version": 1,
        "study": "kd-search",
        "direction": "maximize",
        "objective": "val_top1",
        "n_trials": 1,
        "space": {"loss.alpha": {"kind": "float", "low": 0.1, "high": 0.9, "log": False}},
        "trials": [{**trial, "run_dir": "0", "intermediate": {}}],
        "best": 0,
    }
    (folder / "search.json").write_text(json.dumps(search))
    return folder


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        [],
        ["list"],
        ["list", "loss"],
        ["train", "--help"],
        ["train", "teacher=resnet50", "loss=dkd", "--help", "--resolve"],
        ["train", "--hydra-help"],
        ["report", "RUN"],
        ["completion", "bash"],
        ["completion", "bash", "--line=kd train loss=dkd loss."],
        ["completion", "zsh", "--line=kd train hydra/launcher="],
    ],
    ids=lambda args: " ".join(args) or "(no command)",
)
def test_finding_ones_way_never_imports_torch(kd, tmp_path, args):
    args = [str(a_run(tmp_path / "run")) if a == "RUN" else a for a in args]
    probe = tmp_path / "imported.json"
    done = kd(*args, env={"KD_PROBE_OUT": str(probe)}, launcher=[sys.executable, "-c", PROBE, "-m"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "the command answered"
    assert json.loads(probe.read_text()) == [], f"kd {' '.join(args)} imported them"


def test_a_searchs_report_draws_its_plots_without_torch(kd, tmp_path):
    """Optuna and matplotlib draw a search's history beside its table (by design); torch and
    the model libraries stay out."""
    probe = tmp_path / "imported.json"
    launcher = [sys.executable, "-c", PROBE, "-m"]
    search = a_search(tmp_path / "search")
    done = kd("report", str(search), env={"KD_PROBE_OUT": str(probe)}, launcher=launcher)
    assert done.returncode == 0, done.stderr
    assert not set(json.loads(probe.read_text())) & {"torch", "torchvision", "transformers"}


def test_the_probe_sees_torch_when_a_command_imports_it(kd, tmp_path):
    """The probe itself works: a command that needs torch is caught importing it."""
    probe = tmp_path / "imported.json"
    launcher = [sys.executable, "-c", PROBE, "-m"]
    done = kd("eval", "missing.pt", env={"KD_PROBE_OUT": str(probe)}, launcher=launcher)
    assert done.returncode == 2
    assert "torch" in json.loads(probe.read_text())
