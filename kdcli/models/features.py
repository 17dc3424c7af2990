"""Intermediate outputs of any model by module path, through forward hooks.

Feature losses name layers (`layer3`, `stage2.1`) instead of changing model code:

    with FeatureTap(model, ["layer3"]) as tap:
        logits = model(x)
        features = tap.outputs   # {"layer3": tensor}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kdcli.errors import UserError


class FeatureTap:
    def __init__(self, model: nn.Module, paths: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        missing = [p for p in paths if p not in modules]
        if missing:
            raise UserError(
                f"layer path(s) {', '.join(missing)} not found in {type(model).__name__}; "
                "`kd list model --layers NAME` shows the paths that can be tapped."
            )
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[p].register_forward_hook(self._saver(p)) for p in paths]

    def _saver(self, path: str):
        def hook(_module, _inputs, output):
            self.outputs[path] = output

        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def layer_shapes(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(path, output shape) of every named submodule whose output is a tensor, in call order."""
    shapes: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for path, module in model.named_modules():
        if not path:
            continue

        def hook(_m, _i, output, path=path):
            if isinstance(output, torch.Tensor):
                shapes.append((path, tuple(output.shape)))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    return shapes
