"""The pipeline's models: torchvision ResNets with the small-input stem, SmallCNN, MLP, taps."""

import pytest
import torch
from omegaconf import OmegaConf

from kdcli.config.build import instantiate_config
from kdcli.data import DatasetInfo
from kdcli.errors import UserError
from kdcli.models.features import FeatureTap, layer_shapes
from kdcli.models.smallcnn import SmallCNN
from kdcli.models.torchvision_models import torchvision_classifier

DIGITS = DatasetInfo("digits", 10, 1, 8, (0.3,), (0.4,))
RGB = DatasetInfo("rgb", 7, 3, 16, (0.5,) * 3, (0.25,) * 3)


@pytest.mark.parametrize("info", [DIGITS, RGB], ids=["1ch-8px", "3ch-16px"])
@pytest.mark.parametrize(
    "target",
    [
        {"_target_": "kdcli.models.torchvision_models.torchvision_classifier", "arch": "resnet18"},
        {"_target_": "kdcli.models.smallcnn.SmallCNN", "width": 8},
        {"_target_": "kdcli.models.mlp.MLP", "hidden": [16]},
    ],
    ids=["resnet18", "smallcnn", "mlp"],
)
def test_models_take_their_shape_from_the_dataset(info, target):
    model = instantiate_config(OmegaConf.create(target), "model", **info.model_kwargs())
    x = torch.randn(2, info.channels, info.image_size, info.image_size)
    out = model(x)
    assert out.shape == (2, info.num_classes)
    out.sum().backward()


def test_small_input_resnet_has_a_3x3_stride_1_stem_and_no_maxpool():
    model = torchvision_classifier("resnet50", num_classes=10, in_channels=1, image_size=8)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.conv1.in_channels == 1
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert model.fc.out_features == 10


def test_imagenet_stem_is_kept_when_asked():
    model = torchvision_classifier(
        "resnet18", num_classes=5, in_channels=3, image_size=64, small_input=False
    )
    assert model.conv1.kernel_size == (7, 7)
    assert isinstance(model.maxpool, torch.nn.MaxPool2d)


def test_feature_tap_returns_outputs_by_module_path():
    model = SmallCNN(10, 1, 8, width=4)
    with FeatureTap(model, ["stage1", "stage2.1"]) as tap:
        model(torch.randn(3, 1, 8, 8))
    assert tap.outputs["stage1"].shape == (3, 4, 4, 4)
    assert tap.outputs["stage2.1"].shape == (3, 8, 4, 4)
    tap.outputs.clear()
    model(torch.randn(3, 1, 8, 8))
    assert tap.outputs == {}, "hooks are removed when the tap closes"


def test_feature_tap_rejects_unknown_paths():
    with pytest.raises(UserError, match="layer9"):
        FeatureTap(SmallCNN(10, 1, 8), ["layer9"])


def test_layer_shapes_lists_paths_in_call_order():
    shapes = dict(layer_shapes(SmallCNN(10, 1, 8, width=4), torch.zeros(1, 1, 8, 8)))
    assert shapes["stage1"] == (1, 4, 4, 4)
    assert shapes["fc"] == (1, 10)
