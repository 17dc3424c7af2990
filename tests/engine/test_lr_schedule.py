"""engine/lr_schedule.py: the teachers' linear warm-up then cosine, stepped every batch."""

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch.optim.optimizer import register_optimizer_step_pre_hook

from kdcli.config.build import training_recipe
from kdcli.data.digits import Digits
from kdcli.engine.loop import Job, Trainee, build_scheduler, fit
from kdcli.engine.lr_schedule import WarmupCosine, warmup_cosine_factor
from kdcli.losses import CrossEntropy
from kdcli.models.mlp import MLP
from kdcli.tasks.classify import TASK


def sgd(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def lrs(scheduler: WarmupCosine, steps: int) -> list[float]:
    """The learning rate in force at each of the first `steps` optimizer steps."""
    seen = []
    for _ in range(steps):
        seen.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return seen


def test_warm_up_rises_linearly_per_batch_then_decays_by_cosine():
    # 2 warm-up epochs of 4 batches: lr/8, 2lr/8, ..., lr at the 8th batch, then the cosine
    scheduler = WarmupCosine(sgd(0.08), epochs=4, warmup_epochs=2, steps_per_epoch=4)
    seen = lrs(scheduler, 16)
    assert seen[:8] == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08])
    decay = [0.04 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]
    assert seen[8:] == pytest.approx(decay)
    assert all(a > b for a, b in zip(seen[8:], seen[9:], strict=False))


def test_no_warm_up_is_a_plain_cosine_from_the_first_step():
    scheduler = WarmupCosine(sgd(0.1), epochs=2, warmup_epochs=0, steps_per_epoch=2)
    assert lrs(scheduler, 4) == pytest.approx(
        [
            0.1,
            0.1 * (1 + math.cos(math.pi / 4)) / 2,
            0.05,
            0.1 * (1 + math.cos(3 * math.pi / 4)) / 2,
        ]
    )


def test_a_warm_up_longer_than_the_run_ends_with_the_run():
    assert warmup_cosine_factor(0, total_steps=3, warmup_steps=3) == pytest.approx(1 / 3)
    scheduler = WarmupCosine(sgd(0.3), epochs=1, warmup_epochs=5, steps_per_epoch=3)
    assert lrs(scheduler, 3) == pytest.approx([0.1, 0.2, 0.3])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="warmup_epochs"):
        WarmupCosine(sgd(), epochs=3, warmup_epochs=-1)
    with pytest.raises(ValueError, match="epochs >= 1"):
        WarmupCosine(sgd(), epochs=0)


def test_state_dict_resumes_mid_schedule():
    first = WarmupCosine(sgd(0.1), epochs=3, warmup_epochs=1, steps_per_epoch=5)
    lrs(first, 7)
    # as kdcli.train._resume does: the optimizer's state (its lr) and the scheduler's
    optimizer = sgd(0.1)
    resumed = WarmupCosine(optimizer, epochs=3, warmup_epochs=1, steps_per_epoch=5)
    optimizer.load_state_dict(first.optimizer.state_dict())
    resumed.load_state_dict(first.state_dict())
    assert lrs(resumed, 8) == pytest.approx(lrs(first, 8))


def stage(epochs: int, scheduler: dict) -> OmegaConf:
    return OmegaConf.create(
        {
            "epochs": epochs,
            "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
            "scheduler": {"_partial_": True, **scheduler},
        }
    )


WARMUP = {"_target_": "kdcli.engine.lr_schedule.WarmupCosine", "epochs": 4, "warmup_epochs": 1}


def test_build_scheduler_gives_a_per_batch_scheduler_the_batches_per_epoch():
    factory = training_recipe(stage(4, WARMUP), "teacher").scheduler
    scheduler = build_scheduler(factory, sgd(), steps_per_epoch=23)
    assert (scheduler.total_steps, scheduler.warmup_steps) == (92, 23)
    cosine = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": 4}
    factory = training_recipe(stage(4, cosine), "teacher").scheduler
    assert not getattr(build_scheduler(factory, sgd(), 23), "per_batch", False)


def test_fit_steps_it_after_every_batch():
    loader = Digits().load().train_loader(256, 0)
    seen = []
    hook = register_optimizer_step_pre_hook(
        lambda optimizer, *_: seen.append(optimizer.param_groups[0]["lr"])
    )
    try:
        model = MLP(10, 1, 8, hidden=[16])
        recipe = training_recipe(stage(4, WARMUP), "teacher")
        fit(Trainee(model, loader, CrossEntropy()), recipe, Job("t", TASK, torch.device("cpu")))
    finally:
        hook.remove()
    batches = len(loader)
    assert len(seen) == 4 * batches
    assert seen[:batches] == pytest.approx([0.1 * k / batches for k in range(1, batches + 1)])
    assert seen[batches] == pytest.approx(0.1) and seen[-1] < 0.01
