"""The run's figures in `<run dir>/plots/` (with matplotlib, `pip install kdcli[plot]`):

- `curves.png`: training loss and training/validation metric per epoch of every stage that
  trained in this run (teacher, distilled student, baseline), from metrics.jsonl;
- `confusion.png`: the distilled student's confusion matrix on the test split;
- `reliability.png`: the reliability diagram (accuracy against confidence, the
  report's 15 bins) of the
  teacher, the student and the baseline on the test split, with each one's ECE.

report.md links them. Without matplotlib the run writes no plots and says so once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kdcli.data.base import IGNORE
from kdcli.pipeline.metrics import read_metrics
from kdcli.store.atomic import atomic_path
from kdcli.tasks.classify import confusion_matrix, expected_calibration_error

log = logging.getLogger(__name__)

BINS = 15  # as the report's ECE (kdcli/tasks/classify.py)


def matplotlib_installed() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


MAX_CONFUSION_CLASSES = 200  # beyond, a confusion matrix is unreadable (and a 50k-token
# vocabulary's would not fit in memory)


def write_plots(
    run_dir: Path,
    logits: dict[str, torch.Tensor],
    labels: torch.Tensor,
    metric: str,
    score_name: str | None = None,
    classes: Sequence[str] = (),
) -> list[str]:
    """Draw the run's figures; their paths relative to `run_dir` (none without matplotlib).
    `metric` is what validation measures, `score_name` what training does when it is another
    (instruction data: the answer tokens' top-1 in training, exact match in validation);
    `classes` name the confusion matrix's rows and columns (labelled texts)."""
    if not matplotlib_installed():
        log.info("plots        none drawn: `pip install kdcli[plot]` adds them")
        return []
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    if labels.dim() > 1:  # token sequences: one row per counted token (answers' alone)
        labels = labels.reshape(-1)
        counted = labels != IGNORE
        labels = labels[counted]
        logits = {
            role: values.reshape(-1, values.shape[-1])[counted] for role, values in logits.items()
        }
    directory = run_dir / "plots"
    directory.mkdir(exist_ok=True)
    drawn = []
    rows = read_metrics(run_dir)
    if rows:
        drawn.append(_curves(directory / "curves.png", rows, metric, score_name or metric))
    if "student" in logits and logits["student"].shape[-1] <= MAX_CONFUSION_CLASSES:
        drawn.append(_confusion(directory / "confusion.png", logits["student"], labels, classes))
    drawn.append(_reliability(directory / "reliability.png", logits, labels))
    return [str(path.relative_to(run_dir)) for path in drawn]


def _curves(path: Path, rows: list[dict[str, Any]], metric: str, score_name: str) -> Path:
    import matplotlib.pyplot as plt

    figure, (loss_axes, metric_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for stage in dict.fromkeys(row["stage"] for row in rows):
        mine = [row for row in rows if row["stage"] == stage]
        epochs = [row["epoch"] for row in mine]
        loss_axes.plot(epochs, [row["loss"] for row in mine], marker="o", label=stage)
        train = "train" if score_name == metric else f"train {score_name}"
        line = metric_axes.plot(
            epochs,
            [row[f"train_{score_name}"] for row in mine],
            marker="o",
            label=f"{stage} {train}",
        )
        if all(f"val_{metric}" in row for row in mine):
            metric_axes.plot(
                epochs,
                [row[f"val_{metric}"] for row in mine],
                linestyle="--",
                color=line[0].get_color(),
                label=f"{stage} validation" + ("" if score_name == metric else f" {metric}"),
            )
    from matplotlib.ticker import MaxNLocator

    loss_axes.set(xlabel="epoch", ylabel="training loss", title="loss")
    shown = metric if score_name == metric else f"{score_name} (train), {metric} (validation)"
    metric_axes.set(xlabel="epoch", ylabel=shown, title=shown)
    for axes in (loss_axes, metric_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    return _save(figure, path)


def _confusion(
    path: Path, logits: torch.Tensor, labels: torch.Tensor, names: Sequence[str] = ()
) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    classes = logits.shape[1]
    counts = confusion_matrix(logits, labels)
    figure, axes = plt.subplots(figsize=(6, 5))
    image = axes.imshow(counts.numpy(), cmap="Blues")
    figure.colorbar(image, ax=axes)
    if classes <= 20:
        for i in range(classes):
            for j in range(classes):
                if counts[i, j]:
                    axes.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7)
    axes.set(xlabel="predicted class", ylabel="true class", title="student: confusion matrix")
    if len(names) == classes:  # labelled texts: the classes' names
        axes.set_xticks(range(classes), list(names), rotation=45, ha="right")
        axes.set_yticks(range(classes), list(names))
    elif classes <= 20:
        axes.set_xticks(range(classes), [str(i) for i in range(classes)])
        axes.set_yticks(range(classes), [str(i) for i in range(classes)])
    else:
        for axis in (axes.xaxis, axes.yaxis):
            axis.set_major_locator(MaxNLocator(integer=True))
    return _save(figure, path)


def reliability_bins(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[list[float], list[float], list[int]]:
    """Per confidence bin: mean confidence, accuracy and count (empty bins left out)."""
    probabilities = logits.float().softmax(1).cpu()
    confidence, predicted = probabilities.max(1)
    correct = (predicted == labels.cpu()).float()
    which = (confidence * BINS).ceil().long().clamp(1, BINS) - 1
    means, accuracies, counts = [], [], []
    for b in range(BINS):
        members = which == b
        if members.any():
            means.append(float(confidence[members].mean()))
            accuracies.append(float(correct[members].mean()))
            counts.append(int(members.sum()))
    return means, accuracies, counts


def _reliability(path: Path, logits: dict[str, torch.Tensor], labels: torch.Tensor) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for role, values in logits.items():
        means, accuracies, _ = reliability_bins(values, labels)
        ece = expected_calibration_error(values.float().cpu(), labels.cpu(), BINS)
        axes.plot(means, accuracies, marker="o", label=f"{role} (ECE {ece:.3f})")
    axes.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
             title="reliability on the test split")  # fmt: skip
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return path
