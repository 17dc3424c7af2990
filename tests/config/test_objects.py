"""The run's objects (kdcli/config/objects.py): in-memory data is decoded once per process for
the same `dataset.*` settings (the points of a `-m` sweep share it), and anew for others."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from kdcli.config import objects
from kdcli.data.base import DatasetInfo
from kdcli.data.memory import InMemoryDataset, Split

INFO = DatasetInfo("tiny", 2, 1, 4, (0.5,), (0.5,))
CPU = torch.device("cpu")


class Source:
    """A data source that counts its loads."""

    def __init__(self) -> None:
        self.loads = 0

    def load(self) -> InMemoryDataset:
        self.loads += 1
        split = Split(torch.zeros(4, 1, 4, 4, dtype=torch.uint8), torch.zeros(4).long())
        return InMemoryDataset(INFO, split, split, None)


@pytest.fixture(autouse=True)
def empty_memo(monkeypatch):
    monkeypatch.setattr(objects, "LOADED", {})


def config(**dataset) -> OmegaConf:
    return OmegaConf.create({"dataset": {"_target_": "tiny", "val_fraction": 0.0, **dataset}})


def test_the_same_dataset_settings_decode_once_per_process():
    source = Source()
    first = objects.loaded(source, config(), CPU)
    assert objects.loaded(source, config(), CPU) is first
    assert source.loads == 1


def test_other_dataset_settings_decode_again():
    source = Source()
    objects.loaded(source, config(), CPU)
    objects.loaded(source, config(val_fraction=0.2), CPU)
    objects.loaded(source, config(), CPU)  # one dataset is kept at a time
    assert source.loads == 3
