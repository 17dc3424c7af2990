"""Datasets: each config in `configs/dataset/` instantiates a source with `.info` and `.load()`."""

from kdcli.data.base import Batch, Dataset, DatasetInfo, DataSource, Loader
from kdcli.data.memory import EpochLoader, InMemoryDataset, Split

__all__ = [
    "Batch",
    "Dataset",
    "DatasetInfo",
    "DataSource",
    "EpochLoader",
    "InMemoryDataset",
    "Loader",
    "Split",
]
