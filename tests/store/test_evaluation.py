"""The stored evaluation of a cached model (kdcli/store/evaluation.py): read back exactly as
written, and anything damaged or of another shape read as absent (computed again), never a
crash."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdcli.store.evaluation import FIGURES, logits_file, read_evaluation, write_evaluation

SHAPES = {"test": (6, 3), "val": (4, 3)}
FIGURES_IN = {"params": 1200, "flops": 34000, "latency_ms": 0.25, "top1": 0.5}


@pytest.fixture
def stored(tmp_path):
    generator = torch.Generator().manual_seed(0)
    logits = {split: torch.randn(shape, generator=generator) for split, shape in SHAPES.items()}
    write_evaluation(tmp_path, logits, FIGURES_IN)
    return tmp_path, logits


def test_logits_and_costs_read_back_exactly(stored):
    directory, logits = stored
    evaluation = read_evaluation(directory, SHAPES)
    assert evaluation is not None
    for split, values in logits.items():
        assert evaluation.logits[split].dtype == torch.float32
        assert torch.equal(evaluation.logits[split], values)
    assert evaluation.figures == {"params": 1200, "flops": 34000, "latency_ms": 0.25}


def test_a_split_of_another_size_is_not_read(stored):
    directory, _ = stored
    assert read_evaluation(directory, {**SHAPES, "test": (7, 3)}) is None
    assert read_evaluation(directory, {**SHAPES, "train": (6, 3)}) is None  # never stored


def damage_truncated(directory):
    path = directory / logits_file("test")
    path.write_bytes(path.read_bytes()[:100])


def damage_nan(directory):
    array = np.load(directory / logits_file("val"))
    array[0, 0] = np.nan
    np.save(directory / logits_file("val"), array)


def damage_dtype(directory):
    np.save(directory / logits_file("test"), np.zeros((6, 3), np.float64))


def damage_pickle(directory):
    np.save(directory / logits_file("test"), np.array([{"x": 1}], dtype=object))


def damage_figures(directory):
    record = json.loads((directory / FIGURES).read_text())
    record["figures"]["flops"] = "many"
    (directory / FIGURES).write_text(json.dumps(record))


def damage_format(directory):
    (directory / FIGURES).write_text("[1, 2]")


def damage_missing(directory):
    (directory / logits_file("val")).unlink()


@pytest.mark.parametrize(
    "damage",
    [damage_truncated, damage_nan, damage_dtype, damage_pickle, damage_figures, damage_format,
     damage_missing],
)  # fmt: skip
def test_a_damaged_evaluation_reads_as_absent(stored, damage, caplog):
    directory, _ = stored
    damage(directory)
    assert read_evaluation(directory, SHAPES) is None
    assert "computing it again" in caplog.text


def test_a_header_claiming_a_huge_array_is_read_as_absent_without_allocating_it(stored):
    """A logits file whose header claims 10^12 rows is refused from its header (mapped, not
    read), not met as a MemoryError."""
    directory, _ = stored
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = (10**12, 3)
    with open(directory / logits_file("test"), "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
    assert read_evaluation(directory, SHAPES) is None
