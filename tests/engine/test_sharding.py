"""FSDP (`distributed.strategy=fsdp`) under torchrun, on the CPU with the gloo backend and 2
processes: the sharded student takes DDP's steps, and a run stopped mid-way resumes."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from kd_command import ONE_THREAD, run_kd, start_kd, torchrun
from kd_settings import TINY_LM
from omegaconf import OmegaConf
from torch import nn

from kdcli.config.checks import check_overrides
from kdcli.config.objects import student_strategy
from kdcli.engine import sharding
from kdcli.engine.precision import FP32, Precision
from kdcli.engine.state import Parts, Position, TrainState
from kdcli.errors import UserError
from kdcli.models.lm.gpt import GPT

# no dropout: each process would draw its own masks for its share of a batch; a saved state
# after every step, so that a signal lands mid-way; three epochs of 5 steps
RUN = [
    "train",
    *TINY_LM,
    "baseline=false",
    "device=cpu",
    "student.epochs=3",
    "student.model.dropout=0",
    "checkpoint.every_s=0",
]
FSDP = "distributed.strategy=fsdp"


def student_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "student.pt", weights_only=True)["state_dict"]


def stop_when_saved(process, cache: Path) -> str:
    """SIGTERM to rank 1's process alone once the student's state is saved: a signal reaches
    each rank at its own moment (torchrun passes one on to each in turn), and here rank 0 gets
    none at all, so the ranks must agree to stop at one step. Returns the stderr."""
    deadline = time.monotonic() + 300
    while not list(cache.glob("students/*.state.pt")):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no training state appeared"
        time.sleep(0.005)
    os.kill(worker_of_rank(process.pid, 1), signal.SIGTERM)
    return process.communicate(timeout=120)[1]


def worker_of_rank(torchrun_pid: int, rank: int) -> int:
    """The process id of torchrun's worker with RANK=`rank` (Linux: read from /proc)."""
    children = Path(f"/proc/{torchrun_pid}/task/{torchrun_pid}/children").read_text().split()
    for child in children:
        environment = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environment:
            return int(child)
    raise AssertionError(f"no worker of rank {rank} among torchrun's children {children}")


def test_fsdp_student_takes_ddp_steps_and_a_stopped_run_resumes(tmp_path):
    cache = f"cache_dir={tmp_path / 'cache'}"
    ddp = run_kd(*RUN, cache, cwd=tmp_path / "ddp", env=ONE_THREAD, launcher=torchrun(2))
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.report()["processes"] == 2

    # the same command with FSDP, stopped after a saved step, then run again (teacher and
    # soft labels come from the cache: they are not what is tested)
    first = start_kd(
        *RUN, cache, FSDP, cwd=tmp_path / "first", env=ONE_THREAD, launcher=torchrun(2)
    )
    stderr = stop_when_saved(first, tmp_path / "cache")
    assert first.returncode != 0, stderr
    assert "saved the state of student" in stderr, stderr
    # both ranks stopped at the same step: neither was left waiting on the other's collective
    # (torchrun's own traceback, as its workers exit 143, is not kd's)
    assert "Error executing job" not in stderr and "Connection closed" not in stderr, stderr
    assert stderr.count("kd: stopped by SIGTERM") == 1, "rank 0 says so, once"
    fsdp = run_kd(*RUN, cache, FSDP, cwd=tmp_path / "second", env=ONE_THREAD, launcher=torchrun(2))
    assert fsdp.returncode == 0, fsdp.stderr
    report = fsdp.report()
    assert report["stages"]["distill"]["resumed_from"] is not None, "it continued"
    assert report["processes"] == 2
    assert "GPT sharded over 2 processes (2 blocks" in fsdp.stderr

    # student.pt holds the whole student, plain tensors, as DDP's does; the gathered and
    # re-sharded state (weights, AdamW's moments, schedule) continues DDP's steps: the two
    # differ by float32's summation order at most (measured: 0, as two ranks' gradients sum
    # alike in either order)
    expected = student_weights(ddp.runs()[0])
    weights = student_weights(fsdp.runs()[0])
    assert weights.keys() == expected.keys()
    for name, value in weights.items():
        assert type(value) is torch.Tensor and value.shape == expected[name].shape, name
        gap = float((value - expected[name]).abs().max())
        assert gap < 1e-5, f"{name} is {gap:.1e} from DDP's student"
    headline = report["student"][report["metric"]]
    assert headline == pytest.approx(ddp.report()["student"][report["metric"]], abs=1e-4)
    # each epoch's validation pass sees the weights trained so far, gathered whole
    assert last_validation(fsdp.runs()[0]) == pytest.approx(last_validation(ddp.runs()[0]))


def last_validation(run: Path) -> dict[str, float]:
    """The student's last epoch's validation figures in the run's metrics.jsonl."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    [*_, last] = [row for row in rows if row.get("stage") == "student"]
    figures = {key: value for key, value in last.items() if key.startswith("val_")}
    assert figures, last
    return figures


# ---- units, precision and what FSDP refuses (no processes) ----------------------------------


def test_each_repeated_block_is_a_unit_and_a_model_without_any_is_one():
    gpt = GPT(num_classes=10, image_size=8, layers=3, heads=2, width=8)
    assert sharding.units(gpt) == list(gpt.blocks), "a GPT's transformer blocks"
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert sharding.units(mlp) == [], "items of different classes: sharded whole"
    stack = nn.Module()
    stack.layers = nn.ModuleList(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)) for _ in range(2))
    assert sharding.units(stack) == list(stack.layers), "the outermost repeated items only"


@pytest.mark.slow  # importing transformers
def test_a_hugging_face_models_decoder_layers_are_its_units():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=2,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    assert sharding.units(model) == list(model.model.layers)


def test_bf16_gathers_weights_in_bf16_and_reduces_gradients_in_fp32():
    mixed = sharding.policy(Precision("bf16"))
    assert (mixed.param_dtype, mixed.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert sharding.policy(FP32).param_dtype is None, "fp32: nothing cast"


def _config(**settings):
    values = {"distributed.strategy": "fsdp", "student.lora": None, "compile": False}
    values.update(settings)
    values.setdefault("precision", "fp32")
    return OmegaConf.from_dotlist([f"{k}={'null' if v is None else v}" for k, v in values.items()])


PLAIN_LOSS = SimpleNamespace(uses_features=False, on_policy=False)


@pytest.mark.parametrize(
    ("settings", "loss", "named"),
    [
        ({}, SimpleNamespace(uses_features=True, on_policy=False), "a feature loss"),
        ({}, SimpleNamespace(uses_features=False, on_policy=True), "loss.lmbda"),
        ({"student.lora": "{r:8}"}, PLAIN_LOSS, "student.lora"),
        ({"compile": True}, PLAIN_LOSS, "compile=true"),
        ({"precision": "fp16"}, PLAIN_LOSS, "precision=fp16"),
    ],
)
def test_what_fsdp_does_not_train_exits_2_naming_the_setting(settings, loss, named):
    with pytest.raises(UserError, match="distributed.strategy=fsdp") as error:
        student_strategy(_config(**settings), loss)
    assert named in str(error.value) and "distributed.strategy=ddp" in str(error.value)
    assert student_strategy(_config(**{"distributed.strategy": "ddp", **settings}), loss) == "ddp"


def test_fsdp_alone_trains_whole_with_a_warning(caplog, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with caplog.at_level(logging.WARNING):
        assert student_strategy(_config(), PLAIN_LOSS) == "fsdp"
    assert "torchrun --nproc_per_node=N" in caplog.text


@pytest.mark.slow
def test_a_strategy_that_does_not_exist_exits_2():
    with pytest.raises(UserError, match="distributed.strategy='zero' must be ddp or fsdp"):
        check_overrides(["distributed.strategy=zero"])


def test_a_state_fsdp_saved_is_not_resumed_by_ddp(tmp_path, caplog):
    """FSDP's state holds the optimizer's state by parameter name: DDP's path starts over."""

    def parts() -> Parts:
        model = nn.Linear(2, 2)
        optimizer = torch.optim.AdamW(model.parameters())
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        return Parts(model, nn.Module(), optimizer, scheduler)

    saved = parts()
    sharded_state = saved.state
    saved.state = lambda: {**sharded_state(), "layout": sharding.LAYOUT}  # what FSDP writes
    state = TrainState(tmp_path / "s.state.pt")
    state.save(saved, Position(1, 0))
    with caplog.at_level(logging.WARNING):
        assert state.resume(parts(), torch.device("cpu")) is None
    assert "saved by distributed.strategy=fsdp, not ddp" in caplog.text
