"""configs/experiment/: the CIFAR-100 benchmark pairs compose with the benchmarks' recipe."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from kdcli.config.checks import check_overrides, group_options
from kdcli.config.paths import config_dir
from kdcli.errors import UserError

PAIRS = {
    "cifar100_resnet32x4_resnet8x4": ("resnet32x4", "resnet8x4", 0.05),
    "cifar100_wrn_40_2_wrn_16_2": ("wrn_40_2", "wrn_16_2", 0.05),
    "cifar100_resnet56_resnet20": ("resnet56", "resnet20", 0.05),
    "cifar100_vgg13_vgg8": ("vgg13", "vgg8", 0.05),
    "cifar100_resnet32x4_shufflenetv2": ("resnet32x4", "shufflenetv2", 0.01),
    "cifar100_wrn_40_2_wrn_40_1": ("wrn_40_2", "wrn_40_1", 0.05),
}


def test_every_pair_has_a_config():
    assert set(group_options("experiment")) >= set(PAIRS)


@pytest.mark.parametrize("experiment", sorted(PAIRS))
def test_recipe(experiment):
    teacher, student, student_lr = PAIRS[experiment]
    # dataset=digits stands in for cifar100 so that only the recipe is checked here
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", "dataset=digits"])
    assert (cfg.teacher.name, cfg.student.name) == (teacher, student)
    for stage, lr in ((cfg.teacher, 0.05), (cfg.student, student_lr)):
        assert (stage.epochs, stage.batch_size) == (240, 64)
        assert stage.optimizer._target_ == "torch.optim.SGD"
        assert (stage.optimizer.lr, stage.optimizer.momentum) == (lr, 0.9)
        assert stage.optimizer.weight_decay == 5e-4 and not stage.optimizer.nesterov
        assert stage.scheduler._target_ == "torch.optim.lr_scheduler.MultiStepLR"
        assert list(stage.scheduler.milestones) == [150, 180, 210]
        assert stage.scheduler.gamma == 0.1
    assert (cfg.loss.temperature, cfg.loss.alpha) == (4.0, 0.9)


@pytest.mark.parametrize("experiment", sorted(PAIRS))
def test_picks_cifar100(experiment):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    assert "cifar" in cfg.dataset._target_.lower()


def test_kd_train_composes_an_experiment(kd):
    done = kd("train", "experiment=cifar100_resnet32x4_resnet8x4", "--cfg", "job")
    assert done.returncode == 0, done.stderr
    assert "resnet32x4" in done.stdout and "milestones" in done.stdout


def test_kd_train_checks_an_experiment_with_another_dataset(kd):
    """The experiment's defaults and a command-line dataset go through kd's own checks."""
    done = kd("train", "experiment=cifar100_vgg13_vgg8", "dataset=digits", "--cfg", "job")
    assert done.returncode == 0, done.stderr
    assert "name: vgg13" in done.stdout and "lr: 0.05" in done.stdout


def test_unknown_experiment_suggests_close_ones():
    with pytest.raises(UserError, match="cifar100_vgg13_vgg8"):
        check_overrides(["experiment=cifar100_vgg13_vgg9"])
