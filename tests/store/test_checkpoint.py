"""Checkpoints: a kdcli checkpoint and a plain state_dict load back into the model they came
from; a checkpoint for another model is refused naming the differing weights."""

from __future__ import annotations

import pytest
import torch

from kdcli.errors import UserError
from kdcli.models.cifar.resnet import CifarResNet
from kdcli.models.cifar.wrn import WideResNet
from kdcli.store.checkpoint import load_model, save_model


def resnet8(num_classes: int = 10) -> torch.nn.Module:
    return CifarResNet(num_classes, 1, 8, depth=8)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(t, sb[k]) for k, t in a.state_dict().items())


def test_kdcli_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    trained = resnet8()
    path = tmp_path / "model.pt"
    save_model(path, trained, model_config={"depth": 8})
    torch.manual_seed(1)
    fresh = resnet8()
    assert not _same_weights(trained, fresh)
    load_model(fresh, path, "teacher.checkpoint", "resnet8")
    assert _same_weights(trained, fresh)


def test_plain_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    trained = resnet8()
    path = tmp_path / "plain.pt"
    torch.save(trained.state_dict(), path)
    torch.manual_seed(1)
    assert _same_weights(trained, load_model(resnet8(), path, "teacher.checkpoint", "resnet8"))


def test_other_class_count_is_named(tmp_path):
    path = tmp_path / "hundred.pt"
    save_model(path, resnet8(num_classes=100))
    with pytest.raises(UserError, match=r"fc.weight is \[100, 64\] in the file but \[10, 64\]"):
        load_model(resnet8(), path, "teacher.checkpoint", "resnet8 on digits")


def test_other_architecture_lists_missing_and_unexpected(tmp_path):
    path = tmp_path / "wrn.pt"
    torch.save(WideResNet(10, 1, 8, depth=10).state_dict(), path)
    with pytest.raises(UserError, match="missing.*unexpected"):
        load_model(resnet8(), path, "teacher.checkpoint", "resnet8")


def test_train_refuses_a_mismatched_teacher_checkpoint(kd, tmp_path):
    path = tmp_path / "wrn.pt"
    torch.save(WideResNet(10, 1, 8, depth=10).state_dict(), path)
    done = kd(
        "train",
        "teacher=resnet8",
        f"teacher.checkpoint={path}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"cache_dir={tmp_path / 'cache'}",
    )
    assert done.returncode == 2, done.stderr
    assert "teacher.checkpoint" in done.stderr and "weight(s) missing" in done.stderr
    assert not (tmp_path / "run").exists()
