"""`Objects`: what the pipeline runs on, each built once from the config and checked before
any training (kdcli/config/objects.py `build` makes them; `kdcli.pipeline.run.run` takes them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdcli.data import Dataset
from kdcli.engine.compress import Compression
from kdcli.engine.loop import Recipe
from kdcli.engine.state import Built
from kdcli.losses import DistillationLoss
from kdcli.pipeline.metrics import JsonlLog
from kdcli.tasks import Task


@dataclass
class Objects:
    data: Dataset
    loss_fn: DistillationLoss
    teacher: Built
    student: Built
    baseline: Callable[[], Built]  # built when the baseline stage needs it (not when cached)
    training: dict[str, Recipe]  # role -> how the loop trains it (epochs, optimizer, ...)
    logger: Callable[[Path], JsonlLog]  # run directory -> where the per-epoch rows go
    compression: Compression  # what the compress stage does to the student
    task: Task  # what the outputs mean (kdcli/tasks: classify, lm)
    # the data as the teacher reads it, when its tokenizer is not the student's
    # (`teacher.tokenizer`): sample i is the same text as in `data`; else None
    teacher_data: Dataset | None = None
