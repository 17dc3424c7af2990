"""Stage 4's measurements."""

import pytest
import torch
from torch import nn

from kdcli.data import DatasetInfo
from kdcli.engine.measure import count_params, cpu_latency_ms, flops_per_image
from kdcli.tasks.classify import accuracy, agreement

INFO = DatasetInfo("x", 3, 1, 4, (0.0,), (1.0,))


def test_accuracy_and_nll():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 2, 2])
    result = accuracy(logits, labels)
    assert result.top1 == 0.75
    assert result.nll == pytest.approx(nn.functional.cross_entropy(logits, labels).item())


def test_agreement_counts_equal_predictions():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert agreement(a, b) == pytest.approx(2 / 3)


def test_flops_of_a_linear_model_are_2_times_in_times_out():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3, bias=False))
    assert flops_per_image(model, INFO) == 2 * 16 * 3
    assert count_params(model) == 48


def test_latency_is_a_positive_median_and_leaves_the_model_alone():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    model.train()
    assert cpu_latency_ms(model, INFO, runs=5, warmup=1) > 0
    assert model.training, "measurements work on a copy"
