"""`kd export` (kdcli/cli/export_command.py, kdcli/pipeline/export.py): every format reloads
outside kdcli's code path with the PyTorch model's outputs, on raw images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kd_command import ONE_THREAD, run_kd
from kd_settings import TINY, TINY_LM

from kdcli.cli.main import main
from kdcli.config.eval_config import build_from_checkpoint
from kdcli.data.digits import Digits
from kdcli.pipeline import export as export_module
from kdcli.pipeline.eval_checkpoint import model_info, read_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("run")
    result = run_kd("train", *TINY, "baseline=false", cwd=cwd, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    return result.runs()[0]


@pytest.fixture(scope="module")
def reference(run_dir):
    """The PyTorch student and raw digits test images (uint8), with its logits on them."""
    path = run_dir / "student.pt"
    file = read_model(path)
    info = model_info(file)
    model = build_from_checkpoint(file, info)
    raw = Digits().load().test.images[:40]  # uint8 [N, 1, 8, 8]
    scaled = raw.float() / 255.0
    mean, std = torch.tensor(info.mean).view(1, -1, 1, 1), torch.tensor(info.std).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = model((scaled - mean) / std)
    return raw, scaled, logits


def test_torchscript_takes_uint8_or_float_images_and_matches_pytorch(run_dir, reference, capsys):
    raw, scaled, logits = reference
    assert main(["export", str(run_dir)]) == 0
    assert "max |difference| from PyTorch on 32 test images" in capsys.readouterr().out
    loaded = torch.jit.load(str(run_dir / "export" / "student.pt"))
    torch.testing.assert_close(loaded(scaled), logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loaded(raw), logits, atol=1e-5, rtol=1e-5)
    facts = json.loads((run_dir / "export" / "student.pt.json").read_text())
    assert facts["classes"] == 10 and facts["input"]["shape"] == ["batch", 1, 8, 8]
    assert facts["normalisation"]["inside"] is True and facts["verified"]["images"] == 32
    assert facts["verified"]["max_abs_difference"] <= 1e-4

    # kd eval takes the exported file too, and finds the report's top-1
    assert main(["eval", str(run_dir / "export" / "student.pt"), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    report = json.loads((run_dir / "report.json").read_text())
    assert figures["test"]["top1"] == report["student"]["top1"]
    assert figures["model"] == "exported TorchScript"


def test_batchnorm_is_folded_into_the_convolutions(run_dir, tmp_path):
    args = ["export", str(run_dir), "--model", "teacher", "--output", str(tmp_path)]
    assert main(args) == 0  # the teacher, a smallcnn, has conv-BN pairs
    loaded = torch.jit.load(str(tmp_path / "teacher.pt"))
    assert "batch_norm" not in str(loaded.model.inlined_graph)
    facts = json.loads((tmp_path / "teacher.pt.json").read_text())
    assert 0 < facts["verified"]["max_abs_difference"] <= 1e-4, "folding moves the last digits"


def test_onnx_runs_in_onnxruntime_with_pytorchs_outputs(run_dir, reference, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    raw, scaled, logits = reference
    assert main(["export", str(run_dir), "--format", "onnx", "--output", str(tmp_path)]) == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "student.onnx"))
    [got] = session.run(None, {"images": scaled.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), logits, atol=1e-4, rtol=1e-4)


def test_safetensors_holds_weights_normalisation_and_the_model_config(
    run_dir, reference, tmp_path, capsys
):
    safetensors = pytest.importorskip("safetensors.torch")
    checkpoint = run_dir / "student.pt"
    assert (
        main(["export", str(checkpoint), "--format", "safetensors", "--output", str(tmp_path)]) == 0
    )
    exported = tmp_path / "student.safetensors"
    tensors = safetensors.load_file(str(exported))
    file = read_model(checkpoint)
    info = model_info(file)
    assert tensors.keys() == {"mean", "std", *(f"model.{k}" for k in file.state_dict)}
    for name, weight in file.state_dict.items():  # the trained weights, not a copy's
        torch.testing.assert_close(tensors[f"model.{name}"], weight, rtol=0, atol=0)
    assert tensors["mean"].flatten().tolist() == pytest.approx(list(info.mean))
    assert tensors["std"].flatten().tolist() == pytest.approx(list(info.std))
    with open(exported, "rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    metadata = header["__metadata__"]
    assert json.loads(metadata["model"]) == "mlp"  # kdcli's config, and plain values: no code
    assert json.loads(metadata["model_config"]) == {"hidden": [32], "dropout": 0.1}
    assert "_target_" not in metadata["model_config"]

    # kd eval rebuilds the model from kdcli's config and the file's values: the report's top-1
    capsys.readouterr()
    assert main(["eval", str(exported), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    report = json.loads((run_dir / "report.json").read_text())
    assert figures["test"]["top1"] == report["student"]["top1"]


def test_an_export_whose_outputs_differ_is_not_kept(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(export_module, "_run_torchscript", lambda *a: torch.full((32, 10), 9.0))
    assert main(["export", str(run_dir), "--output", str(tmp_path)]) == 1
    assert "outputs differ from PyTorch's" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "tflite"], "--format tflite: kd export writes torchscript, onnx"),
        (["--model", "baseline"], "has no baseline"),
        (["--model", "nobody"], "choose student, teacher, baseline, compressed"),
    ],
)
def test_bad_input_exits_2(run_dir, capsys, args, message):
    assert main(["export", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_language_model_is_refused_naming_its_checkpoint(tmp_path, capsys):
    """kd export writes image classifiers (raw images in); a language model exits 2, not
    with a traceback from feeding it images, and writes nothing."""
    result = run_kd("train", *TINY_LM, "baseline=false", cwd=tmp_path, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    run = result.runs()[0]
    assert main(["export", str(run)]) == 2
    err = capsys.readouterr().err
    assert "student.pt is a language model (dataset shakespeare)" in err
    assert "Traceback" not in err and not (run / "export").exists()


def test_a_missing_package_is_named(run_dir, monkeypatch, capsys):
    monkeypatch.setattr(export_module, "missing_package", lambda fmt: "onnx")
    assert main(["export", str(run_dir), "--format", "onnx"]) == 2
    assert "pip install kdcli[export]" in capsys.readouterr().err
