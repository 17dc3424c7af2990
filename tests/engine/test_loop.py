"""The training loop with a feature loss: adapters are trained, features reach the loss,
stored and online teacher knowledge agree on un-augmented data."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from kdcli.config.build import training_recipe
from kdcli.config.paths import config_dir
from kdcli.data.digits import Digits
from kdcli.engine.loop import Job, Trainee, fit
from kdcli.engine.state import Parts, Position, TrainState
from kdcli.errors import UserError
from kdcli.knowledge.format import SoftLabels
from kdcli.knowledge.mode import choose_feature_source
from kdcli.knowledge.predict import predict_with_features
from kdcli.knowledge.teacher import (
    OnlineTeacher,
    StoredKnowledge,
    build_feature_loss,
    example_batch,
)
from kdcli.losses import FitNet
from kdcli.models.smallcnn import SmallCNN
from kdcli.tasks.classify import TASK

CPU = torch.device("cpu")


def student_recipe():
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return training_recipe(compose("train", overrides=["student.epochs=1"]).student, "student")


def test_fit_trains_the_regressor_and_resumes_it(tmp_path):
    torch.manual_seed(0)
    data = Digits(augment=False).load()
    teacher, student = SmallCNN(10, 1, 8, width=8), SmallCNN(10, 1, 8, width=4)
    loss = FitNet(student_layer="stage2", teacher_layer="stage1", beta=1.0)
    build_feature_loss(loss, student, teacher, example_batch(data))
    assert tuple(loss.regressor.weight.shape) == (8, 8, 1, 1)  # stage2 of width 4 -> stage1 of 8
    before = loss.regressor.weight.detach().clone()

    logits, features = predict_with_features(
        teacher, data.eval_loader("train", 256), ["stage1"], CPU
    )
    stored = StoredKnowledge(SoftLabels(logits), features)
    batch = next(data.train_loader(16, seed=0).epoch(0))
    online = OnlineTeacher(teacher, ["stage1"])(0, batch)
    torch.testing.assert_close(stored(0, batch).features["stage1"], online.features["stage1"])

    state = tmp_path / "state.pt"
    recipe = student_recipe()
    fit(
        Trainee(student, data.train_loader(128, 0), loss),
        recipe,
        Job("s", TASK, CPU, state=TrainState(state)),
        stored,
    )
    assert not torch.equal(before, loss.regressor.weight)

    assert not state.exists()  # a finished stage removes its state file

    # the per-epoch state holds the loss's adapter, and resuming restores it
    optimizer = recipe.optimizer([*student.parameters(), *loss.parameters()])
    assert any(p is loss.regressor.weight for g in optimizer.param_groups for p in g["params"])
    scheduler = recipe.scheduler(optimizer)
    TrainState(state).save(Parts(student, loss, optimizer, scheduler), Position(1, 0))
    fresh = FitNet(student_layer="stage2", teacher_layer="stage1")
    build_feature_loss(fresh, student, teacher, example_batch(data))
    optimizer = recipe.optimizer([*student.parameters(), *fresh.parameters()])
    parts = Parts(student, fresh, optimizer, recipe.scheduler(optimizer))
    assert TrainState(state).resume(parts, CPU) == Position(1, 0)
    torch.testing.assert_close(fresh.regressor.weight, loss.regressor.weight)


def test_teacher_features_are_stored_only_when_they_match_the_view_and_fit():
    mib = 2**20
    assert choose_feature_source("auto", augmented=False, needed_bytes=mib, budget_mb=1) == "stored"
    assert choose_feature_source("auto", augmented=True, needed_bytes=mib, budget_mb=1) == "online"
    assert (
        choose_feature_source("auto", augmented=False, needed_bytes=mib + 1, budget_mb=1)
        == "online"
    )
    assert choose_feature_source("online", augmented=False, needed_bytes=0, budget_mb=1) == "online"
    with pytest.raises(UserError, match="augmented"):
        choose_feature_source("stored", augmented=True, needed_bytes=0, budget_mb=1)
    with pytest.raises(UserError, match="feature_budget_mb"):
        choose_feature_source("stored", augmented=False, needed_bytes=2 * mib, budget_mb=1)
