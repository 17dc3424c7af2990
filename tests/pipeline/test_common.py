"""What the stages share (kdcli/pipeline/common.py): the evaluation batch-size probe runs once
per architecture in a process, so the points of a `-m` sweep do not each measure it; plots
are drawn by default in single runs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from kdcli.data.base import DatasetInfo
from kdcli.data.memory import InMemoryDataset, Split
from kdcli.engine.precision import FP32
from kdcli.pipeline import common

INFO = DatasetInfo("tiny", 2, 1, 4, (0.5,), (0.5,))
TRAIN = common.PROBE_MIN_SAMPLES  # enough for the probe to run


def context() -> SimpleNamespace:
    split = Split(torch.zeros(TRAIN, 1, 4, 4, dtype=torch.uint8), torch.zeros(TRAIN).long())
    data = InMemoryDataset(INFO, split, split, None)
    cfg = OmegaConf.create({"eval": {"batch_size": "auto"}})
    return SimpleNamespace(cfg=cfg, data=data, device=torch.device("cpu"))


def model(classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, classes))


@pytest.fixture
def probes(monkeypatch) -> list[nn.Module]:
    measured: list[nn.Module] = []

    def fastest(module, images, device, precision):
        measured.append(module)
        return 128

    monkeypatch.setattr(common, "fastest_batch_size", fastest)
    monkeypatch.setattr(common, "FASTEST", {})
    return measured


def test_the_probe_runs_once_per_architecture_in_a_process(probes):
    first, same, other = model(2), model(2), model(3)
    for module in (first, same, first):  # a sweep's points: new weights, the same shapes
        assert common.eval_batch_size(context(), module, FP32) == 128
    assert probes == [first]
    common.eval_batch_size(context(), other, FP32)
    assert probes == [first, other]


def test_a_set_batch_size_or_a_small_split_never_probes(probes):
    ctx = context()
    ctx.cfg.eval.batch_size = 32
    assert common.eval_batch_size(ctx, model(2), FP32) == 32
    ctx = context()
    ctx.data = InMemoryDataset(INFO, ctx.data.train.subset(torch.arange(10)), ctx.data.test, None)
    assert common.eval_batch_size(ctx, model(2), FP32) == 256
    assert probes == []


def test_plots_are_drawn_when_asked_and_by_default_outside_a_sweep():
    assert common.draws_plots(True) and not common.draws_plots(False)
    assert common.draws_plots("auto")  # no Hydra multirun here
