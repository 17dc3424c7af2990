"""Many processes, one run: DistributedDataParallel under `torchrun`.

`torchrun --nproc_per_node=N -m kdcli train ...` starts N copies of `kd train`; torchrun tells
each its place through the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).
Without those variables every function here is a no-op and kdcli runs as one process.

How the work is split:

- Training: `batch_size` is the global batch. Every process draws the same global batches
  (their order is a pure function of (seed, epoch)) and trains on its own contiguous share of
  each, `batch_size / N` samples; DDP averages the gradients, so N processes take the same
  steps as one process would (up to BatchNorm, whose statistics stay per process).
- Soft labels and other predictions: the batches of the split are dealt round-robin to the
  processes and the logits gathered back into split order.
- Cache entries (kdcli/pipeline/common.py `get_or_make`): rank 0 takes the entry's lock and
  decides whether to build; the other ranks join the build and read the entry rank 0 wrote.
- Rank 0 alone logs, shows progress, writes files and evaluates. The other ranks run Hydra
  in a throwaway directory and use rank 0's run directory.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from kdcli.data import Batch, Loader
from kdcli.engine.infer import outputs, predict
from kdcli.engine.precision import FP32, Precision
from kdcli.engine.ranks import launched_by_torchrun

# A rank waits in a collective while rank 0 waits for another job's cache lock, and that job
# may be training a teacher for hours: the default 30 minutes would be too short.
COLLECTIVE_TIMEOUT = timedelta(hours=24)

STRATEGIES = ("ddp", "fsdp")
"""`distributed.strategy`: DDP (here) or FSDP (kdcli/engine/sharding.py)."""


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, the process that logs, writes files and evaluates (always true alone)."""
    return rank() == 0


# ---- start and end --------------------------------------------------------------------------


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group (once) and return this process's device.

    gloo on the CPU, nccl on CUDA. Alone, returns `device` unchanged.
    """
    if not launched_by_torchrun():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not active():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    if not is_main():
        logging.getLogger().setLevel(logging.WARNING)  # only rank 0 reports progress
    return device


def shared_run_dir(run_dir: Path) -> Path:
    """Rank 0's run directory, on every rank."""
    if not active():
        return run_dir
    message = [str(run_dir)]
    dist.broadcast_object_list(message, src=0)
    return Path(message[0])


def finish() -> None:
    """Wait for every rank (rank 0 evaluates while the others are done), then leave the group."""
    if active():
        dist.barrier()
        dist.destroy_process_group()


# ---- training -------------------------------------------------------------------------------


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """The model to train: `model` itself alone, else a DDP wrapper that shares its weights."""
    if not active():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    # A conv weight with one input channel has two equally valid stride layouts; DDP warns
    # that its gradient's layout differs from the bucket's, which costs nothing here.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def no_sync(model: nn.Module) -> AbstractContextManager[Any]:
    """Within it, DDP's backward passes keep their gradients on this process, to be summed
    with the next ones' (accumulation: averaged over the processes once, at the step's last
    backward pass); alone, or for a model DDP does not wrap, it does nothing."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return nullcontext()


class ShardedLoader:
    """This rank's contiguous share of every global batch of an `EpochLoader`."""

    def __init__(self, loader: Loader, rank: int, world_size: int) -> None:
        self.loader = loader
        self.rank = rank
        self.world_size = world_size

    @property
    def num_samples(self) -> int:
        """The split's samples (every rank's shares together)."""
        return self.loader.num_samples

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        for batch in self.loader.epoch(epoch, start):
            yield Batch(
                **{field.name: self._share(getattr(batch, field.name)) for field in fields(batch)}
            )

    def _share(self, value: Any) -> Any:
        """This rank's rows of a tensor; anything else (a flag) as it is."""
        if isinstance(value, torch.Tensor):
            return value.tensor_split(self.world_size)[self.rank]
        return value


class ShardedBatches:
    """Every N-th batch of a loader's split, for this rank to predict."""

    def __init__(self, loader: Loader, rank: int, world_size: int) -> None:
        self.loader = loader
        self.rank = rank
        self.world_size = world_size

    def epoch(self, epoch: int) -> Iterator[Batch]:
        for number, batch in enumerate(self.loader.epoch(epoch)):
            if number % self.world_size == self.rank:
                yield batch


def shard_loader(loader: Loader) -> Loader:
    """The batches this rank trains on: all of them alone, its share of each under torchrun."""
    return ShardedLoader(loader, rank(), world_size()) if active() else loader


def sum_over_ranks(*values: torch.Tensor | int) -> list[torch.Tensor | int]:
    """Sums of per-rank counters (loss sums, correct, seen) over all ranks, in one collective.

    Alone the values come back as they are. Every rank must call this at the same step.
    """
    if not active():
        return list(values)
    device = next(v.device for v in values if isinstance(v, torch.Tensor))
    stacked = torch.stack([torch.as_tensor(v, device=device, dtype=torch.float64) for v in values])
    dist.all_reduce(stacked)
    return list(stacked.unbind())


def highest_over_ranks(value: int, device: torch.device) -> int:
    """The highest of every rank's `value` (alone: `value`), so that all ranks take a decision
    that each takes alone (save now: a timer; stop: a signal, which reaches each rank at its
    own moment) together. Every rank must call it."""
    if not active():
        return value
    vote = torch.tensor([value], device=device)
    dist.all_reduce(vote, op=dist.ReduceOp.MAX)
    return int(vote.item())


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether `flag` is true on any rank. Every rank must call it."""
    return bool(highest_over_ranks(int(flag), device))


def signal_on_any_rank(signum: int | None, device: torch.device) -> int | None:
    """The signal noted on any rank (the highest number, when ranks noted different ones),
    so that all ranks stop at the same step. Every rank must call it."""
    return highest_over_ranks(signum or 0, device) or None


def average_gradients(module: nn.Module) -> None:
    """Average over ranks the gradients of parameters that DDP does not own (a feature loss's
    adapters live in the loss, not the model). Alone this does nothing."""
    if not active():
        return
    for parameter in module.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= world_size()


# ---- predictions and broadcasts --------------------------------------------------------------


@torch.no_grad()
def predict_sharded(
    model: nn.Module, loader: Loader, device: torch.device, precision: Precision = FP32
) -> torch.Tensor:
    """Logits for every sample of the loader's split, in split order, computed by all ranks.

    Each rank predicts every N-th batch; the parts are gathered so that every rank ends with
    the whole tensor, shaped as one process's would be: [num_samples, num_classes] for images,
    [num_samples, T, V] for text.
    """
    if not active():
        return predict(model, loader, device, precision)
    logits = [torch.empty(0, device=device)]
    index = [torch.empty(0, device=device, dtype=torch.long)]
    shape: list[int] = []  # one sample's logits' shape
    mine = ShardedBatches(loader, rank(), world_size())
    for _, batch, batch_logits, _ in outputs(model, mine, device, precision=precision):
        logits.append(batch_logits.flatten())
        index.append(batch.index)
        shape = list(batch_logits.shape[1:])
    shapes: list[list[int]] = [[] for _ in range(world_size())]
    dist.all_gather_object(shapes, shape)  # a rank without batches learns it from the others
    sample = max(shapes, key=len)
    all_logits = torch.cat(_gather(torch.cat(logits), device))
    all_index = torch.cat(_gather(torch.cat(index), device))
    result = torch.empty_like(all_logits).view(loader.num_samples, *sample)
    result[all_index] = all_logits.view(loader.num_samples, *sample)
    return result


def _gather(mine: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every rank's 1-D `mine` (any length), on every rank, in rank order."""
    length = torch.tensor([mine.numel()], device=device)
    lengths = [torch.zeros_like(length) for _ in range(world_size())]
    dist.all_gather(lengths, length)
    longest = int(max(n.item() for n in lengths))
    padded = torch.zeros(longest, device=device, dtype=mine.dtype)
    padded[: mine.numel()] = mine
    parts = [torch.zeros_like(padded) for _ in lengths]
    dist.all_gather(parts, padded)
    return [part[: int(n.item())] for part, n in zip(parts, lengths, strict=True)]


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank."""
    message = [value]
    dist.broadcast_object_list(message, src=0)
    return message[0]
