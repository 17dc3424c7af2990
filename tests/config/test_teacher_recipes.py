"""configs/teacher/: every teacher option composes with a training recipe that resolves and
that the command line can still override (the recipes themselves: scripts/bench_zoo.py)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from kdcli.config.build import training_recipe
from kdcli.config.groups import group_options
from kdcli.config.paths import config_dir
from kdcli.engine.loop import build_scheduler

TEACHERS = group_options("teacher")


def teacher(option: str, *overrides: str) -> DictConfig:
    name = ["teacher.name=resnet18"] if option == "torchvision" else []
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[f"teacher={option}", *name, *overrides]).teacher


def built(stage: DictConfig, steps_per_epoch: int = 10):
    model = torch.nn.Linear(2, 2)
    recipe = training_recipe(stage, "teacher")
    optimizer = recipe.optimizer(list(model.parameters()))
    return optimizer, build_scheduler(recipe.scheduler, optimizer, steps_per_epoch)


@pytest.mark.parametrize("option", TEACHERS)
def test_recipe_resolves_to_a_warm_up_schedule(option):
    stage = teacher(option)
    assert isinstance(stage.epochs, int) and stage.epochs >= 1
    assert stage.optimizer.lr > 0 and stage.scheduler.warmup_epochs >= 0
    optimizer, scheduler = built(stage)
    assert scheduler.total_steps == 10 * stage.epochs
    assert scheduler.warmup_steps == round(10 * stage.scheduler.warmup_epochs)
    # the first batch runs at a fraction of the recipe's learning rate
    assert optimizer.param_groups[0]["lr"] < stage.optimizer.lr


@pytest.mark.parametrize("option", TEACHERS)
def test_overrides_beat_the_recipe_and_another_optimizer_and_scheduler_fit(option):
    """A recipe sets no key that another optimizer or scheduler would not take."""
    stage = teacher(
        option,
        "optimizer@teacher.optimizer=adamw",
        "scheduler@teacher.scheduler=cosine",
        "teacher.epochs=3",
        "teacher.optimizer.lr=0.123",
    )
    optimizer, scheduler = built(stage)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["lr"] == 0.123
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert scheduler.T_max == 3


def test_the_warm_up_length_can_be_set():
    stage = teacher("resnet50", "teacher.epochs=4", "teacher.scheduler.warmup_epochs=1")
    _, scheduler = built(stage)
    assert (scheduler.total_steps, scheduler.warmup_steps) == (40, 10)


def test_a_recipe_in_a_teacher_config_beats_the_defaults():
    """train.yaml merges the teacher's optimizer and scheduler before the teacher config, so
    a recipe key there is not overwritten by them (mlp trains for 100 epochs, not 15)."""
    assert teacher("mlp").epochs == 100
    assert teacher("resnet18").epochs == 15


def test_the_student_keeps_its_own_schedule():
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["teacher=resnet50"])
    assert cfg.student.scheduler._target_ == "torch.optim.lr_scheduler.CosineAnnealingLR"
