"""Compression after distillation (engine/compress.py, pipeline/compress.py): magnitude
pruning with a distillation fine-tune, int8 quantization, and the report's `compressed` entry."""

import json
from pathlib import Path

import pytest
import torch

from kdcli.cli.main import main
from kdcli.config.checks import check_overrides
from kdcli.data.digits import Digits
from kdcli.engine.compress import (
    Compression,
    make_pruning_permanent,
    prune_magnitude,
    quantize_int8,
    sparsity,
)
from kdcli.errors import UserError
from kdcli.models.smallcnn import SmallCNN
from kdcli.store.checkpoint import restore_scalars, save_model


def saved_bytes(module: torch.nn.Module, tmp_path: Path) -> int:
    """The size of the kdcli model file `module` is written to (store/checkpoint.py)."""
    path = tmp_path / f"{id(module)}.pt"
    save_model(path, module, model="smallcnn", model_config={"width": 8})
    return path.stat().st_size


def test_pruning_zeroes_the_smallest_weights_over_the_whole_model_and_stays_zero():
    torch.manual_seed(0)
    model = SmallCNN(10, 1, 8, width=8)
    prune_magnitude(model, 0.5)
    assert sparsity(model) == pytest.approx(0.5, abs=0.01)
    with torch.no_grad():  # a training step moves weight_orig; the mask keeps them zero
        for name, parameter in model.named_parameters():
            if name.endswith("weight_orig"):
                parameter.add_(1.0)
    assert sparsity(model) == pytest.approx(0.5, abs=0.01)
    make_pruning_permanent(model)
    assert not any(name.endswith("weight_orig") for name, _ in model.named_parameters())
    assert sparsity(model) == pytest.approx(0.5, abs=0.01)


def test_int8_keeps_the_predictions_and_shrinks_the_file_to_a_third(tmp_path):
    torch.manual_seed(0)
    data = Digits(augment=False).load()
    model = SmallCNN(10, 1, 8, width=16).eval()
    batches = [b.x for b, _ in zip(data.eval_loader("train", 64).epoch(0), range(4), strict=False)]
    quantized = quantize_int8(model, batches)
    test = next(data.eval_loader("test", 256).epoch(0)).x
    with torch.no_grad():
        agree = (quantized(test).argmax(1) == model(test).argmax(1)).float().mean()
    assert agree > 0.95
    # the target; the per-layer scales ride in the pickle, not as zip entries
    assert saved_bytes(quantized, tmp_path) <= 0.35 * saved_bytes(model, tmp_path)
    saved = torch.load(tmp_path / f"{id(quantized)}.pt", weights_only=True)["state_dict"]
    rebuilt = quantize_int8(SmallCNN(10, 1, 8, width=16).eval(), batches[:1])
    rebuilt.load_state_dict(restore_scalars(saved, rebuilt))
    with torch.no_grad():
        assert torch.equal(rebuilt(test), quantized(test)), "the file holds the whole int8 model"


def test_compression_plans_describe_themselves():
    assert not Compression().active
    assert Compression(name="int8", int8=True).describe() == "int8"
    assert Compression(amount=0.5, epochs=3, int8=True).describe() == "50% pruned, int8"


def test_kd_train_compress_prune_int8_reports_the_compressed_student(kd, tiny, capsys):
    result = kd("train", *tiny, "compress=prune_int8", "compress.epochs=1", "baseline=false")
    assert result.returncode == 0, result.stderr
    report = result.report()
    compressed, student = report["compressed"], report["student"]
    assert compressed["name"] == "mlp (50% pruned, int8)" and compressed["source"] == "compressed"
    assert compressed["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert compressed["checkpoint_bytes"] < student["checkpoint_bytes"]  # tiny: headers dominate
    assert 0 <= compressed["top1"] <= 1 and compressed["params"] == student["params"]
    assert report["stages"]["compress"]["precision"] == "int8"
    assert "compressed" in result.stdout and "zero weights" in result.stdout
    run_dir = result.runs()[0]
    assert (run_dir / "compressed.pt").is_file()
    stages = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any('"stage": "compressed"' in line for line in stages), "the fine-tune's rows"

    # the int8 file is a kdcli model file: kd eval rebuilds it, kd export ships it
    assert main(["eval", str(run_dir / "compressed.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["top1"] == compressed["top1"]
    assert main(["export", str(run_dir), "--model", "compressed"]) == 0
    exported = torch.jit.load(str(run_dir / "export" / "compressed.pt"))
    assert exported(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    capsys.readouterr()
    assert main(["export", str(run_dir), "--model", "compressed", "--format", "safetensors"]) == 2
    assert "cannot be exported in that format" in capsys.readouterr().err


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["compress=prune", "compress.epochs=9"], "compress.epochs=9 is more than student.epochs"),
        (["compress=prune", "compress.amount=1.5"], "compress.amount=1.5 must be"),
        (["compress=zip"], "zip"),
    ],
)
def test_bad_compress_settings_are_refused_before_anything_runs(overrides, message):
    with pytest.raises(UserError, match=message):
        check_overrides(["student.epochs=1", *overrides])
