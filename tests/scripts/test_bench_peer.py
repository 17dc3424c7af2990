"""scripts/bench_peer.py: its generated CIFAR-shaped data, and the whole script in its smallest
setting (digits, MLPs, one epoch, no sweep), with torchdistill when $KD_PEER_PATH has it."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numpy as np
from kd_command import REPO

from kdcli.data.cifar import read_batch

SCRIPTS = REPO / "scripts"


def test_cifar_shaped_data_is_balanced_learnable_and_written_as_cifar10(tmp_path):
    sys.path.insert(0, str(SCRIPTS))
    bench = importlib.import_module("peer_data")
    train, test = bench.cifar_shaped(200, seed=1), bench.cifar_shaped(100, seed=2)
    assert train[0].shape == (200, 3, 32, 32) and train[0].dtype == np.uint8
    assert np.bincount(train[1], minlength=10).tolist() == [20] * 10
    np.testing.assert_array_equal(bench.cifar_shaped(200, seed=1)[0], train[0])

    # learnable: the nearest class mean of the training images beats chance (10%) by far
    def flat(images):
        return images.reshape(len(images), -1).astype(np.float32) - 128

    means = np.stack([flat(train[0])[train[1] == c].mean(0) for c in range(10)])
    scores = flat(test[0]) @ means.T - 0.5 * (means**2).sum(1)
    assert (scores.argmax(1) == test[1]).mean() > 0.5

    bench.write_cifar10(tmp_path, train, test)
    folder = tmp_path / "cifar-10-batches-py"
    batches = [read_batch(folder / f"data_batch_{i}", "labels") for i in range(1, 6)]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), train[0])
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), train[1])
    np.testing.assert_array_equal(read_batch(folder / "test_batch", "labels")[0], test[0])
    assert (folder / "batches.meta").is_file()


def test_smallest_run_prints_the_table(tmp_path):
    peer = os.environ.get("KD_PEER_PATH") or str(tmp_path / "no-peer-here")
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "bench_peer.py"),
            "--dataset=digits",
            "--teacher=mlp",
            "--student=mlp",
            "--epochs=1",
            "--teacher-epochs=1",
            "--no-sweep",
            f"--peer-path={peer}",
            "--set",
            "teacher.model.hidden=[16]",
            "student.model.hidden=[8]",
            "plots=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "| run | tool | mode | precision | seconds | images/s |" in done.stdout
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert all(line.startswith("| single run") for line in lines[1:])  # no sweep rows
    rows = [line.split("|")[1:-1] for line in lines[1:]]
    tools = [row[1].strip() for row in rows]
    modes = [row[2].strip() for row in rows]
    assert tools[:2] == ["kdcli", "kdcli"]
    assert modes[:2] == ["stored soft labels (views)", "online teacher"]
    peer_ran = "torchdistill 1.1.5" in tools
    assert peer_ran != ("printing the kdcli rows only" in done.stderr)
    assert len(rows) == 2 + peer_ran
    for row in rows:
        seconds, rate, top1, speed = float(row[4]), float(row[5]), float(row[6]), row[7].strip()
        # seconds are printed to 0.1 s, which a tiny run can round to 0; images/s is not rounded
        assert seconds >= 0 and rate > 0 and 0 <= top1 <= 100
        assert speed.endswith("x") if peer_ran else speed == "–"
