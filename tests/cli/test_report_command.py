"""`kd report` over a real 2-point sweep (the table, the CSV, sorting, bad paths, the plot),
and over fake run directories for the seed groups (mean ± std)."""

from __future__ import annotations

import csv
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest
from kd_command import ONE_THREAD, run_kd
from kd_settings import TINY
from omegaconf import OmegaConf

from kdcli.cli.main import main
from kdcli.cli.sweep_report import Run, sort_rows, swept_keys


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A 2-point multirun (alpha 0.1 and 0.9); returns its sweep folder."""
    cwd = tmp_path_factory.mktemp("sweep")
    done = run_kd("train", "-m", *TINY, "loss.alpha=0.1,0.9", cwd=cwd, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    [folder] = cwd.glob("outputs/multirun/*/*")
    return folder


def reports(folder: Path) -> dict[str, dict]:
    """job number -> report.json"""
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/report.json")}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_table_and_csv_show_every_run_with_its_swept_setting(sweep, capsys):
    assert main(["report", str(sweep), "--per-run"]) == 0
    out = capsys.readouterr().out
    assert "loss.alpha" in out and "student top-1 %" in out and "KD gain" in out
    by_job = reports(sweep)
    rows = read_csv(sweep / "report.csv")
    assert [r["run"] for r in rows] == ["0", "1"]
    assert [r["loss.alpha"] for r in rows] == ["0.1", "0.9"]
    assert "teacher.epochs" not in rows[0], "settings shared by all runs are not swept"
    for row in rows:
        report = by_job[row["run"]]
        assert float(row["student_top1"]) == report["student"]["top1"]
        assert float(row["teacher_top1"]) == report["teacher"]["top1"]
        assert float(row["kd_gain"]) == report["kd_gain"]
        low, high = report["kd_gain_ci"]
        assert (float(row["kd_gain_ci_low"]), float(row["kd_gain_ci_high"])) == (low, high)
        assert float(row["kd_gain_p"]) == report["kd_gain_p"]
        assert float(row["student_ece"]) == report["student"]["ece"]
        assert int(row["warnings"]) == len(report["warnings"])
        assert f"{100 * low:+.2f} to {100 * high:+.2f}" in out
        assert int(row["student_params"]) == report["student"]["params"]
        assert float(row["seconds"]) == pytest.approx(
            sum(s["seconds"] for s in report["stages"].values())
        )
        assert f"{100 * report['student']['top1']:.2f}" in out
    assert sorted(r["teacher_reused"] for r in rows) == ["False", "True"]


def test_sort_by_a_column_in_either_direction(sweep, tmp_path):
    by_job = reports(sweep)
    accuracy = {job: r["student"]["top1"] for job, r in by_job.items()}
    ascending = sorted(accuracy, key=lambda job: (accuracy[job], job))
    out = tmp_path / "sorted.csv"
    per_run = ["--per-run", "--csv", str(out)]
    assert main(["report", str(sweep), "--sort", "student_top1", *per_run]) == 0
    assert [r["run"] for r in read_csv(out)] == ascending
    assert main(["report", str(sweep), "--sort", "loss.alpha", "--desc", *per_run]) == 0
    assert [r["loss.alpha"] for r in read_csv(out)] == ["0.9", "0.1"]


def test_run_directories_can_be_given_one_by_one(sweep, tmp_path, capsys):
    out = tmp_path / "two.csv"
    assert main(["report", str(sweep / "1"), str(sweep / "0"), "--csv", str(out)]) == 0
    assert [r["runs"] for r in read_csv(out)] == ["0", "1"], "alpha differs: two groups"


def test_the_real_command_prints_the_table(kd, sweep, tmp_path):
    done = kd("report", str(sweep), "--csv", str(tmp_path / "r.csv"))
    assert done.returncode == 0, done.stderr
    assert "kd report: 2 run(s), smallcnn -> mlp; 2 setting(s)" in done.stdout
    assert "…" not in done.stdout, "a table written to a pipe is not cut at 80 columns"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nowhere"], "nowhere: no such file or directory"),
        (["."], "no report.json below ."),
        (["{sweep}", "--sort", "acc"], "--sort acc: no such column"),
    ],
)
def test_bad_input_exits_2(sweep, tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)
    assert main(["report", *(a.format(sweep=sweep) for a in args)]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "report.csv").exists()


def test_plot_without_matplotlib_names_the_extra(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "r.csv"
    assert main(["report", str(sweep), "--plot", "--csv", str(out)]) == 2
    assert "pip install kdcli[plot]" in capsys.readouterr().err
    assert not out.exists(), "nothing is written when the plot cannot be drawn"


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="kdcli[plot] absent")
def test_plot_writes_a_png(sweep, tmp_path):
    out = tmp_path / "r.csv"
    assert main(["report", str(sweep), "--plot", "--csv", str(out)]) == 0
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_swept_keys_are_the_overrides_that_differ():
    runs = [
        Run(Path("a"), {}, {"loss.alpha": "0.1", "seed": "0", "loss": "kd"}),
        Run(Path("b"), {}, {"loss.alpha": "0.5", "seed": "0"}),
    ]
    assert swept_keys(runs) == ["loss.alpha", "loss"]
    assert swept_keys(runs[:1]) == ["loss.alpha", "seed", "loss"]


def test_missing_values_sort_last_either_way():
    header = ["run", "kd_gain"]
    table = [["a", None], ["b", 0.2], ["c", -0.1]]
    assert [r[0] for r in sort_rows(header, table, "kd_gain", False)] == ["c", "b", "a"]
    assert [r[0] for r in sort_rows(header, table, "kd_gain", True)] == ["b", "c", "a"]


# ---- seed groups, over fake run directories -----------------------------------------------

# (seed, alpha) -> (student top-1, baseline top-1, teacher top-1), as a sweep
# `kd train -m seed=0,1,2 loss.alpha=0.5,0.9` numbers its jobs
ACCURACIES = {
    (0, 0.5): (0.90, 0.88, 0.97),
    (0, 0.9): (0.93, 0.88, 0.97),
    (1, 0.5): (0.92, 0.89, 0.98),
    (1, 0.9): (0.94, 0.89, 0.98),
    (2, 0.5): (0.91, 0.90, 0.96),
    (2, 0.9): (0.95, 0.90, 0.96),
}


def fake_run(
    run: Path,
    seed: int,
    alpha: float,
    top1: tuple[float, float, float],
    epochs: int = 30,
    warnings: tuple[str, ...] = (),
    config: bool = True,
    metric: tuple[str, str] = ("top1", "top-1"),
) -> None:
    """A run directory as `kd train` leaves it: report.json, config.yaml, .hydra/."""
    student, baseline, teacher = top1
    (run / ".hydra").mkdir(parents=True)
    model = {"params": 1000, "checkpoint_bytes": 4096, "ece": 0.05}
    key = metric[0]
    report = {
        "seed": seed,
        "metric": metric[0],
        "metric_label": metric[1],
        "teacher": {**model, "name": "resnet18", key: teacher, "params": 9000},
        "student": {**model, "name": "smallcnn", key: student},
        "baseline": {**model, "name": "smallcnn", key: baseline},
        "kd_gain": student - baseline,
        "kd_gain_ci": [student - baseline - 0.01, student - baseline + 0.01],
        "kd_gain_p": 0.2,
        "warnings": list(warnings),
        "stages": {"teacher": {"seconds": 2.0}, "distill": {"seconds": 1.0 + seed}},
    }
    (run / "report.json").write_text(json.dumps(report))
    if config:
        settings = {"seed": seed, "cache_dir": f"/tmp/c{seed}", "loss": {"alpha": alpha}}
        OmegaConf.save({**settings, "student": {"epochs": epochs}}, run / "config.yaml")
    overrides = [f"seed={seed}", f"loss.alpha={alpha}"]
    (run / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))


@pytest.fixture
def seeds(tmp_path) -> Path:
    folder = tmp_path / "multirun"
    for job, ((seed, alpha), top1) in enumerate(ACCURACIES.items()):
        warned = ("teacher weaker than the student alone: ...",) if job == 4 else ()
        fake_run(folder / str(job), seed, alpha, top1, warnings=warned)
    return folder


def test_runs_that_differ_only_in_seed_share_a_row_with_mean_and_std(seeds, capsys):
    assert main(["report", str(seeds)]) == 0
    out = capsys.readouterr().out
    rows = read_csv(seeds / "report.csv")
    assert [(r["runs"], r["loss.alpha"], r["n_seeds"], r["seeds"]) for r in rows] == [
        ("0 2 4", "0.5", "3", "0 1 2"),
        ("1 3 5", "0.9", "3", "0 1 2"),
    ]
    assert "seed" not in rows[0], "the seed is what is aggregated, not a setting"
    for row, alpha in zip(rows, (0.5, 0.9), strict=True):
        runs = [v for (_, a), v in ACCURACIES.items() if a == alpha]
        figures = {
            "student_top1": [s for s, _, _ in runs],
            "baseline_top1": [b for _, b, _ in runs],
            "teacher_top1": [t for _, _, t in runs],
            "kd_gain": [s - b for s, b, _ in runs],
            "seconds": [3.0, 4.0, 5.0],
        }
        for name, values in figures.items():
            assert float(row[f"{name}_mean"]) == pytest.approx(statistics.mean(values))
            assert float(row[f"{name}_std"]) == pytest.approx(statistics.stdev(values))
        assert row["teacher"] == "resnet18" and int(row["student_params"]) == 1000
    assert [r["warnings"] for r in rows] == ["1", "0"]
    assert "kd report: 6 run(s), resnet18 -> smallcnn; 2 setting(s), mean ± std" in out
    # alpha 0.9: student 93, 94, 95 -> 94.00 ± 1.00; KD gain +5 on every seed -> ± 0.00
    assert "94.00 ± 1.00" in out and "+5.00 ± 0.00" in out


def test_per_run_keeps_one_row_per_run(seeds):
    out = seeds / "per-run.csv"
    assert main(["report", str(seeds), "--per-run", "--csv", str(out)]) == 0
    rows = read_csv(out)
    assert [r["run"] for r in rows] == [str(i) for i in range(6)]
    assert [float(r["seed"]) for r in rows] == [0, 0, 1, 1, 2, 2]
    assert float(rows[1]["student_top1"]) == 0.93 and "n_seeds" not in rows[0]


def test_other_settings_or_unknown_configs_make_their_own_groups(seeds):
    fake_run(seeds / "6", 3, 0.5, (0.5, 0.5, 0.5), epochs=1)  # same overrides, other config
    fake_run(seeds / "7", 4, 0.5, (0.6, 0.5, 0.5), config=False)  # no config.yaml: unknown
    (seeds / "7" / ".hydra" / "overrides.yaml").unlink()
    assert main(["report", str(seeds)]) == 0
    rows = read_csv(seeds / "report.csv")
    assert [(r["runs"], r["n_seeds"]) for r in rows] == [
        ("0 2 4", "3"),
        ("1 3 5", "3"),
        ("6", "1"),
        ("7", "1"),
    ]
    assert rows[2]["student_top1_std"] == "", "one seed: no standard deviation"


def test_hydra_config_is_used_when_config_yaml_is_missing(seeds):
    for job in ("0", "2"):
        (seeds / job / "config.yaml").rename(seeds / job / ".hydra" / "config.yaml")
    assert main(["report", str(seeds)]) == 0
    assert [r["n_seeds"] for r in read_csv(seeds / "report.csv")] == ["3", "3"]


def test_sorting_seed_groups_by_a_figure_sorts_by_its_mean(seeds):
    args = ["report", str(seeds), "--sort", "student_top1", "--desc"]
    assert main(args) == 0
    assert [r["loss.alpha"] for r in read_csv(seeds / "report.csv")] == ["0.9", "0.5"]


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="kdcli[plot] absent")
def test_plot_draws_error_bars_over_seeds(seeds, monkeypatch):
    from kdcli.cli import sweep_plot

    drawn = []
    real = sweep_plot.pyplot

    def spy():
        plt = real()
        original = plt.Axes.errorbar
        monkeypatch.setattr(
            plt.Axes,
            "errorbar",
            lambda self, x, y, **kw: drawn.append((x, y, kw["yerr"])) or original(self, x, y, **kw),
        )
        return plt

    monkeypatch.setattr(sweep_plot, "pyplot", spy)
    assert main(["report", str(seeds), "--plot"]) == 0
    assert (seeds / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [(xs, ys, errors)] = drawn
    assert xs == [0.5, 0.9]
    assert ys == pytest.approx([91.0, 94.0]) and errors == pytest.approx([1.0, 1.0])


def test_columns_follow_the_tasks_headline_metric(tmp_path, capsys):
    """report.json names its headline metric; the table and the CSV follow it."""
    for seed in (0, 1):
        fake_run(tmp_path / str(seed), seed, 0.5, (0.6, 0.5, 0.7), metric=("tok1", "token top-1"))
    assert main(["report", str(tmp_path)]) == 0
    assert "student token top-1 %" in capsys.readouterr().out
    [row] = read_csv(tmp_path / "report.csv")
    assert float(row["student_tok1_mean"]) == pytest.approx(0.6) and "student_top1_mean" not in row


def test_runs_of_different_tasks_are_not_mixed(tmp_path, capsys):
    fake_run(tmp_path / "0", 0, 0.5, (0.6, 0.5, 0.7), metric=("tok1", "token top-1"))
    fake_run(tmp_path / "1", 0, 0.9, (0.6, 0.5, 0.7))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "different headline metrics (tok1, top1)" in err
    assert not (tmp_path / "report.csv").exists()


# ---- files of the wrong shape, and where the CSV goes ----------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[1, 2]", "the file is [1, 2], not an object of figures"),
        ('"a report"', 'the file is "a report", not an object of figures'),
        ('{"student": 3}', "student is 3, not an object"),
        ('{"stages": "x"}', 'stages is "x", not an object'),
        ('{"stages": {"teacher": {"seconds": "long"}}}', 'stages.teacher.seconds is "long"'),
        ('{"student": {"top1": "high"}}', 'student.top1 is "high", not a number'),
        ('{"teacher": {"name": 7}}', "teacher.name is 7, not text"),
        ('{"kd_gain_ci": {"low": 0}}', 'kd_gain_ci is {"low": 0}, not [a, b]'),
        ('{"warnings": 5}', "warnings is 5, not a list"),
        ('{"metric": ["top1"]}', 'metric is ["top1"], not text'),
        ('{"student": {"params": 1' + "0" * 400 + "}}", "student.params is 1000"),
        ("[" * 100_000, "could not be read as JSON"),
    ],
)
def test_a_report_of_the_wrong_shape_exits_2_naming_the_file(tmp_path, capsys, content, expected):
    fake_run(tmp_path / "0", 0, 0.5, (0.9, 0.8, 0.95))
    path = tmp_path / "0" / "report.json"
    path.write_text(content)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"kd: error: {path.resolve()}" in err and expected in err, err
    assert not (tmp_path / "report.csv").exists()


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (".hydra/overrides.yaml", "seed: 1", 'is {"seed": 1}, not a list of key=value lines'),
        (".hydra/overrides.yaml", "- [1, 2]", "not a list of key=value lines"),
        (".hydra/overrides.yaml", "- !!python/object/apply:os.getcwd []", "could not be read"),
        ("config.yaml", "- seed", 'is ["seed"], not a mapping of settings'),
        ("config.yaml", "a: &x [1]\nb: *x", "uses an alias (*name), which kd never writes"),
        ("config.yaml", "a: " + "[" * 5000 + "]" * 5000, "could not be read as YAML"),
        ("config.yaml", "\udcff", "could not be read as YAML"),
    ],
)
def test_run_files_beside_the_report_of_the_wrong_shape_exit_2(
    tmp_path, capsys, name, content, expected
):
    fake_run(tmp_path / "0", 0, 0.5, (0.9, 0.8, 0.95))
    path = tmp_path / "0" / name
    path.write_bytes(content.encode(errors="surrogateescape"))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"kd: error: {path.resolve()}" in err and expected in err, err


@pytest.mark.parametrize(
    "where",
    ["/proc/no/such/dir/r.csv", "/proc/self/r.csv", "{tmp_path}"],
    ids=["cannot be made", "read-only folder", "a directory"],
)
def test_a_csv_path_that_cannot_be_written_exits_2_before_anything_is_read(tmp_path, capsys, where):
    if where.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc")
    fake_run(tmp_path / "0", 0, 0.5, (0.9, 0.8, 0.95))
    (tmp_path / "0" / "report.json").write_text("[]")  # refused too, but --csv comes first
    csv_path = where.format(tmp_path=tmp_path)
    assert main(["report", str(tmp_path), "--csv", csv_path]) == 2
    err = capsys.readouterr().err
    assert f"kd: error: --csv {csv_path}: kd cannot write that file" in err, err
    assert "report.json" not in err


def test_names_and_paths_print_as_written_not_as_rich_markup(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    fake_run(tmp_path / "run[v2]", 0, 0.5, (0.9, 0.8, 0.95))
    report = json.loads((tmp_path / "run[v2]" / "report.json").read_text())
    report["student"]["name"] = "[/b]net"
    (tmp_path / "run[v2]" / "report.json").write_text(json.dumps(report))
    csv_path = tmp_path / "x[/b]" / "r.csv"
    assert main(["report", str(tmp_path / "run[v2]"), "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert "resnet18 -> [/b]net" in out and "run[v2]" in out and f"CSV: {csv_path}" in out


def test_a_plot_path_that_cannot_be_written_exits_2_before_anything_is_read(tmp_path, capsys):
    fake_run(tmp_path / "0", 0, 0.5, (0.9, 0.8, 0.95))
    where = tmp_path / "a-directory"
    where.mkdir()
    assert main(["report", str(tmp_path), "--plot", str(where)]) == 2
    assert f"--plot {where}: kd cannot write that file ({where} is a directory)" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "report.csv").exists()
