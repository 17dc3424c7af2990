"""Files from anyone name no code (kdcli/store/plain.py, kdcli/config/from_files.py): each
attack below, crafted as a colleague's file could be, makes the real `kd` command exit 2
without running anything. Each payload, built by Hydra's `instantiate` or unpickled, would
create MARKER; no test may find it."""

from __future__ import annotations

import json
import pathlib
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from kd_command import Result, run_kd
from kd_settings import TINY

from kdcli.cli.main import main
from kdcli.models.mlp import MLP
from kdcli.store.checkpoint import save_model

DIGITS = {"name": "digits", "num_classes": 10, "channels": 1, "image_size": 8,
          "mean": [0.5], "std": [0.5], "modality": "image"}  # fmt: skip


def touch(marker: Path) -> dict:
    """A `_target_` chain that creates `marker`: Hydra builds the nested nodes first, so it
    runs even where the outer call then fails. Hydra's blocklist does not stop it."""
    return {"_target_": "pathlib.Path.touch",
            "self": {"_target_": "pathlib.Path", "_args_": [str(marker)]}}  # fmt: skip


class Touch:
    """A pickle that creates the marker when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def genuine(path: Path) -> Path:
    """A real kdcli model file (an MLP student for digits)."""
    model = MLP(10, 1, 8, hidden=[8], dropout=0.0)
    save_model(path, model, model="mlp", model_config={"hidden": [8], "dropout": 0.0},
               dataset=DIGITS)  # fmt: skip
    return path


def chained_checkpoint(path: Path, marker: Path) -> Path:
    """What kdcli 0.1 read as a model config: a kdcli-model/1 file (it passes
    `torch.load(weights_only=True)`) whose model config hides a chain in a value."""
    model = MLP(10, 1, 8, hidden=[8], dropout=0.0)
    torch.save({"format": "kdcli-model/1", "dataset": DIGITS, "state_dict": model.state_dict(),
                "model_config": {"_target_": "kdcli.models.mlp.MLP", "dropout": 0.0,
                                 "hidden": touch(marker)}}, path)  # fmt: skip
    return path


def refused(result: Result, marker: Path, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("kd: error:")
    for word in words:
        assert word in result.stderr
    assert not marker.exists(), "the file's code ran"


def test_kd_eval_and_kd_export_refuse_a_target_chain_in_a_checkpoint(tmp_path):
    marker = tmp_path / "MARKER"
    evil = chained_checkpoint(tmp_path / "evil.pt", marker)
    refused(run_kd("eval", str(evil), cwd=tmp_path), marker, "model_config.hidden._target_")
    refused(run_kd("export", str(evil), cwd=tmp_path), marker, "model_config.hidden._target_")


def test_a_config_yaml_beside_a_genuine_checkpoint_builds_nothing_it_names(tmp_path):
    marker = tmp_path / "MARKER"
    run = tmp_path / "run"
    run.mkdir()
    student = genuine(run / "student.pt")
    dataset = {"_target_": "kdcli.data.digits.Digits", "augment": touch(marker)}
    (run / "config.yaml").write_text(yaml.safe_dump({"dataset": dataset}))
    refused(run_kd("eval", str(student), cwd=tmp_path), marker, "config.yaml", "dataset.augment")


def test_a_cache_manifest_pointing_at_a_crafted_run_builds_nothing(tmp_path):
    marker = tmp_path / "MARKER"
    entry = tmp_path / "cache" / "teachers" / "mlp-0123456789abcdef"
    entry.mkdir(parents=True)
    model = genuine(entry / "model.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.yaml").write_text(yaml.safe_dump({"dataset": touch(marker)}))
    (entry / "manifest.json").write_text(json.dumps({"made_by": {"run_dir": str(elsewhere)}}))
    refused(run_kd("eval", str(model), cwd=tmp_path), marker, "dataset._target_")


def test_experimental_rerun_is_refused_before_the_pickle_is_read(tmp_path):
    marker = tmp_path / "MARKER"
    (tmp_path / "x.pickle").write_bytes(pickle.dumps(Touch(marker)))
    result = run_kd("train", "--experimental-rerun", "x.pickle", cwd=tmp_path)
    refused(result, marker, "--experimental-rerun", "unpickles")


def test_a_pickle_in_a_checkpoint_is_not_unpickled_by_kd_eval_or_teacher_checkpoint(tmp_path):
    marker = tmp_path / "MARKER"
    torch.save({"state_dict": Touch(marker)}, tmp_path / "evil.pt")
    refused(run_kd("eval", "evil.pt", cwd=tmp_path), marker, "checkpoint=evil.pt")
    train = run_kd("train", *TINY, "teacher.checkpoint=evil.pt", cwd=tmp_path)
    refused(train, marker, "teacher.checkpoint=evil.pt")
    assert not (tmp_path / "outputs" / "runs").exists(), "a refused run leaves no run directory"


def test_safetensors_metadata_naming_code_is_refused(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    marker = tmp_path / "MARKER"
    model = MLP(10, 1, 8, hidden=[8], dropout=0.0)
    weights = {f"model.{k}": v for k, v in model.state_dict().items()}
    metadata = {"format": "kdcli-deployable/1", "model": json.dumps("mlp"),
                "model_config": json.dumps({"hidden": touch(marker), "dropout": 0.0}),
                "dataset_info": json.dumps(DIGITS)}  # fmt: skip
    safetensors.save_file(weights, str(tmp_path / "evil.safetensors"), metadata=metadata)
    refused(run_kd("eval", "evil.safetensors", cwd=tmp_path), marker, "model_config.hidden")


def test_a_torchscript_file_is_named_a_program(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(64, 10)), str(tmp_path / "model.ts"))
    result = run_kd("eval", "model.ts", cwd=tmp_path)
    assert result.returncode == 2 and "is TorchScript, a program" in result.stderr


@pytest.mark.parametrize(
    "model_config, named",
    [
        ({"hidden": [8], "dropout": 0.0, "_target_": "kdcli.models.mlp.MLP"}, "_target_"),
        ({"hidden": [8], "dropout": 0.0, "_partial_": True}, "_partial_"),
        ({"hidden": {"_args_": [1]}, "dropout": 0.0}, "hidden._args_"),
        ({"hidden": "${oc.env:HOME}", "dropout": 0.0}, "interpolation"),
        ({"hidden": [8], "dropout": 0.0, "extra": 1}, "model_config.extra is not a setting"),
    ],
)
def test_any_code_key_or_interpolation_in_a_model_file_is_refused(
    tmp_path, capsys, model_config, named
):
    path = tmp_path / "student.pt"
    model = MLP(10, 1, 8, hidden=[8], dropout=0.0)
    save_model(path, model, model="mlp", model_config=model_config, dataset=DIGITS)
    assert main(["eval", str(path)]) == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize("option", ["../model/mlp", "os.system", "nothing"])
def test_a_model_option_that_is_not_a_kdcli_config_is_refused(tmp_path, capsys, option):
    path = tmp_path / "student.pt"
    model = MLP(10, 1, 8, hidden=[8], dropout=0.0)
    save_model(path, model, model=option, model_config={"hidden": [8]}, dataset=DIGITS)
    assert main(["eval", str(path)]) == 2
    assert "is not one of kdcli's model configs" in capsys.readouterr().err
