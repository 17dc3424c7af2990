"""Bad method settings are refused before any training, naming the key and the fix: by the
pre-flight checks on the config tree, or as the run's objects are built (the loss, the
layers it taps)."""

from __future__ import annotations

import pytest
import torch

from kdcli.config.checks import check_overrides
from kdcli.config.objects import build
from kdcli.errors import UserError


def refused(*overrides: str) -> str:
    with pytest.raises(UserError) as caught:
        [cfg] = check_overrides(list(overrides))
        build(cfg, torch.device("cpu"))
    return str(caught.value)


def test_every_method_config_passes_on_the_default_pair():
    for name in ("kd", "kd_ls", "dkd", "dist", "fitnet", "at", "combo", "hard", "ce"):
        [cfg] = check_overrides([f"loss={name}"])
        build(cfg, torch.device("cpu"))


def test_a_missing_layer_names_the_key_and_kd_list():
    message = refused("loss=fitnet", "loss.student_layer=stage3")
    assert "loss.student_layer='stage3'" in message
    assert "Did you mean stage2" in message
    assert "`kd list student --layers smallcnn`" in message
    message = refused("loss=at", "loss.teacher_layers=[layer1,layr2]")
    assert (
        "loss.teacher_layers='layr2'" in message and "kd list teacher --layers resnet8x4" in message
    )
    message = refused("loss=combo", "loss.terms.fitnet.loss.teacher_layer=stage2")
    assert message.startswith("loss.terms.fitnet.loss.teacher_layer='stage2'")


def test_layers_of_the_wrong_kind_are_refused():
    message = refused(
        "loss=at",
        "teacher=mlp",
        "loss.teacher_layers=[body.1,body.4]",
        "loss.student_layers=[stage1,stage2]",
    )
    assert "[C, H, W] maps" in message


def test_alpha_and_temperature_are_checked_in_terms_and_schedules():
    assert refused("loss=combo", "loss.terms.kd.loss.alpha=1.5").startswith(
        "loss.terms.kd.loss.alpha=1.5 must be a number in [0, 1]"
    )
    message = refused("loss=kd", "loss.schedule.alpha={kind:linear,start:0.1,end:2}")
    assert message.startswith("loss.schedule.alpha.end=2 must be a number in [0, 1]")
    message = refused("loss=dkd", "loss.schedule.temperature={kind:cosine,start:0,end:4}")
    assert message.startswith("loss.schedule.temperature.start=0 must be a number > 0")
    assert "kind 'step'" in refused("loss=kd", "loss.schedule.alpha={kind:step,start:0.5}")


def test_dkd_warmup_is_a_whole_number_of_epochs():
    assert refused("loss=dkd", "loss.warmup=-1").startswith("loss.warmup=-1 must be a whole")
    assert refused("loss=dkd", "loss.warmup=2.5").startswith("loss.warmup=2.5 must be a whole")


def test_teacher_feature_settings():
    assert "auto, stored or online" in refused("soft_labels.features=sometimes")
    assert "feature_budget_mb" in refused("soft_labels.feature_budget_mb=-1")
