"""DistributedDataParallel under torchrun, on the CPU with the gloo backend and 2 processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from kd_command import ONE_THREAD, torchrun
from kd_processes import run_processes
from kd_settings import TINY

from kdcli.config.checks import check_overrides
from kdcli.data import DatasetInfo, EpochLoader, Split
from kdcli.engine import distributed
from kdcli.engine.infer import predict
from kdcli.errors import UserError

# no dropout in the student: each process would draw its own masks for its share of a batch
RUN = [*TINY, "baseline=false", "device=cpu", "student.model.dropout=0"]


def student_weights(cwd: Path) -> dict[str, torch.Tensor]:
    [path] = cwd.glob("outputs/**/student.pt")
    return torch.load(path, weights_only=True)["state_dict"]


def test_two_process_gloo_run_writes_one_report_and_takes_one_process_steps(kd, tmp_path):
    done = kd("train", *RUN, cwd=tmp_path / "ddp", env=ONE_THREAD, launcher=torchrun(2))
    assert done.returncode == 0, done.stderr
    reports = list((tmp_path / "ddp").glob("outputs/**/report.json"))
    assert len(reports) == 1, "rank 0 owns the only run directory"
    assert [p.name for p in (tmp_path / "ddp/outputs/runs").glob("*/*")] == [reports[0].parent.name]
    report = json.loads(reports[0].read_text())
    assert report["processes"] == 2
    assert report["teacher"]["reused"] is False and report["soft_labels"]["reused"] is False
    assert done.stdout.count("top-1 accuracy") == 1, "only rank 0 prints the report"
    cache = tmp_path / "ddp/outputs/cache"
    assert len([p for p in cache.glob("teachers/*") if p.is_dir()]) == 1
    [teacher] = cache.glob("teachers/*/model.pt")

    # One process distils the same student from the same teacher (the one the two processes
    # trained: BatchNorm's per-process statistics make a teacher trained alone differ).
    # With the gradients averaged over the two halves of every global batch, the two runs
    # take the same steps: their students differ by float32's summation order (1e-8
    # measured); without the sync, each process trains on its half alone (4e-3 apart).
    alone = kd(
        "train", *RUN, f"teacher.checkpoint={teacher}", cwd=tmp_path / "alone", env=ONE_THREAD
    )
    assert alone.returncode == 0, alone.stderr
    assert alone.report()["processes"] == 1
    expected = student_weights(tmp_path / "alone")
    for name, weights in student_weights(tmp_path / "ddp").items():
        gap = float((weights - expected[name]).abs().max())
        assert gap < 1e-5, f"{name} is {gap:.1e} from the one-process student's"


@pytest.mark.slow
def test_batch_sizes_must_split_evenly_over_the_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(UserError, match="must be a multiple of 3"):
        check_overrides(["teacher.batch_size=64"])
    check_overrides(["teacher.batch_size=66", "student.batch_size=66"])


def test_alone_every_helper_is_a_no_op():
    assert not distributed.active()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(model, torch.device("cpu")) is model
    assert distributed.sum_over_ranks(torch.tensor(2.0), 3) == [torch.tensor(2.0), 3]


def _split(samples: int) -> tuple[Split, DatasetInfo]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (samples, 1, 4, 4), dtype=torch.uint8, generator=generator)
    info = DatasetInfo("toy", 3, 1, 4, (0.5,), (0.25,))
    return Split(images, torch.arange(samples) % 3), info


def _sequence_model(model: torch.nn.Module) -> torch.nn.Module:
    """`model`'s 3 outputs as a sequence of 3 positions of 1 (a language model's [B, T, V])."""
    return torch.nn.Sequential(model, torch.nn.Unflatten(1, (3, 1)))


def _worker(rank: int, store: str, out: str) -> None:
    """One of two gloo processes: shard a loader, predict a split and average gradients
    together."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    split, info = _split(23)  # 23 samples in batches of 4: the ranks get 3 and 3 batches
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    loader = EpochLoader(split, info, 4, train=False)
    logits = distributed.predict_sharded(model, loader, torch.device("cpu"))
    tokens = distributed.predict_sharded(_sequence_model(model), loader, torch.device("cpu"))
    train = EpochLoader(split, info, 8, train=True, seed=1)
    shards = [b.index for b in distributed.shard_loader(train).epoch(0)]
    totals = distributed.sum_over_ranks(torch.tensor(float(rank + 1)), rank)
    adapter = torch.nn.Linear(2, 1)  # a feature loss's adapter: parameters DDP does not own
    for parameter in adapter.parameters():
        parameter.grad = torch.full_like(parameter, float(rank + 1))
    distributed.average_gradients(adapter)
    averaged = [parameter.grad for parameter in adapter.parameters()]
    torch.save(
        {
            "logits": logits,
            "tokens": tokens,
            "shards": shards,
            "totals": totals,
            "averaged": averaged,
        },
        f"{out}/{rank}.pt",
    )
    dist.destroy_process_group()


def test_two_ranks_shard_batches_gather_predictions_and_average_gradients(tmp_path):
    context = torch.multiprocessing.get_context("spawn")
    ranks = [(rank, str(tmp_path / "store"), str(tmp_path)) for rank in range(2)]
    run_processes(context, _worker, ranks, timeout=120)
    results = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]

    split, info = _split(23)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    expected = predict(model, EpochLoader(split, info, 4, train=False), torch.device("cpu"))
    for result in results:
        torch.testing.assert_close(result["logits"], expected)
        # shaped as one process's: [N, T, V] stays so (flattened, top-k would pick positions)
        torch.testing.assert_close(result["tokens"], expected.view(23, 3, 1))
        assert [float(t) for t in result["totals"]] == [3.0, 1.0]
        assert all(bool((grad == 1.5).all()) for grad in result["averaged"]), "(1 + 2) / 2"

    global_batches = [b.index for b in EpochLoader(split, info, 8, train=True, seed=1).epoch(0)]
    for step, batch in enumerate(global_batches):
        halves = [results[rank]["shards"][step] for rank in range(2)]
        assert [len(h) for h in halves] == [4, 4]
        assert torch.equal(torch.cat(halves), batch), "each rank takes its half of every batch"
