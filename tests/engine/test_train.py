"""The one training loop: it learns, fails fast on NaN naming what went non-finite first, and
its state is saved and resumed (tests/engine/test_state.py)."""

import pytest
import torch
from omegaconf import OmegaConf

from kdcli.config.build import training_recipe
from kdcli.data.digits import Digits
from kdcli.engine.loop import Job, Recipe, TeacherOutputs, Trainee, fit
from kdcli.errors import RunError
from kdcli.losses import CrossEntropy, SoftTargetKD
from kdcli.losses.combo import WeightedSum
from kdcli.losses.dkd import DecoupledKD
from kdcli.models.mlp import MLP
from kdcli.tasks.classify import TASK

CPU = torch.device("cpu")


def stage(epochs: int, lr: float = 0.05):
    return OmegaConf.create(
        {
            "epochs": epochs,
            "batch_size": 64,
            "optimizer": {
                "_target_": "torch.optim.SGD",
                "_partial_": True,
                "lr": lr,
                "momentum": 0.9,
            },
            "scheduler": {
                "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
                "_partial_": True,
                "T_max": epochs,
            },
        }
    )


def recipe(stage_cfg) -> Recipe:
    """How fit trains, from a stage config."""
    return training_recipe(stage_cfg, "student")


def one_epoch(digits, loss, lr: float = 0.05, label: str = "student", knowledge=None):
    """One epoch of an MLP on digits, as the NaN-diagnosis tests run it."""
    trainee = Trainee(MLP(10, 1, 8, hidden=[64]), digits.train_loader(64, 0), loss)
    return fit(trainee, recipe(stage(1, lr=lr)), Job(label, TASK, CPU), knowledge)


@pytest.fixture(scope="module")
def digits():
    return Digits().load()


def test_fit_learns_digits(digits):
    torch.manual_seed(0)
    model = MLP(10, 1, 8, hidden=[64])
    trainee = Trainee(model, digits.train_loader(64, 0), CrossEntropy())
    result = fit(trainee, recipe(stage(3, lr=0.1)), Job("t", TASK, CPU))
    assert result.final_train_score > 0.5, "chance is 0.1"
    assert result.final_loss < 1.5, "the loss starts near ln(10) = 2.3"
    assert result.images_per_s > 0 and result.epochs == 3


def test_clip_grad_norm_bounds_every_update(digits):
    """SGD without momentum moves the weights by lr * clipped gradient: at most lr * norm."""
    torch.manual_seed(0)
    model = MLP(10, 1, 8, hidden=[64])
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    config = stage(1, lr=1.0)
    config.optimizer.momentum = 0.0
    config.clip_grad_norm = 1e-3
    loader = digits.train_loader(64, 0)
    fit(Trainee(model, loader, CrossEntropy()), recipe(config), Job("t", TASK, CPU))
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert 0 < (after - before).norm() <= len(loader) * 1.0 * 1e-3 * 1.001
    assert recipe(config).clip_grad_norm == 1e-3 and recipe(stage(1)).clip_grad_norm is None


def test_diverging_student_logits_are_blamed_on_the_learning_rate(digits):
    with pytest.raises(RunError) as error:
        one_epoch(digits, SoftTargetKD(), lr=1e30, knowledge=FakeTeacher())
    message = str(error.value)
    assert "the student loss became nan in epoch 1, step 2 of 22:" in message, message
    assert "the student's logits went non-finite" in message
    assert "student.optimizer.lr (now 1e+30)" in message


def test_a_diverging_baseline_names_the_students_settings(digits):
    with pytest.raises(RunError, match=r"baseline's logits.*student\.optimizer\.lr"):
        one_epoch(digits, CrossEntropy(), lr=1e30, label="baseline")


class FakeTeacher:
    """Teacher knowledge: fixed random logits, NaN for the batch of step `bad_step`."""

    def __init__(self, bad_step: int | None = None) -> None:
        self.bad_step, self.calls = bad_step, 0

    def __call__(self, epoch, batch):
        logits = torch.randn(len(batch.y), 10, generator=torch.Generator().manual_seed(0))
        if self.calls == self.bad_step:
            logits[0, 3] = float("nan")
        self.calls += 1
        return TeacherOutputs(logits)


def test_non_finite_teacher_soft_labels_are_blamed_on_the_teacher(digits):
    """The NaN comes in at step 3; by the log point (step 10) it has reached the student's
    weights and logits, but the first thing that went non-finite is what is named."""
    with pytest.raises(RunError) as error:
        one_epoch(digits, SoftTargetKD(), knowledge=FakeTeacher(bad_step=2))
    message = str(error.value)
    assert "the student loss became nan in epoch 1, step 3 of 22:" in message, message
    assert "teacher's soft labels" in message and "teacher.checkpoint" in message
    assert "student.optimizer.lr" not in message


def test_a_non_finite_loss_on_finite_logits_names_the_loss_settings(digits):
    with pytest.raises(RunError) as error:
        one_epoch(digits, SoftTargetKD(alpha=0.5, temperature=0.0), knowledge=FakeTeacher())
    message = str(error.value)
    assert "epoch 1, step 1 of 22: the loss went non-finite on finite logits" in message, message
    assert "loss.alpha=0.5, loss.temperature=0.0" in message


def test_a_combo_loss_names_the_term_that_went_non_finite(digits):
    terms = {
        "kd": {"weight": 1.0, "loss": SoftTargetKD(alpha=1.0, temperature=0.0)},
        "dkd": {"weight": 0.5, "loss": DecoupledKD(warmup=0)},
    }
    with pytest.raises(RunError) as error:
        one_epoch(digits, WeightedSum(terms), knowledge=FakeTeacher())
    message = str(error.value)
    assert "the loss term(s) kd went non-finite" in message, message
    assert "loss.terms.kd.loss.temperature=0.0, loss.terms.kd.weight=1.0" in message
    assert "dkd" not in message


def test_a_distillation_loss_without_teacher_knowledge_is_refused(digits):
    with pytest.raises(ValueError, match="needs teacher knowledge"):
        trainee = Trainee(MLP(10, 1, 8), digits.train_loader(64, 0), SoftTargetKD())
        fit(trainee, recipe(stage(1)), Job("student", TASK, CPU))
