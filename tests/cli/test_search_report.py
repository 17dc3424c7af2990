"""`kd report SWEEP_DIR` on an Optuna search: fabricated sweep directories (search.json and each
complete trial's report.json, shaped as kd train writes them), and one real run read as a
trial."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from kd_command import ONE_THREAD, REPO, run_kd
from kd_settings import TINY

from kdcli.cli.main import main

PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("optuna", "matplotlib")),
    reason="kdcli[search] absent",
)
SPACE = {
    "loss.alpha": {"kind": "float", "low": 0.1, "high": 0.9, "log": False, "step": None},
    "student.epochs": {"kind": "int", "low": 1, "high": 8, "log": False, "step": 1},
    "loss": {"kind": "categorical", "choices": ["kd", "dkd"]},
}
# number -> (state, alpha, epochs, loss, validation top-1, test top-1); trial 4 has the best
# test figure, which must not be shown: the search chose trial 1 on validation
TRIALS = {
    0: ("complete", 0.2, 2, "kd", 0.90, 0.88),
    1: ("complete", 0.5, 4, "dkd", 0.95, 0.91),
    2: ("pruned", 0.8, 3, "kd", None, None),
    3: ("failed", 0.3, 5, "dkd", None, None),
    4: ("complete", 0.7, 6, "kd", 0.93, 0.97),
    5: ("running", 0.4, 7, "kd", None, None),
}
BASELINE = 0.88


def fake_report(run: Path, val: float, test: float, baseline: bool = True) -> None:
    """A complete trial's report.json, with the keys kd train writes that kd report reads."""
    run.mkdir(parents=True, exist_ok=True)
    model = {"params": 2410, "checkpoint_bytes": 12317, "ece": 0.05, "nll": 0.3}
    report: dict[str, Any] = {
        "seed": 0,
        "metric": "top1",
        "metric_label": "top-1",
        "teacher": {**model, "name": "smallcnn", "top1": 0.98, "val_top1": 0.97},
        "student": {**model, "name": "mlp", "top1": test, "val_top1": val},
        "stages": {"distill": {"seconds": 1.0}},
        "warnings": [],
    }
    if baseline:
        gain = test - BASELINE
        report["baseline"] = {**model, "name": "mlp", "top1": BASELINE, "val_top1": 0.87}
        report |= {"kd_gain": gain, "kd_gain_ci": [gain - 0.01, gain + 0.01], "kd_gain_p": 0.04}
    (run / "report.json").write_text(json.dumps(report))


def search_json(trials: dict[int, tuple], best: int | None = 1, n_trials: int = 8) -> dict:
    entries = []
    for number, (state, alpha, epochs, loss, val, _) in trials.items():
        steps = {str(e): 0.5 + e / 100 for e in range(1, (epochs if state != "pruned" else 2) + 1)}
        entries.append(
            {
                "number": number,
                "state": state,
                "params": {"loss.alpha": alpha, "student.epochs": epochs, "loss": loss},
                "value": val,
                "run_dir": str(number),
                "intermediate": steps,
            }
        )
        if state == "failed":
            entries[-1]["reason"] = f"the loss is not finite (nan) at epoch {epochs}"
    return {
        "kind": "kdcli search",
        "version": 1,
        "study": "kd-search",
        "direction": "maximize",
        "objective": "val_top1",
        "n_trials": n_trials,
        "space": SPACE,
        "trials": entries,
        "best": best,
    }


def make_search(folder: Path, trials: dict[int, tuple] = TRIALS, **kw: Any) -> Path:
    """A sweep directory as a search leaves it: search.json, a report.json per complete trial."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, (state, *_, val, test) in trials.items():
        (folder / str(number)).mkdir(exist_ok=True)
        if state == "complete":
            fake_report(folder / str(number), val, test)
    (folder / "search.json").write_text(json.dumps(search_json(trials, **kw)))
    return folder


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def sweep(tmp_path) -> Path:
    return make_search(tmp_path / "sweep")


def test_a_trial_run_again_after_a_kill_is_named(sweep, capsys):
    path = sweep / "search.json"
    search = json.loads(path.read_text())
    search["trials"][-1]["retry_of"] = 9  # its values were those of trial 9, killed
    path.write_text(json.dumps(search))
    assert main(["report", str(sweep)]) == 0
    last = search["trials"][-1]["number"]
    out = capsys.readouterr().out
    assert f"1 stopped by a kill or bad input and run again (9 -> {last})" in out


def test_the_best_trial_is_named_with_its_test_figure_once(sweep, capsys):
    assert main(["report", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "8 trial(s) asked, 5 ran: 3 complete, 1 pruned, 1 failed; 1 running" in out
    assert "trial 3 failed: the loss is not finite (nan) at epoch 5" in out
    assert "★ best trial: 1, validation top-1 95.00%: loss.alpha=0.5" in out
    assert f"  its run directory: {sweep / '1'}\n" in out
    assert out.count("91.00") == 1, "the best trial's test figure, once"
    test = "Test top-1 of trial 1: 91.00% (baseline 88.00%); KD gain +3.00 points, "
    assert test + "95% CI +2.00 to +4.00" in out
    assert "97.00" not in out and "88.00%" in out, "other trials' test figures are not shown"
    assert "other trials' test figures are not shown" in out
    assert "validation top-1 %" in out and "95.00" in out and "93.00" in out


def test_the_csv_holds_one_row_per_trial_best_first(sweep):
    assert main(["report", str(sweep)]) == 0
    rows = read_csv(sweep / "report.csv")
    assert list(rows[0]) == [
        "trial",
        "run",
        "state",
        "loss.alpha",
        "student.epochs",
        "loss",
        "val_top1",
        "epochs_reported",
        "best",
    ]
    assert [r["trial"] for r in rows] == ["1", "4", "0", "2", "3", "5"], "unscored last"
    assert [r["best"] for r in rows] == ["True"] + ["False"] * 5
    assert [r["state"] for r in rows[3:]] == ["pruned", "failed", "running"]
    assert rows[0]["val_top1"] == "0.95" and rows[3]["val_top1"] == ""
    assert (rows[0]["loss.alpha"], rows[0]["student.epochs"], rows[0]["loss"]) == (
        "0.5",
        "4",
        "dkd",
    )
    assert rows[3]["epochs_reported"] == "2", "pruned after 2 epochs"


def test_sort_and_desc_apply_to_the_trial_rows(sweep, tmp_path):
    out = tmp_path / "r.csv"
    assert main(["report", str(sweep), "--sort", "trial", "--csv", str(out)]) == 0
    assert [r["trial"] for r in read_csv(out)] == ["0", "1", "2", "3", "4", "5"]
    assert main(["report", str(sweep), "--sort", "loss.alpha", "--desc", "--csv", str(out)]) == 0
    assert [r["loss.alpha"] for r in read_csv(out)] == ["0.8", "0.7", "0.5", "0.4", "0.3", "0.2"]


@PLOTS
def test_history_and_importance_are_drawn_beside_the_csv(sweep, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "r.csv"
    assert main(["report", str(sweep), "--csv", str(out)]) == 0
    shown = capsys.readouterr().out
    for name in ("search_history.png", "search_importance.png"):
        assert (out.parent / name).read_bytes()[:8] == PNG
        assert f"plot: {out.parent / name}" in shown
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == [], "figures are closed"


@PLOTS
def test_one_complete_trial_draws_the_history_but_not_the_importances(tmp_path, capsys):
    sweep = make_search(tmp_path / "s", {0: TRIALS[1], 1: TRIALS[2]}, best=0)
    assert main(["report", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert (sweep / "search_history.png").read_bytes()[:8] == PNG
    assert not (sweep / "search_importance.png").exists()
    assert "needs at least 2 complete trials" in out


@PLOTS
def test_optunas_warnings_stay_out_of_the_output(tmp_path):
    """Identical trials: Optuna warns that the importances are all equal; kd report draws
    the plot and keeps the warning (and the plots' "experimental" notes) to itself."""
    same = {n: ("complete", 0.5, 4, "kd", 0.9, 0.9) for n in range(3)}
    sweep = make_search(tmp_path / "s", same, best=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["report", str(sweep)]) == 0
    assert [str(w.message) for w in caught] == []
    assert (sweep / "search_importance.png").read_bytes()[:8] == PNG


@PLOTS
def test_a_parameter_name_that_looks_like_math_is_drawn_as_written(sweep):
    search = json.loads((sweep / "search.json").read_text())
    search["space"] = {"$\\frac{x$": search["space"]["loss.alpha"]}
    for trial in search["trials"]:
        trial["params"] = {"$\\frac{x$": trial["params"]["loss.alpha"]}
    (sweep / "search.json").write_text(json.dumps(search))
    assert main(["report", str(sweep)]) == 0
    assert (sweep / "search_importance.png").read_bytes()[:8] == PNG


def test_without_matplotlib_the_line_names_its_extra(sweep, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(sweep)]) == 0
    assert "plots: not drawn, matplotlib is not installed (`pip install kdcli[plot]`)" in (
        capsys.readouterr().out
    )


def test_many_failures_show_the_first_three_reasons(tmp_path, capsys):
    trials = {n: ("failed", 0.3, 5, "dkd", None, None) for n in range(5)}
    assert main(["report", str(make_search(tmp_path / "s", trials, best=None))]) == 0
    out = capsys.readouterr().out
    assert [f"trial {n} failed" in out for n in range(5)] == [True] * 3 + [False] * 2
    assert "... and 2 more (search.json has each reason)" in out


def test_without_optuna_one_line_names_the_extra(sweep, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(["report", str(sweep)]) == 0
    assert "pip install kdcli[search]" in capsys.readouterr().out
    assert (sweep / "report.csv").exists() and not (sweep / "search_history.png").exists()
    (sweep / "report.csv").unlink()
    assert main(["report", str(sweep), "--plot"]) == 2, "asked for, the plots are required"
    assert "pip install kdcli[search]" in capsys.readouterr().err
    assert not (sweep / "report.csv").exists()


def test_a_missing_value_is_read_from_the_trials_report(tmp_path, capsys):
    sweep = make_search(tmp_path / "s")
    search = json.loads((sweep / "search.json").read_text())
    search["trials"][0]["value"] = None  # trial 0: its report says val_top1 0.90
    search["best"] = None  # the best is then the highest validation figure: trial 1
    (sweep / "search.json").write_text(json.dumps(search))
    assert main(["report", str(sweep)]) == 0
    assert "★ best trial: 1," in capsys.readouterr().out
    rows = read_csv(sweep / "report.csv")
    assert [(r["trial"], r["val_top1"]) for r in rows[:3]] == [
        ("1", "0.95"),
        ("4", "0.93"),
        ("0", "0.9"),
    ]


def test_a_best_trial_without_a_baseline_says_there_is_no_gain(sweep, capsys):
    fake_report(sweep / "1", 0.95, 0.91, baseline=False)
    assert main(["report", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "Test top-1 of trial 1: 91.00%; no KD gain: the trial ran without a baseline" in out


def test_a_search_with_no_complete_trial_has_no_best(tmp_path, capsys):
    sweep = make_search(tmp_path / "s", {0: TRIALS[2], 1: TRIALS[3]}, best=None)
    assert main(["report", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "0 complete, 1 pruned, 1 failed" in out and "No trial has completed" in out


def test_search_json_given_as_a_file_writes_the_csv_beside_it(sweep):
    assert main(["report", str(sweep / "search.json")]) == 0
    assert len(read_csv(sweep / "report.csv")) == 6


def test_a_folder_without_search_json_is_a_grid_sweep(tmp_path, capsys):
    for number in (0, 1):
        fake_report(tmp_path / str(number), 0.9, 0.9 - number / 100)
    assert main(["report", str(tmp_path), "--per-run"]) == 0
    out = capsys.readouterr().out
    assert "kd report: 2 run(s), smallcnn -> mlp" in out and "best trial" not in out
    assert [r["run"] for r in read_csv(tmp_path / "report.csv")] == ["0", "1"]


# ---- search.json of the wrong shape ------------------------------------------------------------


BAD = [
    ("[]", "the file is [], not an object"),
    ("{", "could not be read as JSON"),
    ({"kind": "other"}, 'kind is "other", not "kdcli search"'),
    ({"version": 2}, "version is 2, not 1 (a newer kdcli wrote it"),
    ({"direction": "up"}, 'direction is "up", not "maximize" or "minimize"'),
    ({"objective": None}, "objective is null, not text"),
    ({"n_trials": "30"}, 'n_trials is "30", not a whole number'),
    ({"space": []}, "space is [], not an object"),
    ({"space": {"a": {"kind": "normal"}}}, 'space.a.kind is "normal", not "float", "int"'),
    ({"space": {"a": {"kind": "float", "low": 2, "high": 1}}}, "space.a.high is 1, not at least"),
    ({"space": {"a": {"kind": "float", "low": 0, "high": 1, "log": True}}}, "space.a.log is true"),
    ({"space": {"a": {"kind": "categorical", "choices": []}}}, "space.a.choices is []"),
    ({"trials": {}}, "trials is {}, not a list"),
    ({"best": 2}, "best is 2, not the number of a complete trial"),
    ({"best": 1.5}, "best is 1.5, not a whole number"),
]
TRIAL_BAD = [
    ("state", "done", 'trials[0].state is "done", not "complete" or "pruned"'),
    ("state", None, "trials[0].state is null, not text"),
    ("number", "0", 'trials[0].number is "0", not a whole number'),
    ("value", "high", 'trials[0].value is "high", not a finite number'),
    ("run_dir", "../../etc", 'trials[0].run_dir is "../../etc", not a directory inside'),
    ("run_dir", "/etc", 'trials[0].run_dir is "/etc", not a directory inside'),
    ("run_dir", "x" * 300, 'trials[0].run_dir is "xxx'),
    ("run_dir", "", 'trials[0].run_dir is "", not a directory inside'),
    ("params", [], "trials[0].params is [], not an object"),
    ("params", {"loss.beta": 1.0}, "trials[0].params.loss.beta is 1.0, not a key of the space"),
    ("params", {"loss.alpha": 2.0}, "trials[0].params.loss.alpha is 2.0, not a value from 0.1"),
    ("params", {"student.epochs": 2.5}, "student.epochs is 2.5, not a whole number"),
    ("params", {"loss": "ce"}, 'trials[0].params.loss is "ce", not one of ["kd", "dkd"]'),
    ("intermediate", {"x": 1}, "trials[0].intermediate.x is 1, not epoch -> a finite number"),
    ("intermediate", {"\u00b2": 1}, "not epoch -> a finite number"),  # isdigit() yet not int()
    ("intermediate", {"9" * 5000: 1}, "not epoch -> a finite number"),  # past int()'s limit
    ("reason", 3, "trials[0].reason is 3, not text"),
    ("retry_of", "3", 'trials[0].retry_of is "3", not a whole number'),
]


@pytest.mark.parametrize(
    ("change", "expected"),
    [*BAD, *(({"trials": (key, value)}, message) for key, value, message in TRIAL_BAD)],
)
def test_a_search_json_of_the_wrong_shape_exits_2_naming_it(sweep, capsys, change, expected):
    path = sweep / "search.json"
    if isinstance(change, str):
        path.write_text(change)
    else:
        search = json.loads(path.read_text())
        for key, value in change.items():
            if key == "trials" and isinstance(value, tuple):
                search["trials"][0][value[0]] = value[1]
            else:
                search[key] = value
        path.write_text(json.dumps(search))
    assert main(["report", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert f"kd: error: {path}" in err and expected in err, err
    assert not (sweep / "report.csv").exists()


@pytest.mark.parametrize(("key", "expected"), [("state", "state is missing (text)")])
def test_a_missing_key_is_named(sweep, capsys, key, expected):
    search = json.loads((sweep / "search.json").read_text())
    del search["trials"][2][key]
    (sweep / "search.json").write_text(json.dumps(search))
    assert main(["report", str(sweep)]) == 2
    assert f"trials[2].{expected}" in capsys.readouterr().err


def test_a_trials_report_of_the_wrong_shape_exits_2_naming_it(sweep, capsys):
    path = sweep / "4" / "report.json"
    report = json.loads(path.read_text())
    report["student"]["val_top1"] = "high"
    path.write_text(json.dumps(report))
    search = json.loads((sweep / "search.json").read_text())
    search["trials"][4]["value"] = None  # so the figure is read from the report
    (sweep / "search.json").write_text(json.dumps(search))
    assert main(["report", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert f'kd: error: {path.resolve()}: student.val_top1 is "high"' in err, err


def test_a_large_search_json_is_refused(sweep, capsys):
    path = sweep / "search.json"
    path.write_text(" " * (16 * 2**20 + 1))
    assert main(["report", str(sweep)]) == 2
    assert f"{path} could not be read as JSON (it is larger than 16 MB)" in capsys.readouterr().err


# ---- the real command ----------------------------------------------------------------------------


# kdcli/cli/__init__.py imports the whole `kd` command (main.py); this runs the search report's
# own modules (and optuna's plots) without it, then checks that nothing imported torch.
NO_TORCH = """
import sys, types, kdcli
from pathlib import Path
cli = types.ModuleType("kdcli.cli")
cli.__path__ = [kdcli.__path__[0] + "/cli"]
sys.modules["kdcli.cli"] = cli
from kdcli.cli.search_report import show_search
folder = Path(sys.argv[1])
assert show_search(folder / "search.json", csv_path=folder / "report.csv") == 0
assert "torch" not in sys.modules, "torch was imported"
"""


def test_kd_report_on_a_search_imports_no_torch(sweep):
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(sweep)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "★ best trial: 1" in done.stdout and (sweep / "search_importance.png").exists()


def test_a_real_runs_report_is_read_as_a_trial(tmp_path, kd):
    """One real run (with a validation split) as trial 0 of a search whose file leaves its
    value out: the validation figure and the test figure come from kd train's report.json."""
    sweep = tmp_path / "sweep"
    args = [*TINY, "dataset.val_fraction=0.2", f"hydra.run.dir={sweep / '0'}"]
    done = run_kd("train", *args, cwd=tmp_path, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    report = json.loads((sweep / "0" / "report.json").read_text())
    trials = {0: ("complete", 0.5, 1, "kd", None, None), 1: TRIALS[2]}
    (sweep / "search.json").write_text(json.dumps(search_json(trials, best=None)))
    shown = kd("report", str(sweep))
    assert shown.returncode == 0, shown.stderr
    val, test = report["student"]["val_top1"], report["student"]["top1"]
    assert f"★ best trial: 0, validation top-1 {100 * val:.2f}%" in shown.stdout
    assert f"Test top-1 of trial 0: {100 * test:.2f}%" in shown.stdout
    low, high = report["kd_gain_ci"]
    assert f"95% CI {100 * low:+.2f} to {100 * high:+.2f}" in shown.stdout
    [row, _] = read_csv(sweep / "report.csv")
    assert float(row["val_top1"]) == val
