"""The CIFAR benchmark family: every config builds, trains a step at CIFAR size and at digits
size, and has the parameter count the CRD/DKD benchmarks report."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from kdcli.config.paths import config_dir
from kdcli.data import DatasetInfo
from kdcli.engine.measure import count_params
from kdcli.errors import UserError
from kdcli.models.cifar.mobilenetv2 import MobileNetV2
from kdcli.models.cifar.resnet import CifarResNet
from kdcli.models.cifar.vgg import VGG
from kdcli.models.cifar.wrn import WideResNet

CIFAR100 = DatasetInfo("cifar100", 100, 3, 32, (0.5,) * 3, (0.25,) * 3)
DIGITS = DatasetInfo("digits", 10, 1, 8, (0.3,), (0.4,))

# Parameters at 100 classes, as reported by the CRD (Tian et al. 2020) and DKD (Zhao et al.
# 2022) benchmarks, in millions to their precision; resnet110 and the VGG-11/16/19,
# WRN-16-1 and WRN-40-1 figures are the ones these definitions give (same layouts).
PUBLISHED_MILLIONS = {
    "resnet8": 0.08,
    "resnet14": 0.18,
    "resnet20": 0.28,
    "resnet32": 0.47,
    "resnet44": 0.67,
    "resnet56": 0.86,
    "resnet110": 1.74,
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_16_1": 0.18,
    "wrn_16_2": 0.70,
    "wrn_40_1": 0.57,
    "wrn_40_2": 2.26,
    "vgg8": 3.97,
    "vgg11": 9.28,
    "vgg13": 9.46,
    "vgg16": 14.77,
    "vgg19": 20.09,
    "mobilenetv2": 0.81,
    "shufflenetv1": 0.95,
    "shufflenetv2": 1.36,
    "resnet50_cifar": 23.71,
}
# Exact counts of this implementation at 100 classes, so a change to any layer shows.
EXACT = {
    "resnet8": 83_892,
    "resnet20": 278_324,
    "resnet56": 861_620,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_2": 703_284,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg13": 9_462_180,
    "mobilenetv2": 812_836,
    "shufflenetv1": 949_258,
    "shufflenetv2": 1_355_528,
}


def build(option: str, info: DatasetInfo) -> torch.nn.Module:
    """The `student=<option>` config's model for a dataset, as the pipeline builds it."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"student={option}"])
    return instantiate(cfg.student.model, **info.model_kwargs())


@pytest.mark.parametrize("option", sorted(PUBLISHED_MILLIONS))
def test_trains_a_step_at_cifar_size(option):
    torch.manual_seed(0)
    model = build(option, CIFAR100).train()
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100)
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert round(count_params(model) / 1e6, 2) == PUBLISHED_MILLIONS[option]


@pytest.mark.parametrize("option", sorted(EXACT))
def test_exact_parameter_count(option):
    with torch.device("meta"):
        model = build(option, CIFAR100)
    assert count_params(model) == EXACT[option]


@pytest.mark.parametrize("option", sorted(PUBLISHED_MILLIONS))
def test_runs_on_8x8_grayscale(option):
    model = build(option, DIGITS).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_options_have_teacher_and_student_configs():
    for option in PUBLISHED_MILLIONS:
        for group in ("model", "teacher", "student"):
            assert (config_dir() / group / f"{option}.yaml").is_file(), (group, option)


def test_vgg_pools_a_fourth_time_from_64_pixels():
    small = VGG(10, 3, 32, blocks=[[8], [8], [8], [8], [8]])
    large = VGG(10, 3, 64, blocks=[[8], [8], [8], [8], [8]])
    assert not hasattr(small.features, "pool3")
    assert large(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_mobilenetv2_stem_strides_2_from_16_pixels_and_1_below():
    assert MobileNetV2(10, 3, 32).conv1[0].stride == (2, 2)
    assert MobileNetV2(10, 1, 16).conv1[0].stride == (2, 2)
    digits = MobileNetV2(10, 1, 8)
    assert digits.conv1[0].stride == (1, 1)
    assert digits(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert MobileNetV2(10, 1, 8, stem_stride=2).conv1[0].stride == (2, 2)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CifarResNet(10, 3, 32, depth=21),
        lambda: CifarResNet(10, 3, 32, widths=[16, 32]),
        lambda: WideResNet(10, 3, 32, depth=17),
        lambda: VGG(10, 3, 32, blocks=[[64]]),
    ],
)
def test_bad_layout_is_a_user_error(make):
    with pytest.raises(UserError, match="model\\."):
        make()


def test_shufflenetv1_zero_init_starts_its_stride_one_units_as_the_identity():
    from kdcli.models.cifar.shufflenet import ShuffleNetV1, ShuffleUnitV1

    model = ShuffleNetV1(10, 1, 8, zero_init_residual=True).eval()
    units = [m for m in model.modules() if isinstance(m, ShuffleUnitV1)]
    x = torch.randn(2, 240, 4, 4).abs()  # after a ReLU: the identity keeps it
    assert torch.allclose(model.layer1[1](x), x)
    assert sum(unit.stride == 1 for unit in units) == 13
