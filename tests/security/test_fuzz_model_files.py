"""Random files where kdcli expects a model file, a safetensors file or a run's config.yaml:
every reader answers with exit 0 or 2 (a UserError), never another exception, and writes
nothing (hypothesis draws the files; the readers run in process)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdcli.cli.main import main
from kdcli.errors import UserError
from kdcli.models.mlp import MLP
from kdcli.store.checkpoint import read_state_dict, save_model

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
DIGITS = {"name": "digits", "num_classes": 10, "channels": 1, "image_size": 8,
          "mean": [0.5], "std": [0.5], "modality": "image"}  # fmt: skip

# JSON-like values, nested a few levels: what a crafted YAML or JSON file can hold
LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
KEYS = st.sampled_from(["_target_", "_args_", "dataset", "hidden", "root", "augment", "x"])
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def files_in(directory: Path) -> set[Path]:
    return {p for p in directory.rglob("*")}


def genuine_bytes() -> bytes:
    buffer = io.BytesIO()
    model = MLP(10, 1, 8, hidden=[8], dropout=0.0)
    torch.save({"format": "kdcli-model/2", "model": "mlp", "dataset": DIGITS,
                "model_config": {"hidden": [8], "dropout": 0.0},
                "state_dict": model.state_dict()}, buffer)  # fmt: skip
    return buffer.getvalue()


GENUINE = genuine_bytes()
# bytes a reader meets: random, a genuine file cut short or with bytes flipped, a zip of junk
DAMAGED = (
    st.binary(max_size=2048)
    | st.integers(0, len(GENUINE) - 1).map(lambda n: GENUINE[:n])
    | st.tuples(st.integers(0, len(GENUINE) - 1), st.integers(0, 255)).map(
        lambda a: GENUINE[: a[0]] + bytes([a[1]]) + GENUINE[a[0] + 1 :]
    )
)


def zipped(names_and_bytes: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in names_and_bytes.items():
            archive.writestr(name, data)
    return buffer.getvalue()


ARCHIVES = st.dictionaries(
    st.sampled_from(["archive/data.pkl", "archive/version", "archive/data/0", "x/code/a.py"]),
    st.binary(max_size=64),
    max_size=4,
).map(zipped)


@FUZZ
@given(data=DAMAGED | ARCHIVES)
def test_kd_eval_on_any_bytes_exits_0_or_2(tmp_path, capsys, data):
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    before = files_in(tmp_path)
    code = main(["eval", str(path), "--json"])
    assert code in (0, 2), capsys.readouterr().err
    assert files_in(tmp_path) == before


@FUZZ
@given(data=DAMAGED | ARCHIVES)
def test_teacher_checkpoint_reader_on_any_bytes_is_a_user_error(tmp_path, data):
    for name in ("teacher.pt", "teacher.safetensors"):
        path = tmp_path / name
        path.write_bytes(data)
        try:
            read_state_dict(path, "teacher.checkpoint")
        except UserError as error:
            assert "teacher.checkpoint=" in str(error)


@FUZZ
@given(
    data=st.binary(max_size=512)
    | st.builds(lambda v: json.dumps({"__metadata__": v}).encode(), VALUES)
)
def test_kd_eval_on_any_safetensors_bytes_exits_2(tmp_path, capsys, data):
    path = tmp_path / "model.safetensors"
    header = len(data).to_bytes(8, "little")
    path.write_bytes(header + data)
    assert main(["eval", str(path)]) == 2, capsys.readouterr().err


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run") / "student.pt"
    model = MLP(10, 1, 8, hidden=[8], dropout=0.0)
    save_model(path, model, model="mlp", model_config={"hidden": [8], "dropout": 0.0},
               dataset=DIGITS)  # fmt: skip
    return path


@FUZZ
@given(config=VALUES | st.fixed_dictionaries({"dataset": VALUES}))
def test_any_config_yaml_beside_a_checkpoint_exits_0_or_2(student, capsys, config):
    beside = student.parent / "config.yaml"
    beside.write_text(yaml.safe_dump(config))
    before = files_in(student.parent)
    code = main(["eval", str(student), "eval.batch_size=512", "--json"])
    assert code in (0, 2), capsys.readouterr().err
    assert files_in(student.parent) == before
