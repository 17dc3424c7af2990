"""Fully sharded data parallel training (PyTorch FSDP2, `fully_shard`) under torchrun.

With `distributed.strategy=fsdp` each of the N processes keeps 1/N of the student's weights,
of their gradients and of the optimizer's state, where DDP (kdcli/engine/distributed.py) keeps
all of them on every process. The batches are split as under DDP (each rank trains on its
share of every global batch) and the gradients are averaged over the ranks, so the steps are
DDP's, up to float rounding.

How it fits the one loop (kdcli/engine/loop.py):

- `shard`: a copy of the model is sharded and trained; the caller's model waits in host
  memory. Each repeated block (a GPT's or a Hugging Face model's transformer blocks: the items
  of a container of two or more modules of one class) is one FSDP unit, gathered for its own
  forward and backward pass only, then the root holds the rest (embeddings, head, norms);
  a model without repeated blocks is one unit. In bf16 the weights are gathered in bf16 and
  the gradients reduced in fp32; the optimizer's weights and state stay fp32.
- `gather_into`: when training ends, the trained weights are gathered one tensor at a time
  into the caller's model on every rank, so that every rank ends with the whole trained model,
  as under DDP: the pipeline saves (student.pt holds the full weights) and evaluates it as it
  does a DDP-trained one.
- `ShardedParts`: the saved training state gathers the full model and optimizer state into
  rank 0's host memory, and rank 0 writes the one file kdcli/engine/state.py owns; on resume
  every rank reads the file and keeps its shard. One file, written atomically, loaded with
  weights_only and resumable at another number of processes; the price is that the whole
  state (16 bytes per parameter with AdamW) passes through rank 0's host memory at each save,
  which torch.distributed.checkpoint's per-rank files would avoid.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from kdcli.engine import distributed
from kdcli.engine.precision import DTYPES, Precision, prepare
from kdcli.engine.state import Parts

log = logging.getLogger(__name__)

LAYOUT = "fsdp-full"
"""What a state saved by `ShardedParts` records: full state dicts, optimizer state by name."""

CONTAINERS = (nn.Sequential, nn.ModuleList)


def units(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks, each to be its own FSDP unit: the items of the outermost
    containers (nn.Sequential, nn.ModuleList) that hold two or more modules of one class, each
    with weights. Empty for a model without any (it is sharded whole)."""
    found: list[nn.Module] = []
    for child in model.children():
        if isinstance(child, CONTAINERS) and _repeated(list(child)):
            found.extend(child)
        else:
            found.extend(units(child))
    return found


def _repeated(items: list[nn.Module]) -> bool:
    return (
        len(items) >= 2
        and len({type(item) for item in items}) == 1
        and all(any(True for _ in item.parameters()) for item in items)
    )


def policy(precision: Precision) -> MixedPrecisionPolicy:
    """bf16: weights gathered (and the forward pass run) in bf16, gradients reduced in fp32.
    fp32: nothing cast. (fp16 is refused with FSDP: its loss scaler's overflow check is each
    rank's own, kdcli/config/objects.py.)"""
    if precision.reduced:
        return MixedPrecisionPolicy(param_dtype=DTYPES[precision.name], reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard(model: nn.Module, device: torch.device, precision: Precision) -> nn.Module:
    """A sharded copy of `model` to train on `device` (this rank's 1/N of each weight there),
    over every rank of the process group; `model` moves to the CPU until `gather_into`."""
    copied = prepare(copy.deepcopy(model.to("cpu")), precision)
    mesh = init_device_mesh(device.type, (distributed.world_size(),))
    mixed, blocks = policy(precision), units(copied)
    for unit in blocks:
        fully_shard(unit, mesh=mesh, mp_policy=mixed)
    fully_shard(copied, mesh=mesh, mp_policy=mixed)
    log.info(
        "FSDP         %s sharded over %d processes (%d blocks, each gathered for its own pass)",
        type(model).__name__,
        distributed.world_size(),
        len(blocks),
    )
    return copied


@torch.no_grad()
def gather_into(sharded: nn.Module, model: nn.Module, device: torch.device) -> None:
    """Copy the weights (and buffers) of `sharded` into `model`, whole, on every rank (one
    tensor at a time: each a collective every rank takes part in), then move `model` to
    `device`."""
    target = model.state_dict()
    for name, value in sharded.state_dict().items():
        target[name].copy_(value.full_tensor() if isinstance(value, DTensor) else value)
    model.to(device)


FULL_TO_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)


class ShardedParts(Parts):
    """A training state's parts with a sharded model and optimizer (see the module): `state`
    gathers the full state into rank 0's host memory (the other ranks get empty dicts; every
    rank must call it), `load` takes full state dicts on every rank and keeps each rank's
    shard."""

    def state(self) -> dict[str, Any]:
        model, optimizer = get_state_dict(self.model, self.optimizer, options=FULL_TO_RANK0)
        return {**super().state(), "model": model, "optimizer": optimizer, "layout": LAYOUT}

    def load(self, state: dict[str, Any]) -> None:
        if state.get("layout") != LAYOUT:
            raise ValueError("saved by distributed.strategy=ddp, not fsdp")
        set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
            options=StateDictOptions(full_state_dict=True),
        )
        self.loss.load_state_dict(state["loss"])
        self.scheduler.load_state_dict(state["scheduler"])

    def backup(self) -> dict[str, Any]:
        """This rank's own shards as they are (no collective), for `restore`."""
        return copy.deepcopy(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "loss": self.loss.state_dict(),
                "scheduler": self.scheduler.state_dict(),
            }
        )

    def restore(self, backup: dict[str, Any]) -> None:
        self.model.load_state_dict(backup["model"])
        self.optimizer.load_state_dict(backup["optimizer"])
        self.loss.load_state_dict(backup["loss"])
        self.scheduler.load_state_dict(backup["scheduler"])
