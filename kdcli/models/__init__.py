"""Models. Every config in `configs/model/` is a `_target_` that takes the dataset's facts:
`build_model(cfg, info)` calls it with `num_classes`, `in_channels` and `image_size`."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from kdcli.data import DatasetInfo


def build_model(model_cfg: DictConfig, info: DatasetInfo) -> nn.Module:
    """Instantiate a model config for a dataset; configs never hard-code dataset facts."""
    return instantiate(model_cfg, **info.model_kwargs())
