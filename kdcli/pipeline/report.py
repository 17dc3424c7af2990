"""The run's report: report.json (its one owner, and its type, `Report`), report.md and the
table on stdout.

Also the report's `warnings`: what in the figures says the distillation did not work.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, TypedDict

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kdcli import __version__
from kdcli.data import DatasetInfo
from kdcli.engine import distributed
from kdcli.pipeline.common import StageReport, config_choice, to_container
from kdcli.pipeline.evaluate import EvaluationSummary, ModelFigures
from kdcli.pipeline.metrics import METRICS_FILE
from kdcli.pipeline.soft_labels import SoftLabelSummary
from kdcli.store.atomic import write_json_atomic, write_text_atomic
from kdcli.tasks import Row, Task
from kdcli.tasks.classify import TASK

Role = Literal["teacher", "student", "compressed", "baseline"]


class _Models(TypedDict):
    teacher: ModelFigures
    student: ModelFigures


class Models(_Models, total=False):
    """Each model's figures by role: the compressed student with `compress=`, the student
    trained without the teacher with `baseline=true`."""

    baseline: ModelFigures
    compressed: ModelFigures


class CompressionRatios(TypedDict):
    """How much smaller and faster the student is than the teacher."""

    params: float
    flops: float
    latency_speedup: float


class _Always(TypedDict):
    """The keys every report.json has (with `Models`' teacher and student)."""

    kdcli_version: str
    run_dir: str
    seed: int
    device: str
    processes: int  # torchrun's
    metric: str  # the headline metric's key in each model's figures
    metric_label: str
    dataset: dict[str, Any]  # kdcli.data.DatasetInfo's fields
    loss: dict[str, Any]  # the loss option's name, then its settings
    soft_labels: SoftLabelSummary
    compression: CompressionRatios
    stages: dict[str, dict[str, Any]]  # stage -> kdcli.pipeline.common.StageReport's fields
    metrics: str  # metrics.jsonl: the per-epoch rows of every stage trained in the run
    plots: list[str]  # paths in the run directory (with matplotlib)


class Report(_Always, Models, EvaluationSummary, total=False):
    """report.json: what `build_report` writes and `kd report` reads. The keys come in this
    order: kdcli_version ... loss, each model's figures (teacher, student, baseline,
    compressed), soft_labels, compression, stages, metrics, plots; then with a baseline
    kd_gain (and kd_gain_perplexity for text), the `EvaluationSummary`, and `warnings` last."""

    kd_gain: float  # student - baseline, in the headline metric
    kd_gain_perplexity: float  # text: baseline - student perplexity
    warnings: list[str]  # what says the distillation did not work (`warnings`)


COLUMNS: tuple[tuple[Role, str], ...] = (
    ("teacher", "teacher"),
    ("student", "student (KD)"),
    ("compressed", "compressed"),
    ("baseline", "baseline (CE)"),
)

# (label, report key, formatter) after the task's rows; a missing value shows as "-"
ROWS: tuple[Row, ...] = (
    ("parameters", "params", lambda v: f"{v / 1e6:.3f} M"),
    ("zero weights", "sparsity", lambda v: f"{100 * v:.1f}%"),
    ("FLOPs / image", "flops", lambda v: f"{v / 1e6:.2f} M"),
    ("CPU latency, batch 1", "latency_ms", lambda v: f"{v:.3f} ms"),
    ("checkpoint size", "checkpoint_bytes", lambda v: f"{v / 2**20:.2f} MiB"),
    ("computed or reused", "reused", lambda v: "reused" if v else "computed"),
    ("evaluation", "evaluation_reused", lambda v: "reused (cache)" if v else "computed"),
    ("precision (training)", "precision", str),
)


def _cells(report: Report, task: Task = TASK) -> tuple[list[str], list[list[str]]]:
    present = [(key, title) for key, title in COLUMNS if key in report]
    header = ["", *(title for _, title in present)]
    rows = []
    for label, field, fmt in (*task.rows(), *ROWS):
        values = [report[key].get(field) for key, _ in present]
        if all(v is None for v in values):  # e.g. validation top-1 without a validation split
            continue
        label = flops_label(report) if field == "flops" else label
        rows.append([label, *("-" if v is None else fmt(v) for v in values)])
    return header, rows


def flops_label(report: Report) -> str:
    """What the FLOPs were counted on: an image, or a text or token window as long as the
    data's (kdcli.data.base.DatasetInfo.example; padding costs what a token costs)."""
    dataset = report.get("dataset", {})
    per = {"text": "window", "labelled_text": "text"}.get(str(dataset.get("modality")))
    if per is None:
        return "FLOPs / image"
    return f"FLOPs / {per} of {dataset.get('image_size')} tokens"


SAMPLE_PREVIEW = 100  # characters of each text sample on the terminal (report.md has them all)
SIGNIFICANCE = 0.05  # a negative gain with McNemar p below this is flagged


def format_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def gain_line(report: Report) -> str:
    """ "KD gain +1.11 pts (95% CI +0.28 to +1.94, p = 0.012): ..." (interval when known)."""
    line = f"KD gain {100 * report['kd_gain']:+.2f} pts"
    metric = report.get("metric_label", TASK.metric_label)
    if "kd_gain_ci" not in report:
        return f"{line}: student - baseline {metric}"
    low, high = report["kd_gain_ci"]
    images = report["kd_gain_images"]
    modality = report.get("dataset", {}).get("modality")
    items = {"text": "tokens", "labelled_text": "texts"}.get(str(modality), "images")
    right = "gets {} right"
    if "answers" in report:  # paired by prompt; ROUGE-L scores are not right or wrong
        items = "prompts"
        right = "gets {} right" if report.get("metric") == "exact_match" else "scores higher on {}"
    return (
        f"{line} (95% CI {100 * low:+.2f} to {100 * high:+.2f}, {format_p(report['kd_gain_p'])}): "
        f"student - baseline {metric} on {images['total']} test {items}; "
        f"the student alone {right.format(images['student_only'])}, "
        f"the baseline alone {images['baseline_only']}"
    )


def warnings(report: Report) -> list[str]:
    """What says the teacher could not teach: a teacher below the baseline student (on the
    validation split when there is one, else test), or a student significantly worse than its
    baseline (negative gain with exact McNemar p < 0.05)."""
    found = []
    teacher, baseline = report["teacher"], report.get("baseline")
    metric, label = report.get("metric", TASK.metric), report.get("metric_label", TASK.metric_label)
    key = f"val_{metric}" if teacher.get(f"val_{metric}") is not None else metric
    split = "validation" if key.startswith("val_") else "test"
    if baseline is not None and teacher[key] < baseline[key]:
        found.append(
            f"teacher weaker than the student alone: the teacher ({teacher['name']}) reaches "
            f"{100 * teacher[key]:.2f}% {label} on the {split} split, the student "
            f"trained without it ({baseline['name']}) {100 * baseline[key]:.2f}%; train the "
            "teacher longer or with another recipe (teacher.min_top1 stops such runs before "
            "distilling)."
        )
    p, gain = report.get("kd_gain_p"), report.get("kd_gain")
    if p is not None and gain is not None and gain < 0 and p < SIGNIFICANCE:
        on_policy = ", loss.lmbda" if report.get("soft_labels", {}).get("on_policy") else ""
        found.append(
            f"distillation made the student worse: {100 * gain:+.2f} points against its "
            f"baseline ({format_p(p)}, McNemar); check the teacher's accuracy and the loss "
            f"settings (loss.alpha, loss.temperature{on_policy})."
        )
    return found


def summary_lines(report: Report) -> list[str]:
    """KD gain and compression, one line each."""
    lines = []
    if "kd_gain" in report:
        lines.append(gain_line(report))
    if "kd_gain_perplexity" in report:
        ppl = {role: report[role]["perplexity"] for role in ("teacher", "student", "baseline")}
        lines.append(
            f"perplexity: teacher {ppl['teacher']:.3f}, student {ppl['student']:.3f}, "
            f"baseline {ppl['baseline']:.3f} (distillation lowers it by "
            f"{report['kd_gain_perplexity']:.3f}; lower is better)"
        )
    c = report["compression"]
    lines.append(
        f"compression: {c['params']:.1f}x fewer parameters, {c['flops']:.1f}x fewer FLOPs, "
        f"{c['latency_speedup']:.1f}x faster on CPU at batch 1"
    )
    return lines


def table(report: Report, task: Task = TASK) -> Table:
    header, rows = _cells(report, task)
    result = Table(  # Text: names (an ImageFolder's is its folder's) are not markup
        title=Text(
            f"kd report: {report['teacher']['name']} -> {report['student']['name']} "
            f"on {report['dataset']['name']}, loss={report['loss']['name']}"
        )
    )
    for i, name in enumerate(header):
        result.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        result.add_row(*row)
    return result


def markdown(report: Report, task: Task = TASK) -> str:
    header, rows = _cells(report, task)
    lines = [
        f"# kd report: {report['teacher']['name']} -> {report['student']['name']}",
        "",
        f"dataset `{report['dataset']['name']}`, loss `{report['loss']['name']}`, "
        f"seed {report['seed']}, device `{report['device']}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        *(f"- {line}" for line in summary_lines(report)),
        "",
    ]
    if report.get("warnings"):
        lines += ["## Warnings", "", *(f"- {text}" for text in report["warnings"]), ""]
    if report.get("samples"):
        lines += sample_lines(report["samples"])
    if report.get("answers"):
        lines += answer_lines(report["answers"])
    if report.get("plots"):
        lines += ["## Plots", "", *(f"![{Path(p).stem}]({p})" for p in report["plots"]), ""]
    lines += [f"Per-epoch metrics: [{METRICS_FILE}]({METRICS_FILE})", ""]
    return "\n".join(lines)


def sample_lines(samples: dict[str, str]) -> list[str]:
    """report.md's Samples section: the prompt, then each model's continuation of it."""
    lines = ["## Samples", "", "Each model continues the same test prompt (seeded sampling).", ""]
    for name in ("prompt", "teacher", "student", "baseline"):
        if name in samples:
            lines += [f"**{name}**", "", "```text", samples[name], "```", ""]
    return lines


def answer_lines(answers: list[dict[str, str]]) -> list[str]:
    """report.md's Answers section: held-out prompts with the reference and each model's
    greedy answer, side by side."""
    roles = [r for r in ("reference", "teacher", "student", "baseline") if r in answers[0]]
    lines = ["## Answers", "", "Held-out prompts, answered greedily by each model.", ""]
    lines += ["| prompt | " + " | ".join(roles) + " |", "|---" * (len(roles) + 1) + "|"]
    for row in answers:
        cells = [row["prompt"], *(row[r] for r in roles)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return [*lines, ""]


def _cell(text: str) -> str:
    """Text in a markdown table cell: its pipes escaped, its lines joined."""
    return " ".join(text.split()).replace("|", "\\|")[:200] or " "


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The settings a logger records beside the final figures (TensorBoard's hparams)."""
    loss = {
        f"loss.{k}": v for k, v in to_container(cfg.loss).items() if not isinstance(v, dict | list)
    }
    return {
        "teacher": cfg.teacher.name,
        "student": cfg.student.name,
        "loss": config_choice("loss", cfg.loss),
        **loss,
        "seed": cfg.seed,
        "teacher.epochs": cfg.teacher.epochs,
        "student.epochs": cfg.student.epochs,
        "precision": cfg.precision,
    }


def final_figures(report: Report) -> dict[str, float]:
    """Each model's headline metric, and the KD gain."""
    metric = report["metric"]
    figures = {f"{role}_{metric}": report[role][metric]
               for role in ("teacher", "student", "baseline") if role in report}  # fmt: skip
    if "kd_gain" in report:
        figures["kd_gain"] = report["kd_gain"]
    return figures


def write(report: Report, run_dir: Path, console: Console, task: Task = TASK) -> None:
    """Print the table and write report.json and report.md into `run_dir`."""
    write_json_atomic(run_dir / "report.json", report)
    write_text_atomic(run_dir / "report.md", markdown(report, task))
    console.print(table(report, task))
    for line in summary_lines(report):
        console.print(line)
    for name, text in (report.get("samples") or {}).items():
        preview = " ".join(text.split())[:SAMPLE_PREVIEW]
        console.print(Text(f"{name:>9}: {preview}"))  # Text: the sample is not markup
    for text in report.get("warnings", []):
        console.print(Text(f"warning: {text}", style="bold yellow"))


def build_report(
    cfg: DictConfig,
    task: Task,
    info: DatasetInfo,
    device: torch.device,
    results: dict[str, ModelFigures],
    soft_labels: SoftLabelSummary,
    stages: dict[str, StageReport],
    run_dir: Path,
    summary: EvaluationSummary | None = None,
    plots: list[str] | None = None,
) -> Report:
    """report.json's contents (its one owner); `summary`: the KD gain's interval and p-value,
    and the text samples (kdcli.pipeline.evaluate)."""
    teacher, student = results["teacher"], results["student"]
    report: Report = {
        "kdcli_version": __version__,
        "run_dir": str(run_dir),
        "seed": cfg.seed,
        "device": str(device),
        "processes": distributed.world_size(),
        "metric": task.metric,  # the headline metric's key in each model's figures
        "metric_label": task.metric_label,
        "dataset": asdict(info),
        "loss": {
            "name": config_choice("loss", cfg.loss),
            **{k: v for k, v in to_container(cfg.loss).items() if k != "_target_"},
        },
        **by_role(results),
        "soft_labels": soft_labels,
        "compression": {
            "params": teacher["params"] / student["params"],
            "flops": teacher["flops"] / max(student["flops"], 1),
            "latency_speedup": teacher["latency_ms"] / student["latency_ms"],
        },
        "stages": {name: asdict(stage) for name, stage in stages.items()},
        "metrics": METRICS_FILE,  # per-epoch rows of every stage trained in this run
        "plots": plots or [],  # paths in the run directory (with matplotlib)
    }
    if "baseline" in results:
        report["kd_gain"] = student[task.metric] - results["baseline"][task.metric]
        if "perplexity" in student:  # text: the gain in the LM's own measure, baseline - student
            report["kd_gain_perplexity"] = results["baseline"]["perplexity"] - student["perplexity"]
    report.update(summary or {})
    report["warnings"] = warnings(report)
    return report


def by_role(results: dict[str, ModelFigures]) -> Models:
    """The models' figures (role -> figures, from kdcli.pipeline.evaluate) as the report holds
    them, in evaluate_stage's order."""
    models: Models = {"teacher": results["teacher"], "student": results["student"]}
    if "baseline" in results:
        models["baseline"] = results["baseline"]
    if "compressed" in results:
        models["compressed"] = results["compressed"]
    return models
