"""Teacher knowledge for the student stage: what the loop gets from `teacher(epoch, batch)`.

- `StoredKnowledge`: the soft-label stage's arrays (logits, and for feature losses the tapped
  teacher layers), looked up by sample index; the teacher does not run while distilling.
  The logits are `SoftLabels`: one clean view per sample (`static`), or the teacher's output
  on the exact augmented view the student draws in every epoch (`views`), optionally kept
  as the top-k probabilities only.
- `OnlineTeacher`: the teacher runs on the student's own batch under no_grad. Feature losses
  use it when their stored maps would not match the student's view (the data is augmented:
  a shifted image has shifted feature maps, while logits barely move) or would not fit in
  `soft_labels.feature_budget_mb`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from kdcli.data import Batch, Dataset
from kdcli.engine import precision as numerics
from kdcli.engine.loop import TeacherOutputs
from kdcli.engine.precision import FP32, Precision
from kdcli.knowledge.format import SoftLabels
from kdcli.losses import DistillationLoss
from kdcli.models.features import FeatureTap


class StoredKnowledge:
    """Knowledge stored per training sample: soft labels and tapped teacher layers by index.
    `train_data`: the dataset whose training split the indices refer to, when it is not the
    run's (the teacher-written text of `soft_labels.mode=generate`)."""

    def __init__(
        self,
        soft_labels: SoftLabels,
        features: dict[str, torch.Tensor] | None = None,
        train_data: Dataset | None = None,
    ) -> None:
        self.soft_labels = soft_labels
        self.features = features or {}
        self.train_data = train_data

    def __call__(self, epoch: int, batch: Batch) -> TeacherOutputs:
        return TeacherOutputs(
            self.soft_labels.logits(epoch, batch.index),
            {path: stored[batch.index].float() for path, stored in self.features.items()},
        )


class OnlineTeacher:
    """The teacher's logits and `layers` computed on the student's batch, in eval mode and the
    teacher's precision (no autograd graph: no_grad, as inference-mode tensors could not be
    saved by the student's backward pass)."""

    train_data: Dataset | None = None  # it runs on the run's own data

    def __init__(self, model: nn.Module, layers: Sequence[str], precision: Precision = FP32):
        self.model = numerics.prepare(model, precision)
        self.layers = list(layers)
        self.precision = precision

    @torch.no_grad()
    def __call__(self, epoch: int, batch: Batch) -> TeacherOutputs:
        self.model.eval()
        device = batch.x.device
        with FeatureTap(self.model, self.layers) as tap, numerics.autocast(self.precision, device):
            logits = self.model(numerics.inputs(batch.x, self.precision))
        return TeacherOutputs(logits, dict(tap.outputs))  # the loop upcasts what the loss takes


@torch.no_grad()
def feature_shapes(
    model: nn.Module, layers: Sequence[str], example: torch.Tensor
) -> dict[str, tuple[int, ...]]:
    """The per-sample output shape of each of `layers`, from one forward pass in eval mode."""
    was_training = model.training
    with FeatureTap(model.eval(), layers) as tap:
        model(example)
    model.train(was_training)
    return {path: tuple(output.shape[1:]) for path, output in tap.outputs.items()}


def example_batch(data: Dataset, size: int = 2) -> torch.Tensor:
    """A few un-augmented training images, to size the tapped layers."""
    return next(data.eval_loader("train", size).epoch(0)).x


def build_feature_loss(
    loss_fn: DistillationLoss, student: nn.Module, teacher: nn.Module, example: torch.Tensor
) -> None:
    """Size the loss's learned adapters from a dry run of both models (before the optimizer
    is made, so it trains them)."""
    loss_fn.build(
        feature_shapes(student, loss_fn.student_layers, example),
        feature_shapes(teacher, loss_fn.teacher_layers, example),
    )


def stored_feature_bytes(
    shapes: dict[str, tuple[int, ...]], num_samples: int, dtype: np.dtype
) -> int:
    """What storing `shapes` for every training sample takes."""
    return num_samples * sum(math.prod(shape) for shape in shapes.values()) * dtype.itemsize
