"""`kd eval`: a saved model's metrics on a dataset's splits, without training anything.

The checkpoint is a kdcli model file (a run's `student.pt`, a cache entry's `model.pt`, an
exported safetensors file): it records the model's config option, its plain values and the
dataset facts the model was built for, so the model is rebuilt from kdcli's own config
(kdcli/config/from_files.py) and checked against the dataset before it is evaluated, in fp32
as `kd train`'s evaluation runs, so the figures match the run's report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdcli.data import Dataset, DatasetInfo
from kdcli.data.instruct import IGNORE, InstructDataset
from kdcli.engine.infer import predict
from kdcli.errors import UserError
from kdcli.store.checkpoint import ModelFile, read_exported_model, read_model_file
from kdcli.tasks.classify import TASK, confusion_matrix, topk_accuracy
from kdcli.tasks.instruct import Instruct
from kdcli.tasks.lm import TASK as LANGUAGE_MODEL

KEY = "checkpoint"  # how messages name the file


def read_model(path: Path) -> ModelFile:
    """The kdcli model file at `path`: a checkpoint (student.pt, a cache entry's model.pt)
    or a `kd export --format safetensors` file."""
    if path.suffix == ".safetensors":
        return read_exported_model(path, KEY)
    return read_model_file(path, KEY)


def model_info(file: ModelFile) -> DatasetInfo:
    """The dataset facts a model file records, checked."""
    return DatasetInfo.from_record(file.dataset, f"{KEY}={file.path}")


def evaluate_model(
    path: Path,
    model: nn.Module,
    data: Dataset,
    batch_size: int,
    device: torch.device,
    name: str | None = None,
) -> dict[str, Any]:
    """Every split's metrics (test, and validation when there is one) for `model` (loaded
    from `path`): a classifier's, or a language model's on token windows or on instruction
    data's answers (with its greedy answers' exact match and ROUGE-L)."""
    model.to(device).eval()
    task = LANGUAGE_MODEL if data.info.modality == "text" else TASK
    result: dict[str, Any] = {
        "checkpoint": str(path),
        "model": name or type(model).__name__,
        "dataset": data.info.name,
        "metric": task.metric,
    }
    for split in ("test", "val"):
        if split in data.splits:
            logits = predict(model, data.eval_loader(split, batch_size), device).cpu()
            labels = data.labels(split).cpu()
            if task is TASK:
                result[split] = split_figures(logits, labels)
            else:
                counted = int((labels != IGNORE).sum())  # instruction data: the answers'
                result[split] = {**task.metrics(logits, labels), "tokens": counted}
                if isinstance(data, InstructDataset):  # and the greedy answers, judged
                    answers = Instruct().answers(model, None, data, split)
                    result[split].update(answers.figures, answers=len(answers.texts))
    return result


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


def check_fits(path: Path, trained: dict[str, Any], data: Dataset) -> None:
    """The dataset has the classes and channels the model was built for."""
    for fact in ("num_classes", "channels"):
        if trained.get(fact) is not None and trained[fact] != getattr(data.info, fact):
            raise UserError(
                f"{KEY}={path} was trained on {trained.get('name')} with {fact}="
                f"{trained[fact]}, and dataset {data.info.name} has {getattr(data.info, fact)}; "
                "give a dataset with the same classes and channels (dataset=...)."
            )
