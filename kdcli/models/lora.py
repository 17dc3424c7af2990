"""LoRA adapters (Hu et al. 2021) through peft: `student.lora` (the optional extra `kdcli[lora]`).

Each named layer W (a Linear, an Embedding, a convolution, or transformers' Conv1D) gets a
low-rank update, W + (alpha / r) * B A with A [r, in] and B [out, r] (B starts at zero, so the
model starts as it was); only A and B are trained, every weight of the model itself is frozen.
When training ends the update is merged into W (`Adapters.merge`): the model is again the
plain architecture, with the plain state_dict, so its model file loads wherever any other
does (kd eval, kd export rebuild the model from its config).

Layers are named as peft names them: a name matches every layer whose path is that name or
ends with `.name`, so `qkv` adapts `blocks.0.qkv` and `blocks.1.qkv` of the built-in GPT and
`mlp.0` its MLPs' first Linear. A layer whose weight another layer shares (the GPT's output
head is its token embedding) is not adaptable: the merged update would change both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

ADAPTABLE = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV1D = "Conv1D"  # transformers' GPT-2 layer (a Linear stored transposed), found by name
SETTINGS = ("r", "alpha", "dropout", "target_modules")


@dataclass(frozen=True)
class Lora:
    """What `student.lora` asks for: rank `r`, scale `alpha` (the update is multiplied by
    alpha / r), dropout on the adapters' input, and the layers adapted (`targets`, sorted)."""

    targets: tuple[str, ...]
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0

    @classmethod
    def from_settings(cls, settings: Any) -> Lora | None:
        """The settings of `student.lora` (a mapping of plain values, checked by
        kdcli/config/values.py), with the defaults of those not given; None for null."""
        if settings is None:
            return None
        if not isinstance(settings, Mapping):
            raise ValueError(f"LoRA settings are a mapping, not {settings!r}")
        defaults = cls(())
        return cls(
            tuple(sorted(set(settings.get("target_modules") or ()))),
            int(settings.get("r", defaults.r)),
            float(settings.get("alpha", defaults.alpha)),
            float(settings.get("dropout", defaults.dropout)),
        )


def matches(path: str, target: str) -> bool:
    """Whether `target` names the layer at `path` (peft's rule for a list of names)."""
    return path == target or path.endswith(f".{target}")


def _adaptable(module: nn.Module) -> bool:
    return isinstance(module, ADAPTABLE) or type(module).__name__ == CONV1D


def tied_layers(model: nn.Module) -> dict[str, str]:
    """Layer path -> the path of another layer that holds the same weight (tied)."""
    owners: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        layer, _, kind = name.rpartition(".")
        if kind == "weight":
            owners.setdefault(id(parameter), []).append(layer)
    return {
        layer: next(other for other in layers if other != layer)
        for layers in owners.values()
        if len(layers) > 1
        for layer in layers
    }


def adaptable_layers(model: nn.Module) -> list[str]:
    """The paths of the layers LoRA can adapt (of a supported kind, their weight not tied)."""
    tied = tied_layers(model)
    return [path for path, m in model.named_modules() if _adaptable(m) and path not in tied]


def short_names(paths: Sequence[str]) -> list[str]:
    """The shortest names that match each path, in order, once each: `blocks.0.mlp.0` ->
    `mlp.0` (a name that is only a number would match a layer of every Sequential)."""
    names: list[str] = []
    for path in paths:
        parts = path.split(".")
        for first in range(len(parts) - 1, -1, -1):
            if not parts[first].isdigit():
                name = ".".join(parts[first:])
                if name not in names:
                    names.append(name)
                break
    return names


def target_problem(model: nn.Module, targets: Sequence[str]) -> str | None:
    """Why `targets` cannot be adapted in `model` (a name that matches no adaptable layer, or
    only a tied one), else None."""
    if not targets:
        return "no layers are named"
    tied = tied_layers(model)
    layers = adaptable_layers(model)
    for target in targets:
        if any(matches(path, target) for path in layers):
            continue
        shared = [path for path in tied if matches(path, target)]
        if shared:
            return (
                f"'{target}' names {shared[0]}, which shares its weight with {tied[shared[0]]} "
                "(tied): merging an adapter into it would change both"
            )
        return f"no layer that LoRA can adapt is named '{target}'"
    return None


class Adapters:
    """LoRA adapters attached to `model` in place (its class, and the paths of its layers,
    stay): only the adapters' parameters require gradients until `merge`."""

    def __init__(self, model: nn.Module, lora: Lora) -> None:
        from peft import LoraConfig, LoraModel

        self.model = model
        self.frozen = [(p, p.requires_grad) for p in model.parameters()]
        matched = [m for path, m in model.named_modules() if _matched(path, lora.targets)]
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,  # type: ignore[arg-type]  # typed int; alpha / r either way
            lora_dropout=lora.dropout,
            target_modules=list(lora.targets),
            # transformers' Conv1D stores its weight transposed (peft would warn and set it)
            fan_in_fan_out=any(type(m).__name__ == CONV1D for m in matched),
        )
        self.tuner = LoraModel(model, config, "default")

    def merge(self) -> nn.Module:
        """Fold the adapters into the weights and remove them: `model` is the plain
        architecture again, every parameter trainable as before."""
        self.tuner.merge_and_unload()
        for parameter, trainable in self.frozen:
            parameter.requires_grad_(trainable)
        return self.model


def _matched(path: str, targets: Sequence[str]) -> bool:
    return any(matches(path, target) for target in targets)
