"""Datasets: each config in `configs/dataset/` instantiates a source with `.info` and `.load()`."""

from kdcli.data.memory import Batch, DatasetInfo, EpochLoader, InMemoryDataset, Split

__all__ = ["Batch", "DatasetInfo", "EpochLoader", "InMemoryDataset", "Split"]
