"""Per-epoch metrics (kdcli/pipeline/metrics.py), the loop's rows (engine/loop.py's on_epoch),
the run's plots (kdcli/pipeline/plots.py), and `logger=` end to end."""

import csv
import json

import pytest
import torch
from omegaconf import OmegaConf

from kdcli.config.build import training_recipe
from kdcli.data.digits import Digits
from kdcli.engine.loop import Job, Recipe, Trainee, fit
from kdcli.losses import CrossEntropy, SoftTargetKD
from kdcli.losses.combo import WeightedSum
from kdcli.models.mlp import MLP
from kdcli.pipeline import plots
from kdcli.pipeline.metrics import CsvLog, JsonlLog, TensorBoardLog, read_metrics
from kdcli.pipeline.plots import reliability_bins, write_plots
from kdcli.tasks.classify import TASK, expected_calibration_error

ROW = {"stage": "teacher", "epoch": 1, "step": 22, "loss": 1.5, "train_top1": 0.5, "lr": 0.1}


def recipe(epochs: int) -> Recipe:
    stage = OmegaConf.create(
        {
            "epochs": epochs,
            "batch_size": 64,
            "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05},
            "scheduler": {
                "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
                "_partial_": True,
                "T_max": epochs,
            },
        }
    )
    return training_recipe(stage, "student")


class FixedTeacher:
    def __call__(self, epoch, batch):
        from kdcli.engine.loop import TeacherOutputs

        return TeacherOutputs(torch.nn.functional.one_hot(batch.y, 10).float() * 5)


def test_the_loop_gives_one_row_per_epoch_with_a_combo_losss_terms():
    data = Digits().load()
    rows = []
    loss = WeightedSum(
        {
            "kd": {"weight": 1.0, "loss": SoftTargetKD()},
            "ce": {"weight": 0.5, "loss": CrossEntropy()},
        }
    )
    torch.manual_seed(0)
    trainee = Trainee(MLP(10, 1, 8, hidden=[32]), data.train_loader(64, 0), loss)
    job = Job("student", TASK, torch.device("cpu"), on_epoch=rows.append)
    fit(trainee, recipe(2), job, FixedTeacher())
    assert [r["epoch"] for r in rows] == [1, 2] and [r["step"] for r in rows] == [22, 44]
    for row in rows:
        assert row["loss"] == pytest.approx(row["loss_kd"] + 0.5 * row["loss_ce"], rel=1e-4)
        assert 0 <= row["train_top1"] <= 1 and row["images_per_s"] > 0 and row["seconds"] > 0
    assert rows[0]["lr"] > rows[1]["lr"], "the cosine schedule's rate as each epoch ends"


def test_jsonl_and_csv_logs_hold_every_row_and_a_torn_line_is_skipped(tmp_path):
    log = CsvLog(tmp_path)
    log.row(ROW)
    log.row({**ROW, "epoch": 2, "val_top1": float("nan")})
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"stage": "stud')  # a line cut short by kill -9
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["val_top1"] is None
    with open(tmp_path / "metrics.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["epoch"] for r in table] == ["1", "2"] and table[0]["val_top1"] == ""
    JsonlLog(tmp_path).close({}, {})


def test_tensorboard_log_writes_scalars_and_hyperparameters(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = TensorBoardLog(tmp_path)
    log.row(ROW)
    log.row({**ROW, "epoch": 2, "step": 44, "loss": 1.0})
    log.close({"loss": "kd", "seed": 0}, {"student_top1": 0.9})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("teacher/loss")]
    assert losses == [(22, 1.5), (44, 1.0)]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["loss"] == 1.5


def test_reliability_bins_agree_with_the_reports_ece():
    torch.manual_seed(0)
    logits, labels = torch.randn(500, 10) * 3, torch.randint(0, 10, (500,))
    means, accuracies, counts = reliability_bins(logits, labels)
    assert sum(counts) == 500
    ece = sum(c * abs(a - m) for m, a, c in zip(means, accuracies, counts, strict=True)) / 500
    assert ece == pytest.approx(expected_calibration_error(logits, labels), abs=1e-5)


def test_plots_are_drawn_from_the_rows_and_the_test_logits(tmp_path):
    pytest.importorskip("matplotlib")
    log = JsonlLog(tmp_path)
    for stage in ("teacher", "student"):
        for epoch in (1, 2):
            log.row({**ROW, "stage": stage, "epoch": epoch, "val_top1": 0.4})
    logits = {"teacher": torch.randn(50, 10), "student": torch.randn(50, 10)}
    drawn = write_plots(tmp_path, logits, torch.randint(0, 10, (50,)), "top1")
    assert drawn == ["plots/curves.png", "plots/confusion.png", "plots/reliability.png"]
    assert all((tmp_path / p).stat().st_size > 1000 for p in drawn)


@pytest.mark.parametrize(
    ("classes", "ticks"), [(("mixed", "negative", "positive"), ["mixed", "negative", "positive"]),
                           ((), ["0", "1", "2"])],
)  # fmt: skip
def test_the_confusion_matrix_names_the_classes_or_numbers_them(
    tmp_path, monkeypatch, classes, ticks
):
    """Labelled texts name their classes; otherwise whole class numbers, not 0.5 steps."""
    pytest.importorskip("matplotlib")
    drawn = {}

    def keep(figure, path):
        axes = figure.axes[0]
        figure.canvas.draw()
        drawn[path.name] = [[t.get_text() for t in axis.get_ticklabels() if t.get_text()]
                            for axis in (axes.xaxis, axes.yaxis)]  # fmt: skip
        return path

    monkeypatch.setattr(plots, "_save", keep)
    logits = {"student": torch.randn(30, 3)}
    write_plots(tmp_path, logits, torch.randint(0, 3, (30,)), "top1", classes=classes)
    x_ticks, y_ticks = drawn["confusion.png"]
    assert x_ticks == y_ticks
    assert x_ticks == ticks


def test_curves_plot_a_training_score_that_is_not_the_validation_metric(tmp_path):
    """Instruction data: top-1 of the answer tokens in training, exact match in validation."""
    pytest.importorskip("matplotlib")
    log = JsonlLog(tmp_path)
    for epoch in (1, 2):
        log.row({**ROW, "epoch": epoch, "val_exact_match": 0.3})
    logits = {"student": torch.randn(4, 7, 12)}
    labels = torch.randint(0, 12, (4, 7))
    labels[:, :3] = -100  # the prompts' positions, which nothing counts
    drawn = write_plots(tmp_path, logits, labels, "exact_match", "top1")
    assert drawn == ["plots/curves.png", "plots/confusion.png", "plots/reliability.png"]
    with pytest.raises(KeyError):  # the training rows have no train_exact_match
        write_plots(tmp_path, logits, labels, "exact_match")


def test_logger_csv_end_to_end_with_a_validation_split(kd, tiny):
    result = kd("train", *tiny, "logger=csv", "dataset.val_fraction=0.1", "baseline=false")
    assert result.returncode == 0, result.stderr
    run_dir = result.runs()[0]
    with open(run_dir / "metrics.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["stage"] for r in table] == ["teacher", "student"]
    assert all(0 <= float(r["val_top1"]) <= 1 for r in table)
