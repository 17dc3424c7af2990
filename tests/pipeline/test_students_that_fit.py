"""Students that fit (issue 24, item 6), end to end: `kd train` with LoRA adapters and gradient
accumulation distils a GPT student and trains its baseline the same way; the student.pt it
writes holds the merged, plain model that kd eval rebuilds from its config."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from kd_settings import TINY_LM

from kdcli.config.eval_config import build_from_checkpoint
from kdcli.pipeline.eval_checkpoint import model_info
from kdcli.store.checkpoint import read_model_file

if importlib.util.find_spec("peft") is None:
    pytest.skip("kdcli[lora] absent", allow_module_level=True)


def test_kd_train_with_lora_and_accumulation_saves_plain_students_trained_alike(kd):
    lora = "student.lora={r:4,alpha:8,target_modules:[qkv,proj,mlp.0]}"
    result = kd("train", *TINY_LM, lora, "student.accumulate=2")
    assert result.returncode == 0, result.stderr
    report = result.report()
    files = {
        role: read_model_file(result.cwd / Path(report[role]["checkpoint"]))
        for role in ("student", "baseline")
    }
    for role, file in files.items():
        model = build_from_checkpoint(file, model_info(file))  # what kd eval runs
        assert not any("lora" in name for name in model.state_dict()), role
    student, baseline = (files[role].state_dict for role in ("student", "baseline"))
    # both start from the same seeded weights: LoRA leaves the same layers as they were
    assert torch.equal(student["positions.weight"], baseline["positions.weight"])
    assert torch.equal(student["blocks.0.qkv.bias"], baseline["blocks.0.qkv.bias"])
    assert not torch.equal(student["blocks.0.qkv.weight"], baseline["blocks.0.qkv.weight"])
    assert report["student"]["perplexity"] > 1 and "kd_gain" in report
