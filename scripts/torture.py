"""Torture test: kill `kd train` at random points of every stage, rerun the same command, and
check that nothing was lost or torn.

    python scripts/torture.py                 # 20 kill -9 points and one SIGTERM, ~5 min on a CPU
    python scripts/torture.py --points 40 --seed 1

First one run that is never stopped gives the reference accuracies. Then each trial starts
the same command with a fresh cache, waits until a chosen stage is under way (its training
state or its temporary build directory appears in the cache, or the baseline's entry, for
the evaluation), waits a random fraction of a second more, and kills the process with
kill -9; the trials cycle through the stages, and a few kill at a random moment of the whole
run instead (start-up included). One more trial sends SIGTERM and times the exit. After each
stop the same command runs again, in a new run directory, and must:

- end with the reference's teacher, student and baseline accuracies, exactly;
- leave a cache whose every entry passes a full SHA-256 check, with no temporary files, no
  half-built directories and no training states left behind.

The script prints one line a trial, then how much training the reruns did not have to
repeat (steps reused from the cache or resumed from a saved state, over all training steps),
and exits 1 if any trial failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kdcli.store.cache import read_verified

EPOCHS = 4
BATCH = 64
# A small run (seconds a stage on a CPU) that still has every stage, augmented data (views
# soft labels) and a state saved several times an epoch.
RUN = [
    "teacher=smallcnn",
    "teacher.model.width=16",
    f"teacher.epochs={EPOCHS}",
    "student=mlp",
    f"student.epochs={EPOCHS}",
    "eval.latency_runs=20",
    "checkpoint.every_s=0.05",
]
# stage -> what in the cache shows that it is under way
STAGES = {
    "teacher": "teachers/*.state.pt",
    "soft_labels": "soft_labels/*.partial",
    "distill": "students/*.state.pt",
    "baseline": "baselines/*.state.pt",
    "evaluate": "baselines/*/manifest.json",
}
ROLES = ("teacher", "student", "baseline")


@dataclass
class Trial:
    stage: str  # the stage the kill aimed at, or "anywhere"
    how: str  # "kill -9" or "SIGTERM"
    stopped_at: float  # seconds after start
    exit_code: int
    identical: bool
    clean: str  # "" or what was left torn
    steps_saved: int
    note: str = ""


def kd_command(cache: Path) -> list[str]:
    return [sys.executable, "-m", "kdcli", "train", *RUN, f"cache_dir={cache}"]


def environment() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("KD_CACHE_DIR", None)
    return env


def run_to_end(cwd: Path, cache: Path) -> dict:
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        kd_command(cache), cwd=cwd, env=environment(), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"kd train failed in {cwd}:\n{done.stderr}")
    [report] = cwd.glob("outputs/runs/*/*/report.json")
    return json.loads(report.read_text())


def accuracies(report: dict) -> dict[str, float]:
    return {role: report[role]["top1"] for role in ROLES}


def stop(cwd: Path, cache: Path, marker: str | None, at: float, signum: int) -> tuple[float, int]:
    """Start kd; send `signum` `at` seconds after `marker` appears in the cache (or after the
    start, without a marker). Returns when it was sent (s after start) and the exit code."""
    cwd.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    process = subprocess.Popen(
        kd_command(cache),
        cwd=cwd,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if marker is not None:
        while not list(cache.glob(marker)) and process.poll() is None:
            time.sleep(0.002)
    time.sleep(at)
    sent = time.monotonic() - started
    process.send_signal(signum)
    return sent, process.wait(timeout=300)


def torn(cache: Path) -> str:
    """What in the cache is not a complete, verified entry (empty when all is well)."""
    problems = []
    for path in sorted(cache.glob("*/*")):
        if path.name.startswith(".") or path.name.endswith((".state.pt", ".partial")):
            problems.append(f"left behind: {path.relative_to(cache)}")
        elif path.is_dir() and read_verified(path, full=True) is None:
            problems.append(f"fails its checksums: {path.relative_to(cache)}")
    return "; ".join(problems)


def steps_saved(report: dict, steps_per_epoch: int) -> int:
    """Training steps the rerun did not repeat: reused stages and resumed positions."""
    saved = 0
    for stage in ("teacher", "distill", "baseline"):
        record = report["stages"][stage]
        if record["reused"]:
            saved += EPOCHS * steps_per_epoch
        elif record.get("resumed_from"):  # "epoch E, batch B" or "after epoch E"
            numbers = [int(n) for n in re.findall(r"\d+", record["resumed_from"])]
            epoch, batch = (numbers[0] - 1, numbers[1]) if len(numbers) == 2 else (numbers[0], 0)
            saved += epoch * steps_per_epoch + batch
    return saved


def trial(root: Path, reference: dict, stage: str, rng: random.Random, steps: int) -> Trial:
    """kill -9 a little after `stage` begins (or anywhere in the run), then rerun."""
    cache = root / "cache"
    marker = STAGES.get(stage)
    at = rng.uniform(0.0, 0.4) if marker else rng.uniform(0.0, reference["_seconds"])
    how, signum = "kill -9", signal.SIGKILL
    sent, code = stop(root / "first", cache, marker, at, signum)
    report = run_to_end(root / "second", cache)
    same = accuracies(report) == accuracies(reference)
    return Trial(stage, how, sent, code, same, torn(cache), steps_saved(report, steps))


def sigterm_trial(root: Path, reference: dict, steps: int) -> Trial:
    """SIGTERM mid-distillation: kd must save and exit 143 within seconds."""
    cache = root / "cache"
    (root / "first").mkdir(parents=True)
    process = subprocess.Popen(
        kd_command(cache),
        cwd=root / "first",
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    while not list(cache.glob(STAGES["distill"])) and process.poll() is None:
        time.sleep(0.002)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    took = time.monotonic() - sent
    note = f"exited {took:.2f} s after SIGTERM"
    if "Run the same command again" not in stderr or "Traceback" in stderr:
        note += f"; unexpected message: {stderr.strip().splitlines()[-1:]}"
    report = run_to_end(root / "second", cache)
    same = accuracies(report) == accuracies(reference) and process.returncode == 143
    saved = steps_saved(report, steps)
    return Trial(
        "distill", "SIGTERM", sent - started, process.returncode, same, torn(cache), saved, note
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=20, help="kill -9 trials (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="where the kills land")
    parser.add_argument("--workdir", type=Path, help="keep every trial's files here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="kd-torture-"))
    steps = _steps_per_epoch()

    started = time.monotonic()
    reference = run_to_end(root / "reference", root / "reference" / "cache")
    reference["_seconds"] = time.monotonic() - started
    print(f"reference run: {reference['_seconds']:.1f} s, accuracies {accuracies(reference)}")

    aims = [*STAGES, "anywhere"]
    trials = []
    for i in range(args.points):
        result = trial(root / f"kill{i:02d}", reference, aims[i % len(aims)], rng, steps)
        trials.append(result)
        _show(i, result)
    trials.append(sigterm_trial(root / "sigterm", reference, steps))
    _show(args.points, trials[-1])

    total = 3 * EPOCHS * steps
    saved = [t.steps_saved for t in trials]
    failed = [t for t in trials if not t.identical or t.clean]
    print(
        f"\n{len(trials) - len(failed)} of {len(trials)} trials ended with the reference's "
        f"accuracies and a clean cache. The reruns skipped {sum(saved) / len(saved):.0f} of "
        f"{total} training steps on average ({100 * sum(saved) / (len(saved) * total):.0f} %: "
        "reused stages and resumed positions)."
    )
    print(f"files: {root}")
    return 1 if failed else 0


def _steps_per_epoch() -> int:
    from kdcli.data.digits import Digits

    return len(Digits().load().train_loader(BATCH, 0))


def _show(i: int, t: Trial) -> None:
    verdict = "ok" if t.identical and not t.clean else "FAILED"
    print(
        f"{i:3d} {t.how:<8} aimed at {t.stage:<11} sent at {t.stopped_at:5.1f} s, exit "
        f"{t.exit_code:4d}; rerun skipped {t.steps_saved:3d} steps; {verdict}"
        + (f"; {t.note}" if t.note else "")
        + (f"; {t.clean}" if t.clean else "")
    )


if __name__ == "__main__":
    sys.exit(main())
