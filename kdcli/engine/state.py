"""A training stage's state after each epoch (model, loss, optimizer, scheduler, epoch, RNG):
saved atomically, and resumed from when a rerun finds it."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdcli.store.atomic import write_atomic

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Built:
    """A model built from the seed, with the RNG state right after: the stage that trains it
    restores that state, so training draws the same numbers wherever the model was built."""

    module: nn.Module
    rng: torch.Tensor

    def restore_rng(self) -> None:
        torch.set_rng_state(self.rng)


def _save_state(path: Path, model, loss_fn, optimizer, scheduler, epoch: int) -> None:
    """Everything needed to continue after `epoch`, written atomically."""
    state = {
        "model": model.state_dict(),
        "loss": loss_fn.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "torch_rng": torch.get_rng_state(),
    }
    write_atomic(path, lambda handle: torch.save(state, handle))


def _resume(path: Path | None, model, loss_fn, optimizer, scheduler, device) -> int:
    """The epoch to start from: 0, or the one after the state saved at `path`."""
    if path is None or not path.is_file():
        return 0
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    loss_fn.load_state_dict(state["loss"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"].cpu())
    log.info("resuming from %s after epoch %d", path, state["epoch"] + 1)
    return int(state["epoch"]) + 1
