"""Any torchvision classifier by name: head and stem adapted to the dataset, ImageNet weights
from the torch hub cache, and the errors when a name or the weights are wrong."""

from __future__ import annotations

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from kdcli.config.checks import check_overrides
from kdcli.config.paths import config_dir
from kdcli.data import DatasetInfo
from kdcli.errors import UserError
from kdcli.models.torchvision_models import torchvision_classifier, weights_path

CIFAR100 = DatasetInfo("cifar100", 100, 3, 32, (0.5,) * 3, (0.25,) * 3)
DIGITS = DatasetInfo("digits", 10, 1, 8, (0.3,), (0.4,))
SHORT_CONFIGS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
)


def build(overrides: list[str], info: DatasetInfo, role: str = "teacher") -> nn.Module:
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return instantiate(cfg[role].model, **info.model_kwargs())


@pytest.mark.parametrize("option", SHORT_CONFIGS)
def test_short_config_trains_a_step_at_digits_size(option):
    """At the default dataset's size (digits: 8x8 grayscale, 10 classes)."""
    model = build([f"teacher={option}"], DIGITS).train()
    logits = model(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 10)
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("option", SHORT_CONFIGS)
def test_short_config_fits_cifar(option):
    with torch.device("meta"):
        model = build([f"student={option}"], CIFAR100, role="student").eval()
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.stride == (1, 1) and first_conv.kernel_size == (3, 3)
    assert first_conv.in_channels == 3


def test_a_small_one_trains_a_step_at_cifar_size():
    model = build(["teacher=mobilenet_v3_small"], CIFAR100).train()
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100)
    logits.logsumexp(1).sum().backward()


def test_any_classifier_by_name():
    model = build(["teacher=torchvision", "teacher.name=squeezenet1_0"], DIGITS)
    assert isinstance(model, torchvision.models.SqueezeNet)
    model = build(["teacher=torchvision", "teacher.name=regnet_x_400mf"], DIGITS).eval()
    assert isinstance(model, torchvision.models.RegNet)
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_small_input_drops_the_resnet_max_pool_and_keeps_parameters():
    adapted = torchvision_classifier("resnet18", 10, 3, 32, small_input=True)
    assert isinstance(adapted.maxpool, nn.Identity)
    assert adapted.conv1.stride == (1, 1)
    plain = torchvision_classifier("resnet18", 10, 3, 224, small_input=False)
    assert isinstance(plain.maxpool, nn.MaxPool2d) and plain.conv1.kernel_size == (7, 7)
    grey = torchvision_classifier("resnet18", 10, 1, 224, small_input=False)
    assert grey.conv1.in_channels == 1 and grey.conv1.stride == (2, 2)


def test_bn_momentum_sets_every_batch_norm_layer():
    def momenta(model: nn.Module) -> set[float]:
        return {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}

    assert momenta(torchvision_classifier("mobilenet_v3_small", 10, 1, 8)) == {0.01}
    tuned = torchvision_classifier("mobilenet_v3_small", 10, 1, 8, bn_momentum=0.1)
    assert momenta(tuned) == {0.1}
    assert momenta(build(["teacher=mobilenet_v3_large"], DIGITS)) == {0.1}


def test_a_head_trained_from_scratch_has_nn_linear_default_init():
    # torchvision's own EfficientNet head init is uniform(+-1/sqrt(10)) for 10 classes
    head = torchvision_classifier("efficientnet_b0", 10, 1, 8).classifier[-1]
    assert head.weight.abs().max() <= 1 / head.in_features**0.5


def stride_two_convs(model: nn.Module) -> list[str]:
    return [p for p, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "efficientnet_b0", "mnasnet0_5"])
def test_small_input_keeps_inverted_residual_nets_at_full_size_through_the_first_block(arch):
    plain = torchvision_classifier(arch, 10, 3, 224, small_input=False)
    adapted = torchvision_classifier(arch, 10, 1, 8).eval()
    # the stem's and the first block's stride are gone, the later ones are kept
    assert stride_two_convs(adapted) == stride_two_convs(plain)[2:]
    with torch.no_grad():
        assert adapted(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_unknown_name_suggests_close_ones():
    with pytest.raises(UserError, match="efficientnet_b0"):
        torchvision_classifier("efficientnet_bo", 10, 3, 32)


def test_name_is_required_for_the_generic_config():
    with pytest.raises(UserError, match="teacher.name"):
        check_overrides(["teacher=torchvision"])


def test_pretrained_only_for_models_that_have_weights():
    with pytest.raises(UserError, match="teacher.pretrained=true: teacher=resnet8"):
        check_overrides(["teacher=resnet8", "teacher.pretrained=true"])


def test_pretrained_is_in_the_teacher_fingerprint_input():
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["teacher=resnet18", "teacher.pretrained=true"])
    from kdcli.pipeline.common import to_container

    assert to_container(cfg.teacher.model)["pretrained"] is True


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def test_pretrained_loads_cached_weights_and_renews_head_and_stem(torch_home):
    torch.manual_seed(0)
    imagenet = torchvision.models.mobilenet_v3_small()
    path = weights_path("mobilenet_v3_small")
    assert path.parent == torch_home / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.save(imagenet.state_dict(), path)
    model = torchvision_classifier("mobilenet_v3_small", 10, 1, 8, pretrained=True)
    kept = model.features[1].block[0][0].weight
    assert torch.equal(kept, imagenet.features[1].block[0][0].weight)
    assert model.classifier[3].out_features == 10
    assert model.features[0][0].in_channels == 1
    with torch.device("meta"):  # how validation builds it: a shape check, no copying
        torchvision_classifier("mobilenet_v3_small", 10, 1, 8, pretrained=True)


def test_pretrained_weights_that_do_not_fit(torch_home):
    path = weights_path("mobilenet_v3_small")
    path.parent.mkdir(parents=True)
    torch.save({"features.0.0.weight": torch.zeros(1)}, path)
    with pytest.raises(UserError, match="does not fit mobilenet_v3_small"):
        torchvision_classifier("mobilenet_v3_small", 10, 3, 32, pretrained=True)


def test_pretrained_offline_without_cache_exits_2_naming_the_path(kd, tmp_path):
    env = {
        "TORCH_HOME": str(tmp_path / "torch"),
        # a proxy that refuses connections makes the download fail fast, online or not
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    done = kd(
        "train",
        "teacher=mobilenet_v3_small",
        "teacher.pretrained=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        env=env,
    )
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    assert done.returncode == 2, done.stderr
    assert str(expected) in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_zero_init_residual_starts_every_bottleneck_as_the_identity():
    model = torchvision_classifier("resnet50", 10, 1, 8, zero_init_residual=True)
    last_norms = [block.bn3.weight for layer in (model.layer1, model.layer4) for block in layer]
    assert all(float(w.abs().sum()) == 0 for w in last_norms)
    plain = torchvision_classifier("resnet50", 10, 1, 8)
    assert float(plain.layer1[0].bn3.weight.abs().sum()) > 0
