"""SLURM: the launcher config, the optional plugin, run directories named by the job id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from kd_command import ONE_THREAD, REPO, kd_environment
from kd_settings import TINY

from kdcli.config import checks as validate
from kdcli.config import resolvers
from kdcli.config.checks import check_overrides
from kdcli.config.paths import config_dir
from kdcli.errors import UserError

SCRIPTS = REPO / "scripts"
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")


@pytest.fixture
def no_slurm(monkeypatch):
    for name in SLURM_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_slurm_tag_names_the_job_or_the_array_task(no_slurm):
    assert resolvers.slurm_tag() == ""
    no_slurm.setenv("SLURM_JOB_ID", "4242")
    assert resolvers.slurm_tag() == "_slurm4242"
    no_slurm.setenv("SLURM_ARRAY_JOB_ID", "4200")
    no_slurm.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert resolvers.slurm_tag() == "_slurm4200_7"


def run_and_sweep_dirs() -> tuple[str, str]:
    resolvers.register()
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="train"):
        cfg = compose("train", return_hydra_config=True)
    return str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)


def test_two_jobs_starting_together_get_different_directories(no_slurm):
    run_dir, sweep_dir = run_and_sweep_dirs()
    assert "slurm" not in run_dir and "slurm" not in sweep_dir
    no_slurm.setenv("SLURM_JOB_ID", "101")
    assert run_and_sweep_dirs()[0].endswith("_slurm101")
    no_slurm.setenv("SLURM_JOB_ID", "102")
    run_dir, sweep_dir = run_and_sweep_dirs()
    assert run_dir.endswith("_slurm102") and sweep_dir.endswith("_slurm102")


def test_slurm_launcher_without_the_plugin_names_the_extra(monkeypatch):
    monkeypatch.setattr(validate, "submitit_installed", lambda: False)
    with pytest.raises(UserError, match=r"pip install kdcli\[slurm\]"):
        check_overrides(["hydra/launcher=slurm", "loss.alpha=0.1,0.5"], multirun=True)


@pytest.mark.skipif(not validate.submitit_installed(), reason="kdcli[slurm] absent")
def test_slurm_launcher_config_composes_with_the_plugin():
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "loss.alpha=0.1,0.5"]
    check_overrides(overrides, multirun=True)
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="train"):
        cfg = compose("train", overrides=overrides[:2], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node) == ("gpu", 1)
    assert launcher.timeout_min > 0 and launcher.mem_gb > 0


@pytest.mark.parametrize("script", ["slurm_single.sbatch", "slurm_sweep.sbatch"])
def test_sbatch_scripts_are_valid_bash(script):
    done = subprocess.run(["bash", "-n", SCRIPTS / script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = (SCRIPTS / script).read_text()
    assert text.startswith("#!/bin/bash") and "#SBATCH --time=" in text


def test_the_sweep_script_saves_requeues_and_the_requeued_task_continues(tmp_path):
    """SLURM's USR1 before the time limit reaches the script: kd saves its state and exits,
    the script requeues the task, and the requeued task (the same script) resumes."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    requeued = tmp_path / "requeued.txt"
    (fake_bin / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {requeued}\n')
    (fake_bin / "scontrol").chmod(0o755)
    points = tmp_path / "points.txt"
    points.write_text("seed=3\n")
    env = kd_environment(
        {
            **ONE_THREAD,
            "PATH": f"{fake_bin}:{Path(sys.executable).parent}:{os.environ['PATH']}",
            "SLURM_ARRAY_JOB_ID": "7",
            "SLURM_ARRAY_TASK_ID": "0",
        }
    )
    args = ["bash", str(SCRIPTS / "slurm_sweep.sbatch"), str(points), *TINY, "student.epochs=3"]
    args += ["checkpoint.every_s=0", "baseline=false"]
    script = subprocess.Popen(args, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("outputs/cache/students/*.state.pt")):
        assert script.poll() is None and time.monotonic() < deadline, script.communicate()[1]
        time.sleep(0.005)
    script.send_signal(signal.SIGUSR1)
    _, stderr = script.communicate(timeout=120)
    assert script.returncode == 0, stderr
    assert "kd: stopped by SIGUSR1; saved the state of student" in stderr
    assert requeued.read_text() == "requeue 7_0\n"

    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    report = json.loads((tmp_path / "outputs/array/7/0/report.json").read_text())
    assert report["stages"]["distill"]["resumed_from"] is not None
    assert report["seed"] == 3
