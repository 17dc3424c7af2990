"""A non-editable install (a wheel) finds its configs and gives a working `kd`."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_the_configs_and_runs_outside_the_repo(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    [wheel] = tmp_path.glob("kdcli-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "kdcli/configs/train.yaml" in names
    assert "kdcli/configs/teacher/resnet18.yaml" in names
    assert "hydra_plugins/kdcli_search/optuna_sweeper.py" in names  # hydra/sweeper=optuna
    assert "hydra_plugins/__init__.py" not in names  # a namespace package other plugins share

    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)  # what pip install puts in site-packages
    env = {**os.environ, "PYTHONPATH": str(target)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", "import kdcli.config.paths as p; print(p.config_dir())"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == target / "kdcli" / "configs"
    # the unpacked wheel on PYTHONPATH on purpose, not kd_command's environment
    listing = subprocess.run(
        [sys.executable, "-m", "kdcli", "list", "teacher"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert listing.returncode == 0, listing.stderr
    assert "resnet50" in listing.stdout
