"""`kd eval`: a saved model's metrics on a dataset's splits, without training anything.

The checkpoint is a kdcli model file (a run's `student.pt`, a cache entry's `model.pt`): it
records the model config and the dataset facts the model was built for, so the model is
rebuilt and checked against the dataset before it is evaluated, in fp32 as `kd train`'s
evaluation runs, so the figures match the run's report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from kdcli.config.build import _instantiate
from kdcli.data import Dataset, DatasetInfo
from kdcli.engine.infer import predict
from kdcli.errors import UserError
from kdcli.store.checkpoint import FORMAT, check_compatible, read_checkpoint
from kdcli.tasks.classify import TASK, confusion_matrix, topk_accuracy

KEY = "checkpoint"  # how messages name the file


def checkpoint_facts(path: Path) -> dict[str, Any]:
    """The kdcli checkpoint at `path` (format, model_config, dataset, state_dict)."""
    payload = read_checkpoint(path, KEY)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(
            f"{KEY}={path} is not a kdcli model file (it has no model config). kd eval takes "
            "a run's student.pt or a cache entry's model.pt."
        )
    return payload


def evaluate_checkpoint(
    path: Path, facts: dict[str, Any], cfg: DictConfig, device: torch.device
) -> dict[str, Any]:
    """Every split's metrics (test, and validation when there is one) for the model at `path`."""
    data = load_dataset(cfg, device)
    _check_fits(path, facts["dataset"], data)
    model = build_from_checkpoint(path, facts, data.info).to(device)
    model_cfg = OmegaConf.create(facts["model_config"])
    batch_size = 256 if cfg.eval.batch_size == "auto" else int(cfg.eval.batch_size)
    result: dict[str, Any] = {
        "checkpoint": str(path),
        "model": str(model_cfg.get("_target_", "")).rsplit(".", 1)[-1],
        "dataset": data.info.name,
        "metric": TASK.metric,
    }
    for split in ("test", "val"):
        if split in data.splits:
            logits = predict(model, data.eval_loader(split, batch_size), device).cpu()
            result[split] = split_figures(logits, data.labels(split).cpu())
    return result


def load_dataset(cfg: DictConfig, device: torch.device) -> Dataset:
    return _instantiate(cfg.dataset, "dataset").load().to(device)


def build_from_checkpoint(path: Path, facts: dict[str, Any], info: DatasetInfo) -> nn.Module:
    """The checkpoint's model, rebuilt from its config for `info` and loaded (eval mode)."""
    model_cfg = OmegaConf.create(facts["model_config"])
    model = _instantiate(model_cfg, "the checkpoint's model", **info.model_kwargs())
    check_compatible(facts["state_dict"], model, KEY, path, f"its model on {info.describe()}")
    model.load_state_dict(facts["state_dict"])
    return model.eval()


def split_figures(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """The report's metrics, top-5 (more than 5 classes), per-class accuracy and confusion."""
    figures: dict[str, Any] = dict(TASK.metrics(logits, labels))
    if logits.shape[1] > 5:
        figures["top5"] = topk_accuracy(logits, labels, 5)
    confusion = confusion_matrix(logits, labels)
    totals = confusion.sum(1).clamp(min=1)
    figures["per_class_top1"] = (confusion.diag() / totals).tolist()
    figures["confusion"] = confusion.tolist()
    figures["images"] = len(labels)
    return figures


def _check_fits(path: Path, trained: dict[str, Any], data: Dataset) -> None:
    """The dataset has the classes and channels the model was built for."""
    for fact in ("num_classes", "channels"):
        if trained.get(fact) is not None and trained[fact] != getattr(data.info, fact):
            raise UserError(
                f"{KEY}={path} was trained on {trained.get('name')} with {fact}="
                f"{trained[fact]}, and dataset {data.info.name} has {getattr(data.info, fact)}; "
                "give a dataset with the same classes and channels (dataset=...)."
            )
