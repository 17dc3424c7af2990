"""`kd train`: the stages, in order. Each is a plain function (kdcli/pipeline/<stage>.py):
config and inputs in, an artifact out. Teacher, soft labels and baseline come from the
artifact cache when an earlier run made them with the same settings."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from kdcli.data import Dataset, InMemoryDataset
from kdcli.data.memory import Split
from kdcli.engine import distributed
from kdcli.engine.loop import KnowledgeSource
from kdcli.errors import RunError
from kdcli.knowledge.align import CrossTokenizerKnowledge
from kdcli.pipeline import report as report_io
from kdcli.pipeline.common import Context, StageReport, draws_plots, made_by
from kdcli.pipeline.compress import compress_stage
from kdcli.pipeline.distill import baseline_stage, student_stage
from kdcli.pipeline.evaluate import eval_splits, evaluate_stage
from kdcli.pipeline.objects import Objects
from kdcli.pipeline.plots import write_plots
from kdcli.pipeline.report import Report, build_report, final_figures, hyperparameters
from kdcli.pipeline.soft_labels import SoftLabelSummary, teacher_knowledge
from kdcli.pipeline.stored_eval import read_stored
from kdcli.pipeline.teacher import check_teacher, teacher_stage
from kdcli.store.cache import ArtifactCache


def run(cfg: DictConfig, run_dir: Path, built: Objects, device: torch.device) -> Report | None:
    """The whole pipeline on the run's objects (kdcli.config.objects `build`: built once,
    checked before any training); returns the report (also written to `run_dir`).

    Under torchrun, every rank trains; rank 0 alone writes, evaluates and returns the report
    (the other ranks return None).

    The cache entries the run reuses or builds stay locked for use until it ends, so that
    `kd cache rm` leaves them (under torchrun rank 0 takes them, and it ends last).
    """
    run_dir = distributed.shared_run_dir(run_dir)
    with ArtifactCache(cfg.cache_dir, made_by(run_dir)) as cache:
        ctx = Context(cfg, built.data, built.task, cache, device, run_dir)
        ctx.teacher_data = built.teacher_data
        try:
            return _stages(ctx, built)
        except BaseException as error:  # e.g. an MLflow run ends FAILED or KILLED, not RUNNING
            if ctx.metrics is not None:
                ctx.metrics.stop(error)
            raise


def training_split(data: Dataset) -> Split:
    """The training split of text data (held in memory)."""
    if not isinstance(data, InMemoryDataset):
        raise RunError(f"dataset {data.info.name}: two tokenizers read text held in memory")
    return data.train


def _stages(ctx: Context, built: Objects) -> Report | None:
    """`run`'s stages, in order, with the run's context."""
    cfg, data, task, device, run_dir = ctx.cfg, ctx.data, ctx.task, ctx.device, ctx.run_dir
    loss_fn = built.loss_fn
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
        ctx.metrics = built.logger(run_dir)

    # the teacher's stages read the data as the teacher reads it (its own tokenizer)
    teacher_ctx = ctx.for_teacher()
    teacher, teacher_time = teacher_stage(teacher_ctx, built.teacher, built.training["teacher"])
    stages: dict[str, StageReport] = {"teacher": teacher_time}
    started = time.perf_counter()
    stored = read_stored(teacher_ctx, teacher, eval_splits(teacher_ctx.data))
    teacher_logits = check_teacher(teacher_ctx, teacher, stored)  # stops below teacher.min_top1
    teacher_eval_seconds = time.perf_counter() - started
    knowledge: KnowledgeSource | None = None
    soft_report: SoftLabelSummary = {"mode": "none", "reused": False}
    if loss_fn.needs_teacher:
        knowledge, soft_report, soft_stage = teacher_knowledge(teacher_ctx, teacher, loss_fn)
        if ctx.teacher_data is not None:  # its rows paired with the student's tokens
            knowledge = CrossTokenizerKnowledge(knowledge, training_split(ctx.teacher_data))
        if soft_stage is not None:
            stages["soft_labels"] = soft_stage
    student, stages["distill"] = student_stage(
        ctx, built.student, built.training["student"], loss_fn, knowledge, teacher
    )
    models = {"teacher": teacher, "student": student}
    if built.compression.active and distributed.is_main():
        models["compressed"], stages["compress"] = compress_stage(
            ctx, built.compression, student, built.training["student"], loss_fn, knowledge
        )
    if cfg.baseline:
        models["baseline"], stages["baseline"] = baseline_stage(
            ctx, built.baseline, built.training["student"]
        )
    if not distributed.is_main():
        return None

    started = time.perf_counter()
    results, summary, test_logits = evaluate_stage(
        ctx, models, {"teacher": teacher_logits}, {"teacher": stored}
    )
    seconds = time.perf_counter() - started + teacher_eval_seconds
    results["teacher"]["evaluation_seconds"] += teacher_eval_seconds
    stages["evaluate"] = StageReport(seconds, None, reused=False)

    plots = []
    if draws_plots(cfg.plots):
        if ctx.teacher_data is not None:  # the teacher's tokens are not the test labels'
            test_logits.pop("teacher")
        plots = write_plots(
            run_dir,
            test_logits,
            data.labels("test"),
            task.metric,
            task.score_name,
            data.info.classes,
        )
    report = build_report(
        cfg, task, data.info, device, results, soft_report, stages, run_dir, summary, plots
    )
    report_io.write(report, run_dir, Console(), task)  # the table goes to stdout
    for state in ctx.finished:  # the run directory now holds what they hold
        state.discard()
    if ctx.metrics is not None:  # rank 0's, as this is
        ctx.metrics.close(hyperparameters(cfg), final_figures(report))
    return report
