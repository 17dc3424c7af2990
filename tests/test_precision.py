"""engine/precision.py: what `precision=auto` picks, and that a bf16 forward pass gives the
losses the same values as fp32 to bf16's rounding (the losses themselves run in fp32)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdcli.data import Batch
from kdcli.engine import precision as numerics
from kdcli.engine.loop import fit
from kdcli.engine.precision import FP32, Precision, pays_on_cpu, resolve
from kdcli.errors import UserError
from kdcli.losses import CrossEntropy, SoftTargetKD
from kdcli.models.smallcnn import SmallCNN
from kdcli.tasks.classify import TASK

CPU = torch.device("cpu")


def conv_model() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(num_classes=10, in_channels=1, image_size=8, width=8)


@pytest.mark.parametrize(
    ("flops", "params", "pays"),
    [
        (354e6, 1_230_000, True),  # resnet8x4 on 32x32 images: 3.4x faster in bf16
        (2166e6, 7_430_000, True),  # resnet32x4 on 32x32: 3.5x
        (25e6, 78_000, True),  # resnet8 on 32x32: 1.6x
        (12.7e6, 17_000, False),  # smallcnn on 32x32 (too little work per image)
        (0.8e6, 16_000, False),  # smallcnn on 8x8 digits: 0.9x (too little work)
        (69e6, 11_200_000, False),  # resnet18 on 8x8: 0.75x (6 FLOPs per weight)
        (162e6, 23_500_000, False),  # resnet50 on 8x8: 1.0x
    ],
)
def test_bf16_pays_on_a_cpu_with_enough_work_per_image_and_per_weight(flops, params, pays):
    assert pays_on_cpu(flops, params) is pays


def test_auto_is_fp32_where_bf16_is_not_native(monkeypatch):
    monkeypatch.setattr(numerics, "native_bf16", lambda device: False)
    assert resolve("auto", "auto", CPU, conv_model(), 1e9, 1000) == FP32


def test_auto_picks_bf16_and_channels_last_for_a_big_conv_model_on_a_bf16_cpu(monkeypatch):
    monkeypatch.setattr(numerics, "native_bf16", lambda device: True)
    assert resolve("auto", "auto", CPU, conv_model(), 1e9, 1000) == Precision("bf16", True)
    assert resolve("auto", "auto", CPU, conv_model(), 1e6, 1000) == FP32  # too small
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # no convolutions: no channels_last
    assert resolve("auto", "auto", CPU, mlp, 1e9, 1000) == Precision("bf16", False)
    assert resolve("auto", False, CPU, conv_model(), 1e9, 1000) == Precision("bf16", False)


def test_an_explicit_choice_is_kept_and_fp16_needs_cuda():
    assert resolve("fp32", "auto", CPU, conv_model(), 1e9, 1000) == FP32
    assert resolve("bf16", "auto", CPU, conv_model(), 0, 1) == Precision("bf16", True)
    with pytest.raises(UserError, match="precision=fp16 needs a CUDA device"):
        resolve("fp16", "auto", CPU, conv_model(), 0, 1)


def test_a_bf16_forward_pass_gives_the_loss_to_bf16_rounding():
    """The same batch through the same weights: the KD loss (computed in fp32 on upcast
    logits) differs from fp32's by what bf16's 8-bit mantissa explains, not more."""
    model, teacher = conv_model(), conv_model()
    x = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    loss_fn = SoftTargetKD(alpha=0.9, temperature=4.0)
    values = {}
    for name in ("fp32", "bf16"):
        precision = Precision(name, channels_last=name == "bf16")
        numerics.prepare(model, precision)
        with torch.no_grad(), numerics.autocast(precision, CPU):
            logits = model(numerics.inputs(x, precision))
            teacher_logits = teacher(numerics.inputs(x, precision))
        assert logits.dtype == (torch.bfloat16 if name == "bf16" else torch.float32)
        values[name] = loss_fn(logits.float(), teacher_logits.float(), y, None).item()
    assert values["bf16"] == pytest.approx(values["fp32"], rel=2e-2)
    assert values["bf16"] != values["fp32"]  # it did run in bf16


class Batches:
    """A loader over one fixed batch (what `fit` asks of a loader)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.batch = Batch(x, y, torch.arange(len(y)))
        self.num_samples = len(y)

    def __len__(self) -> int:
        return 1

    def epoch(self, epoch: int, start: int = 0):
        if start == 0:
            yield self.batch


def test_fit_trains_in_bf16_with_fp32_weights_and_reports_a_finite_loss():
    model = conv_model()
    torch.manual_seed(1)
    loader = Batches(torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,)))
    result = fit(
        model,
        loader,
        CrossEntropy(),
        epochs=3,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        scheduler=lambda opt: torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0),
        task=TASK,
        device=CPU,
        label="teacher",
        precision=Precision("bf16", channels_last=True),
    )
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.isfinite(torch.tensor(result.final_loss))


def test_fp32_and_bf16_teachers_are_different_cache_entries(kd, tiny, tmp_path):
    """An fp32 and a bf16 teacher are different teachers; each stage reports its precision."""
    reports = {}
    for name in ("fp32", "bf16"):
        result = kd("train", *tiny, f"precision={name}", "baseline=false")
        assert result.returncode == 0, result.stderr
        reports[name] = result.report()
        for run in result.runs():
            (run / "report.json").unlink()  # the next run's report is the only one
    teachers = [p for p in (tmp_path / "outputs" / "cache" / "teachers").iterdir() if p.is_dir()]
    assert len(teachers) == 2, teachers
    assert reports["fp32"]["stages"]["teacher"]["precision"] == "fp32"
    bf16 = reports["bf16"]
    assert bf16["stages"]["teacher"]["precision"] == "bf16, channels_last"  # a CNN teacher
    assert bf16["stages"]["distill"]["precision"] == "bf16"  # an MLP student
    assert not bf16["teacher"]["reused"], "the fp32 teacher is not taken for a bf16 one"
    assert bf16["student"]["precision"] == "bf16"


def test_fp16_without_cuda_exits_2_naming_precision(kd, tiny, tmp_path):
    result = kd("train", *tiny, "precision=fp16", "device=cpu")
    assert result.returncode == 2
    assert "precision=fp16 needs a CUDA GPU" in result.stderr
    assert not (tmp_path / "outputs").exists()
