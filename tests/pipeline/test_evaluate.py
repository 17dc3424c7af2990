"""Stage 4's measurements."""

import pytest
import torch
from torch import nn

from kdcli.data import DatasetInfo
from kdcli.engine.measure import count_params, cpu_latency_ms, flops_per_image
from kdcli.tasks.classify import accuracy, agreement, expected_calibration_error

INFO = DatasetInfo("x", 3, 1, 4, (0.0,), (1.0,))


def test_accuracy_and_nll():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 2, 2])
    result = accuracy(logits, labels)
    assert result.top1 == 0.75
    assert result.nll == pytest.approx(nn.functional.cross_entropy(logits, labels).item())


def test_expected_calibration_error_of_a_constructed_example():
    # confidences 0.9 (right), 0.9 (wrong), 0.7 (right), 0.6 (right): with 15 bins, the two
    # 0.9s share (13/15, 14/15], 0.7 and 0.6 sit alone in theirs
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 1, 0])
    ece = expected_calibration_error(probs.log(), labels)
    expected = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1 - 0.7) + 1 / 4 * abs(1 - 0.6)
    assert ece == pytest.approx(expected, abs=1e-6)
    # one bin: |accuracy - mean confidence| over all samples
    one_bin = expected_calibration_error(probs.log(), labels, bins=1)
    assert one_bin == pytest.approx(abs(0.75 - 0.775), abs=1e-6)


def test_confident_and_right_is_perfectly_calibrated():
    logits = torch.tensor([[50.0, 0.0, 0.0], [0.0, 50.0, 0.0]])
    assert expected_calibration_error(logits, torch.tensor([0, 1])) == pytest.approx(0.0)
    assert expected_calibration_error(logits, torch.tensor([1, 0])) == pytest.approx(1.0)


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
