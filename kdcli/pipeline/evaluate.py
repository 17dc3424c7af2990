"""Stage 4, evaluation: every model the run produced, with the task's metrics and its cost."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from kdcli.data import Dataset
from kdcli.engine import stats
from kdcli.engine.infer import predict
from kdcli.engine.measure import count_params, cpu_latency_ms, flops_per_image
from kdcli.engine.precision import FP32
from kdcli.pipeline.common import Context, Model, eval_batch_size
from kdcli.tasks import Task

CPU = torch.device("cpu")


def measure(
    model: Model,
    data: Dataset,
    task: Task,
    test_logits: torch.Tensor,
    cfg: DictConfig,
    size_of: dict[str, Any] | None = None,
) -> dict[str, Any]:
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
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, torch.Tensor]]:
    """Stage 4: every model's figures on the test split, with agreement against the teacher,
    the KD gain's interval and p-value (student vs baseline on the same test images), and
    each model's test logits (for the plots).
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
    for role in results:
        if role != "teacher":
            results[role]["agreement"] = task.agreement(
                logits[role]["test"], logits["teacher"]["test"]
            )
    gain = {}
    if "baseline" in logits:
        gain = gain_figures(task, logits["student"]["test"], logits["baseline"]["test"], data)
    return results, gain, {role: split["test"] for role, split in logits.items()}


def gain_figures(
    task: Task, student_logits: torch.Tensor, baseline_logits: torch.Tensor, data: Dataset
) -> dict[str, Any]:
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
