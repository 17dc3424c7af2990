"""Stage 4, evaluation: every model the run produced, with the task's metrics and its cost."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from kdcli.data import Dataset
from kdcli.engine.infer import predict
from kdcli.engine.measure import count_params, cpu_latency_ms, flops_per_image
from kdcli.pipeline.common import Context, Model
from kdcli.tasks import Task


def measure(
    model: Model, data: Dataset, task: Task, test_logits: torch.Tensor, cfg: DictConfig
) -> dict[str, Any]:
    """The report's figures for one model."""
    return {
        "name": model.name,
        **task.metrics(test_logits, data.labels("test")),
        "params": count_params(model.module),
        "flops": flops_per_image(model.module, data.info),
        "latency_ms": cpu_latency_ms(model.module, data.info, runs=cfg.eval.latency_runs),
        "checkpoint_bytes": model.checkpoint.stat().st_size,
        "checkpoint": str(model.checkpoint),
        "source": model.source,
        "reused": model.source != "trained",
    }


def evaluate_stage(ctx: Context, models: dict[str, Model]) -> dict[str, dict[str, Any]]:
    """Stage 4: every model's figures on the test split, with agreement against the teacher.

    With a validation split (`dataset.val_fraction > 0`) each model's `val_<metric>` is
    reported too, so sweeps can be compared on validation and the test split kept for the end.
    """
    cfg, data, task, device = ctx.cfg, ctx.data, ctx.task, ctx.device
    loader = data.eval_loader("test", cfg.eval.batch_size)
    logits = {role: predict(m.module, loader, device) for role, m in models.items()}
    results = {role: measure(m, data, task, logits[role], cfg) for role, m in models.items()}
    if "val" in data.splits:
        val_loader = data.eval_loader("val", cfg.eval.batch_size)
        for role, m in models.items():
            val_logits = predict(m.module, val_loader, device)
            metric = task.metrics(val_logits, data.labels("val"))[task.metric]
            results[role][f"val_{task.metric}"] = metric
    for role in results:
        if role != "teacher":
            results[role]["agreement"] = task.agreement(logits[role], logits["teacher"])
    return results
