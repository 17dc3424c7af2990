"""Schedules (constant, linear, cosine, warm-up) and weighted sums of losses."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from kdcli.config.paths import config_dir
from kdcli.errors import UserError
from kdcli.losses import CrossEntropy, FitNet, Schedule, SoftTargetKD, WeightedSum


def test_schedule_kinds():
    epochs = 4
    linear = [Schedule("linear", 0.0, 1.0).at(e, epochs) for e in range(epochs)]
    assert linear == pytest.approx([0.25, 0.5, 0.75, 1.0])
    cosine = [Schedule("cosine", 8.0, 2.0).at(e, epochs) for e in range(epochs)]
    expected = [8.0 - 6.0 * (1 - math.cos(math.pi * (e + 1) / epochs)) / 2 for e in range(epochs)]
    assert cosine == pytest.approx(expected)
    assert cosine[-1] == pytest.approx(2.0)
    assert Schedule("constant", 0.3, 0.9).at(2, epochs) == 0.3


def test_a_ramp_with_its_own_length_holds_its_end():
    """With `epochs=W` the factor is min(epoch / W, 1), epochs counted from 1 (DKD's warm-up)."""
    ramp = Schedule("linear", 0.0, 1.0, epochs=20)
    assert [ramp.at(e, 240) for e in (0, 9, 19, 100)] == pytest.approx([0.05, 0.5, 1.0, 1.0])


def test_bad_schedules_are_user_errors():
    with pytest.raises(UserError, match="kind 'step'"):
        Schedule("step", 0.0, 1.0)
    with pytest.raises(UserError, match="loss.schedule.beta"):
        SoftTargetKD(schedule={"beta": {"kind": "linear", "start": 1, "end": 2}})
    with pytest.raises(UserError, match="fields end, epochs, kind, start"):
        SoftTargetKD(schedule={"alpha": {"kind": "linear", "begin": 0.1}})
    with pytest.raises(UserError, match="a schedule is a mapping"):
        SoftTargetKD(schedule={"alpha": 0.5})


def test_start_epoch_applies_the_schedule():
    loss = SoftTargetKD(
        alpha=0.9,
        temperature=4.0,
        schedule={"temperature": {"kind": "linear", "start": 8.0, "end": 2.0}, "alpha": None},
    )
    temperatures = []
    for epoch in range(3):
        loss.start_epoch(epoch, 3)
        temperatures.append(loss.temperature)
    assert temperatures == pytest.approx([6.0, 4.0, 2.0])
    assert loss.alpha == 0.9


def test_weighted_sum_is_the_weighted_sum_of_its_terms():
    generator = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 5, generator=generator), torch.randn(4, 5, generator=generator)
    y = torch.tensor([0, 1, 2, 3])
    kd = SoftTargetKD(alpha=1.0, temperature=2.0)
    ce = CrossEntropy()
    combo = WeightedSum(
        {
            "ce": {"weight": 0.3, "loss": ce},
            "kd": {"weight": 2.0, "loss": kd},
            "off": {"weight": 0.0, "loss": FitNet("a", "b")},
        }
    )
    assert torch.allclose(combo(s, t, y), 0.3 * ce(s, t, y) + 2.0 * kd(s, t, y))
    assert list(combo.terms) == ["ce", "kd"]
    assert combo.needs_teacher and not combo.uses_features


def test_combo_config_builds_with_the_union_of_layers():
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["loss=combo"])
    combo = instantiate(cfg.loss)
    assert isinstance(combo, WeightedSum)
    assert set(combo.terms) == {"kd", "fitnet"}
    assert combo.student_layers == ("stage2",) and combo.teacher_layers == ("layer2",)
    with pytest.raises(UserError, match="loss.terms.bad"):
        WeightedSum({"bad": {"weight": 1.0, "loss": "kd"}})
