"""The `kd` command itself: subcommands, help, listing, exit codes."""

import json
from pathlib import Path

import pytest
from kd_settings import TINY

from kdcli.cli import run_dirs
from kdcli.cli.main import build_parser, main
from kdcli.errors import LONGEST_MESSAGE, LONGEST_WORD, shorten


def test_kd_help_lists_the_subcommands(kd):
    result = kd("--help")
    assert result.returncode == 0
    assert "train" in result.stdout and "list" in result.stdout


def test_kd_without_a_command_prints_usage(kd):
    result = kd()
    assert result.returncode == 0
    assert "usage: kd" in result.stdout


def test_train_help_shows_config_groups(kd):
    result = kd("train", "--help")
    assert result.returncode == 0
    assert "== Config groups ==" in result.stdout
    assert "teacher:" in result.stdout and "resnet50" in result.stdout


def test_train_cfg_job_prints_the_composed_config_and_runs_nothing(kd, tmp_path):
    result = kd("train", "teacher=resnet50", "loss.alpha=0.3", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "arch: resnet50" in result.stdout
    assert "alpha: 0.3" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_list_shows_every_group_with_defaults_marked(kd):
    result = kd("list")
    assert result.returncode == 0
    for group in ("teacher", "student", "dataset", "loss", "device", "optimizer", "scheduler"):
        assert group in result.stdout
    assert "resnet8x4 (default)" in result.stdout
    assert "smallcnn (default)" in result.stdout


def test_list_one_group(kd):
    result = kd("list", "loss")
    assert result.returncode == 0
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ ")]
    assert {line.split()[1] for line in rows} == {"loss", "│"}  # continuation lines start "│ │"
    assert "hard" in result.stdout


def test_list_unknown_group_exits_2_with_a_suggestion(kd):
    result = kd("list", "teachr")
    assert result.returncode == 2
    assert "Did you mean teacher" in result.stderr
    assert "Traceback" not in result.stderr


def test_parser_knows_the_subcommands():
    parser = build_parser()
    assert parser.parse_args(["list"]).command == "list"
    assert parser.parse_args(["report", "outputs"]).command == "report"


def test_shell_completion_is_refused_with_what_to_use_instead(kd):
    result = kd("train", "--shell-completion", "install=bash")
    assert result.returncode == 2
    assert "kd list" in result.stderr and "Traceback" not in result.stderr
    assert 'eval "$(kd completion bash)"' in result.stderr


def test_multirun_flag_may_come_after_the_overrides(kd):
    result = kd("train", "seed=1", "-m", *TINY, "baseline=false")  # one point is enough
    assert result.returncode == 0, result.stderr
    [run] = result.runs()
    assert "multirun" in run.parts and json.loads((run / "report.json").read_text())["seed"] == 1


def test_multirun_with_cfg_is_refused_without_a_traceback(kd, tmp_path):
    result = kd("train", "seed=0,1", "--cfg", "job", "-m")
    assert result.returncode == 2
    assert "--multirun and --cfg cannot go together" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("a" * 10_000 + "=1", "no setting has a name that long (10000 characters"),
        ("seed=" + "7a" * 5_000, "must be a whole number"),
        ("hydra.run.dir=" + "d" * 10_000, "kd cannot make a directory there"),
        ("teacher.checkpoint=" + "c" * 10_000, "no such file"),
    ],
)
def test_a_10000_character_key_or_value_is_refused_in_a_short_message(capsys, override, expected):
    assert main(["train", override]) == 2
    err = capsys.readouterr().err
    assert expected in err and "characters cut" in err
    assert len(err) < 2 * LONGEST_WORD + 400 and "Traceback" not in err


def test_shorten_cuts_long_words_and_long_messages():
    assert shorten("seed='abc' must be a number") == "seed='abc' must be a number"
    cut = shorten("x=" + "a" * 1000 + " must be short")
    assert cut.startswith("x=" + "a" * 148) and cut.endswith("a" * 150 + " must be short")
    assert "(702 characters cut)" in cut
    assert len(shorten("word " * 1000)) < LONGEST_MESSAGE + 40


def files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def finished_run(run: Path) -> dict[str, bytes]:
    """A run directory as a finished `kd train` leaves it (the parts Hydra rewrites); its
    files' bytes by relative path."""
    (run / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run / ".hydra" / name).write_text(f"{name}: of the finished run\n")
    (run / "train.log").write_text("the finished run's log\n")
    (run / "report.json").write_text('{"student": {"top1": 0.9}}')
    return files(run)


def test_a_run_that_fails_its_checks_in_a_finished_run_directory_leaves_it_as_it_was(kd, tmp_path):
    """Hydra rewrites .hydra/ and opens train.log before the dataset is built and found
    missing; what it changed is put back."""
    run = tmp_path / "outputs" / "runs" / "X"
    before = finished_run(run)
    done = kd("train", *TINY, f"hydra.run.dir={run}", "dataset=imagefolder", "dataset.root=gone")
    assert done.returncode == 2 and "dataset.root=gone is not a folder" in done.stderr
    assert files(run) == before


def test_put_back_restores_each_job_folder_of_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    before = finished_run(sweep / "0")
    (sweep / "1").mkdir()
    run_dirs.keep([f"hydra.sweep.dir={sweep}", "seed=0,1"], multirun=True)
    for job in ("0", "1", "2"):  # what Hydra does before a job's objects are built
        (sweep / job / ".hydra").mkdir(parents=True, exist_ok=True)
        (sweep / job / ".hydra" / "config.yaml").write_text("the failed job's")
        (sweep / job / ".hydra" / "hydra.yaml").write_text("the failed job's")
        with open(sweep / job / "train.log", "a") as log:
            log.write("the failed job's log\n")
    assert run_dirs.put_back(sweep / "0") and run_dirs.put_back(sweep / "1")
    assert files(sweep / "0") == before
    assert list((sweep / "1").iterdir()) == []
    assert not run_dirs.put_back(sweep / "2"), "a folder the job made is the caller's to remove"
