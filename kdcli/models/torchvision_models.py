"""Any torchvision classifier by name, sized for the dataset, optionally ImageNet-pretrained.

`torchvision_classifier(arch="efficientnet_b0", ...)` builds `torchvision.models.<arch>` with
`num_classes` outputs. Two adaptations make ImageNet architectures fit small images:

- `small_input=True` replaces the stem's first convolution by a 3x3 stride-1 one and drops
  a max-pool that follows it (ResNets), so a 32x32 image is not shrunk 4x (or 32x) at once;
  in MobileNetV2/V3, EfficientNet and MNASNet, whose stems are one stride-2 convolution, the
  first stride-2 block runs at stride 1 as well. On the 8x8 digits, MobileNetV3-small left at
  4x4 after its first block reaches 52 % test top-1 after 9 epochs, 97 % with it at 8x8;
- a dataset with other than 3 channels gets a first convolution with that many inputs.

A model trained from scratch gets its head (the last `nn.Linear`) initialised like any new
`nn.Linear`, as a pretrained one does: torchvision draws EfficientNet's head from
uniform(+-1/sqrt(num_classes)), sized for 1,000 classes; with 10 its first logits have a
standard deviation near 5 and the loss starts at 6 instead of ln 10 = 2.3.

`bn_momentum` sets the momentum of every batch-norm layer's running statistics. MobileNetV3
(0.01) and MNASNet (0.0003) keep ImageNet-length averages that lag far behind the weights in a
run of a few hundred steps: trained on digits, MobileNetV3 reaches 89 % train top-1 but predicts
one class in eval mode (9.7 % test). Their configs set it to 0.1, PyTorch's default.

`zero_init_residual=True` (ResNets, torchvision's own option) starts the last batch norm of
every residual branch at zero, so each block starts as the identity and a deep network starts
as a shallow one (Goyal et al. 2017).

`pretrained=True` loads torchvision's ImageNet weights (its DEFAULT set) from the torch hub
cache (`$TORCH_HOME/hub/checkpoints/`, downloading them there when online), then puts a new,
randomly initialised head (the last `nn.Linear`) of `num_classes` outputs on top. A replaced
first convolution starts from random weights too; everything else keeps ImageNet's.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from kdcli.errors import UserError, did_you_mean

# Their stems shrink an image 2x and their first stride-2 block 2x more, where a ResNet's stem
# convolution and max-pool do: `small_input` undoes both. Their stride-2 blocks have a single
# path (no shortcut), so one convolution carries the stride.
INVERTED_RESIDUAL_NETS = (
    torchvision.models.MobileNetV2,
    torchvision.models.MobileNetV3,
    torchvision.models.EfficientNet,
    torchvision.models.MNASNet,
)


def classifier_names() -> list[str]:
    """The classification models torchvision offers (not detection, segmentation, video)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _check_arch(arch: str) -> None:
    names = classifier_names()
    if arch not in names:
        hint = did_you_mean(arch, names)
        raise UserError(
            f"torchvision has no classifier named {arch!r}.{hint} Choose one of "
            f"torchvision.models.list_models(module=torchvision.models), e.g. "
            f"teacher=torchvision teacher.name=efficientnet_b0."
        )


def weights_path(arch: str) -> Path:
    """Where torch's hub cache keeps torchvision's default ImageNet weights for `arch`."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    file_name = Path(urlparse(weights.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for `arch`, from the hub cache or downloaded into it."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    path = weights_path(arch)
    cached = path.is_file()
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, map_location="cpu", check_hash=True, weights_only=True
        )
    except Exception as error:  # offline (URLError), bad file (pickle or zip errors), ...
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
        if cached:
            raise UserError(
                f"pretrained=true: {path} (ImageNet weights for {arch}) could not be read "
                f"({reason}). Delete it to download it again, or put a good copy of "
                f"{weights.url} there."
            ) from None
        raise UserError(
            f"pretrained=true: the ImageNet weights for {arch} are not cached and could not be "
            f"downloaded ({reason}). Put {weights.url} at {path} (the directory follows "
            "TORCH_HOME), or set pretrained=false."
        ) from None


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, name, module)


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first convolution and its path, or None."""
    convs = ((path, m) for path, m in model.named_modules() if isinstance(m, nn.Conv2d))
    return next(convs, None)


def adapt_stem(model: nn.Module, in_channels: int, small_input: bool) -> None:
    """Replace the first convolution for small images and/or another channel count."""
    first = _first_conv(model)
    if first is None:
        raise UserError(
            f"{type(model).__name__} has no Conv2d stem to adapt; set small_input=false."
        )
    conv_path, conv = first
    if small_input:
        new_conv = nn.Conv2d(
            in_channels, conv.out_channels, 3, 1, padding=1, bias=conv.bias is not None
        )
        _drop_stem_max_pool(model, conv_path)
        if isinstance(model, INVERTED_RESIDUAL_NETS):
            _first_stride_two_conv(model, after=conv_path).stride = (1, 1)
    else:
        new_conv = nn.Conv2d(
            in_channels,
            conv.out_channels,
            _pair(conv.kernel_size),
            _pair(conv.stride),
            conv.padding if isinstance(conv.padding, str) else _pair(conv.padding),
            bias=conv.bias is not None,
        )
    _set_submodule(model, conv_path, new_conv)


def _pair(size: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's size setting (torch types the attributes tuple[int, ...]; they hold two)."""
    height, width = size
    return height, width


def _first_stride_two_conv(model: nn.Module, after: str) -> nn.Conv2d:
    """The first stride-2 convolution after the module at path `after`."""
    modules = list(model.named_modules())
    start = [path for path, _ in modules].index(after) + 1
    for _, module in modules[start:]:
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            return module
    raise UserError(f"{type(model).__name__} has no stride-2 convolution after its stem.")


def _drop_stem_max_pool(model: nn.Module, conv_path: str) -> None:
    """Replace a max-pool that comes after the first convolution and before the second."""
    seen_first_conv = False
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if seen_first_conv:
                return
            seen_first_conv = path == conv_path
        elif seen_first_conv and isinstance(module, nn.MaxPool2d):
            _set_submodule(model, path, nn.Identity())
            return


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Put a new `nn.Linear` with `num_classes` outputs where the model's last one was."""
    heads = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise UserError(f"{type(model).__name__} has no nn.Linear head to resize.")
    head_path, head = heads[-1]
    _set_submodule(model, head_path, nn.Linear(head.in_features, num_classes))


def torchvision_classifier(
    arch: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    small_input: bool = True,
    pretrained: bool = False,
    bn_momentum: float | None = None,
    zero_init_residual: bool = False,
) -> nn.Module:
    """`torchvision.models.<arch>` for the dataset; `image_size` does not change the layout.
    `bn_momentum=None` keeps torchvision's batch-norm momentum."""
    _check_arch(arch)
    if pretrained:
        model = torchvision.models.get_model(arch, weights=None)
        state_dict = imagenet_state_dict(arch)
        # validation builds models on the meta device, where copying weights in is a no-op
        on_meta = any(p.is_meta for p in model.parameters())
        try:
            model.load_state_dict(state_dict, assign=on_meta)
        except RuntimeError as error:
            raise UserError(
                f"pretrained=true: {weights_path(arch)} does not fit {arch} "
                f"({' '.join(str(error).split())[:200]}); delete it to download it again."
            ) from None
        replace_head(model, num_classes)
    else:
        options = {"zero_init_residual": True} if zero_init_residual else {}
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **options)
        heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if heads:
            heads[-1].reset_parameters()
    if small_input or in_channels != 3:
        adapt_stem(model, in_channels, small_input)
    if bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = bn_momentum
    return model
