"""Stage 4, evaluation: every model the run produced, with the task's metrics and its cost."""

from __future__ import annotations

from typing import Any, TypedDict

import torch
from omegaconf import DictConfig

from kdcli.data import Dataset
from kdcli.engine import stats
from kdcli.engine.infer import predict
from kdcli.engine.measure import count_params, cpu_latency_ms, flops_per_image
from kdcli.engine.precision import FP32
from kdcli.pipeline.common import Context, Model, eval_batch_size
from kdcli.tasks import Task, teacher_kl

CPU = torch.device("cpu")

ModelFigures = dict[str, Any]
"""One model's figures (report.json's `teacher`, `student`, ...; `measure` makes them): name,
the task's metrics (e.g. top1, nll, ece), params, flops, latency_ms, checkpoint_bytes,
checkpoint, source, reused, precision; sparsity (compressed); agreement and teacher_kl (all
but the teacher); val_<metric> (a validation split); generation_nll (text)."""


class GainImages(TypedDict):
    """The test items behind the KD gain's p-value."""

    student_only: int  # the student gets right and the baseline wrong
    baseline_only: int
    total: int


class EvaluationSummary(TypedDict, total=False):
    """The run's figures beside each model's (report.json keys): with a baseline, the KD gain's
    95% paired bootstrap interval, exact McNemar p-value and the items behind it; for text,
    the test prompt and each model's continuation of it (`samples`)."""

    kd_gain_ci: list[float]
    kd_gain_p: float
    kd_gain_images: GainImages
    samples: dict[str, str]


def measure(
    model: Model,
    data: Dataset,
    task: Task,
    test_logits: torch.Tensor,
    cfg: DictConfig,
    size_of: ModelFigures | None = None,
) -> ModelFigures:
    """The report's figures for one model. `size_of`: the figures of the model it was
    compressed from, whose parameters and FLOPs it keeps (pruning zeroes weights, int8 narrows
    them; neither removes any); its own share of zero weights is then reported too."""
    figures = {
        "name": model.name,
        **task.metrics(test_logits, data.labels("test")),
        "params": size_of["params"] if size_of else count_params(model.module),
    }
    if model.sparsity is not None:
        figures["sparsity"] = model.sparsity
    return {
        **figures,
        "flops": size_of["flops"] if size_of else flops_per_image(model.module, data.info),
        "latency_ms": cpu_latency_ms(model.module, data.info, runs=cfg.eval.latency_runs),
        "checkpoint_bytes": model.checkpoint.stat().st_size,
        "checkpoint": str(model.checkpoint),
        "source": model.source,
        "reused": model.source in ("cache", "checkpoint"),
        "precision": model.precision.describe(),  # its forward passes' in training (and
        # the teacher's soft labels); evaluation itself runs in fp32
    }


def eval_splits(data: Dataset) -> list[str]:
    """The splits every model is evaluated on: test, and validation when there is one."""
    return ["test", *(["val"] if "val" in data.splits else [])]


def evaluate_stage(
    ctx: Context, models: dict[str, Model], known: dict[str, dict[str, torch.Tensor]] | None = None
) -> tuple[dict[str, ModelFigures], EvaluationSummary, dict[str, torch.Tensor]]:
    """Stage 4: every model's figures on the test split, with agreement with the teacher and
    KL(teacher || model); the run's summary: the KD gain's interval and p-value (student vs
    baseline on the same test images) and, for text, each model's continuation of one test
    prompt (`samples`); and each model's test logits (for the plots).
    `known`: outputs already computed (role -> split -> logits), e.g. the teacher's.

    With a validation split (`dataset.val_fraction > 0`) each model's `val_<metric>` is
    reported too, so sweeps can be compared on validation and the test split kept for the end.
    """
    cfg, data, task, device = ctx.cfg, ctx.data, ctx.task, ctx.device
    logits: dict[str, dict[str, torch.Tensor]] = {}
    for role, m in models.items():
        logits[role] = dict((known or {}).get(role, {}))
        # an int8 model runs on the CPU only
        where, split_data = (CPU, data.to(CPU)) if role == "compressed" else (device, data)
        for split in eval_splits(data):
            if split not in logits[role]:
                loader = split_data.eval_loader(split, eval_batch_size(ctx, m.module, FP32))
                logits[role][split] = predict(m.module, loader, where).to(device)
    results = {
        role: measure(m, data, task, logits[role]["test"], cfg)
        for role, m in models.items()
        if role != "compressed"
    }
    if "compressed" in models:
        results["compressed"] = measure(
            models["compressed"], data, task, logits["compressed"]["test"], cfg, results["student"]
        )
    if "val" in data.splits:
        for role in models:
            metric = task.metrics(logits[role]["val"], data.labels("val"))[task.metric]
            results[role][f"val_{task.metric}"] = metric
    labels = data.labels("test")
    for role in results:
        if role != "teacher":
            test, reference = logits[role]["test"], logits["teacher"]["test"]
            results[role]["agreement"] = task.agreement(test, reference)
            flat, flat_reference, _ = task.flatten(test, reference, labels)
            assert flat_reference is not None  # given the teacher's logits, flatten keeps them
            results[role]["teacher_kl"] = teacher_kl(flat, flat_reference)
    for role in results:  # text: how the teacher judges what each model writes
        if role == "compressed":  # runs on the CPU only; its figures say how it compares
            continue
        judged = task.generation_nll(models[role].module, models["teacher"].module, data, cfg.seed)
        if judged is not None:
            results[role]["generation_nll"] = judged
    summary: EvaluationSummary = {}
    if "baseline" in logits:
        summary = gain_figures(task, logits["student"]["test"], logits["baseline"]["test"], data)
    samples = text_samples(task, models, data, cfg.seed)
    if samples:
        summary["samples"] = samples
    return results, summary, {role: split["test"] for role, split in logits.items()}


def text_samples(
    task: Task, models: dict[str, Model], data: Dataset, seed: int
) -> dict[str, str] | None:
    """The test prompt and each model's continuation of it (text tasks), else None. The
    int8 model runs on the CPU only, so it is left out (its figures say how it compares)."""
    samples: dict[str, str] = {}
    for role, model in models.items():
        if role == "compressed":
            continue
        drawn = task.sample(model.module, data, seed)
        if drawn is None:
            return None
        samples["prompt"], samples[role] = drawn
    return samples


def gain_figures(
    task: Task, student_logits: torch.Tensor, baseline_logits: torch.Tensor, data: Dataset
) -> EvaluationSummary:
    """The KD gain's 95% paired bootstrap interval and exact McNemar p-value (report keys)."""
    labels = data.labels("test")
    student = task.correct(student_logits, labels).cpu().numpy()
    baseline = task.correct(baseline_logits, labels).cpu().numpy()
    gain = stats.compare(student, baseline)
    return {
        "kd_gain_ci": list(gain.ci),
        "kd_gain_p": gain.p,
        "kd_gain_images": {
            "student_only": gain.a_only,
            "baseline_only": gain.b_only,
            "total": gain.n,
        },
    }
