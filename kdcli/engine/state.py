"""A training stage's in-progress state: the one owner of its file.

The state holds everything the loop needs to continue exactly where it stopped: model, loss
(schedules, learned adapters), optimizer, scheduler, loss scaler, the position (epoch and the
batch within it), the epoch's running sums and every RNG. Data order and augmentation are
pure functions of (seed, epoch), so the position is enough to draw the same batches again.
The file is written atomically after every epoch and every `every_s` seconds within one; the
pipeline keeps it in the cache under the stage's fingerprint, so any rerun finds it.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdcli.store.atomic import write_atomic

log = logging.getLogger(__name__)

FORMAT = "kdcli-train-state/1"


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
    # what its model file records of how it was built: the `model` config option and the
    # config's plain values (kdcli/config/from_files.py `model_record`), never code
    record: dict[str, Any] = field(default_factory=dict)

    def restore_rng(self) -> None:
        torch.set_rng_state(self.rng)


@dataclass
class Position:
    """Where training continues: the batch `step` of `epoch`, with the epoch's running sums."""

    epoch: int = 0
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        if self.step == 0:
            return f"after epoch {self.epoch}"
        return f"epoch {self.epoch + 1}, batch {self.step}"


@dataclass
class Parts:
    """What a training state is made of (and restored into)."""

    model: nn.Module
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None = None

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load(self, state: dict[str, Any]) -> None:
        if state.get("layout") is not None:  # kdcli/engine/sharding.py's
            raise ValueError("saved by distributed.strategy=fsdp, not ddp")
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])

    def backup(self) -> dict[str, Any]:
        """A copy of the parts as they are, for `restore` when a saved state does not fit."""
        return copy.deepcopy(self.state())

    def restore(self, backup: dict[str, Any]) -> None:
        self.load(backup)


def _rng_states() -> dict[str, Any]:
    state = np.random.get_state(legacy=True)
    if not isinstance(state, tuple):  # the global generator is MT19937: its state is a tuple
        raise TypeError(f"numpy's random state is a {type(state).__name__}, not a tuple")
    kind, keys, pos, has_gauss, gauss = state
    states: dict[str, Any] = {  # plain values and tensors: the file loads with weights_only
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"].cpu())
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


class TrainState:
    """Saves and restores one stage's state at `path` (None: neither)."""

    def __init__(self, path: Path | None, every_s: float = 300.0) -> None:
        self.path = path
        self.every_s = every_s
        self.last_save = time.monotonic()

    def due(self) -> bool:
        """Whether `every_s` seconds have passed since the last save (within an epoch)."""
        return self.path is not None and time.monotonic() - self.last_save >= self.every_s

    def save(self, parts: Parts, position: Position, write: bool = True) -> None:
        """Save the parts at `position`. A sharded model's parts are gathered by every rank
        together, and written by the one whose `write` is true."""
        if self.path is None:
            return
        state = {
            "format": FORMAT,
            **parts.state(),
            "epoch": position.epoch,
            "step": position.step,
            "sums": position.sums,
            "rng": _rng_states(),
        }
        if write:
            write_atomic(self.path, lambda handle: torch.save(state, handle))
        self.last_save = time.monotonic()

    def resume(self, parts: Parts, device: torch.device) -> Position | None:
        """Restore `parts` and the RNGs from the saved state and return where to continue;
        None when there is no state. A state that cannot be read or does not fit is ignored
        with a warning (the stage starts from scratch; `parts` are left as they were)."""
        if self.path is None:
            return None
        self._remove_torn_writes()
        if not self.path.is_file():
            return None
        before = parts.backup()
        try:
            state = torch.load(self.path, map_location=device, weights_only=True)
            if not isinstance(state, dict) or state.get("format") != FORMAT:
                raise ValueError("not a kdcli training state")
            parts.load(state)
            _restore_rng(state["rng"])
            position = Position(int(state["epoch"]), int(state["step"]), dict(state["sums"]))
        except Exception as error:  # torch.load and load_state_dict raise many types
            parts.restore(before)
            log.warning(
                "ignoring the saved training state %s: it cannot be used (%s: %s); this stage "
                "starts from scratch",
                self.path,
                type(error).__name__,
                str(error).splitlines()[0][:200] if str(error) else "",
            )
            self.discard()
            return None
        log.info("resuming from %s at %s", self.path, position.describe())
        return position

    def _remove_torn_writes(self) -> None:
        """Delete temporary files of saves that a killed process left half-written (the caller
        holds the stage's lock: no one else is writing this state)."""
        assert self.path is not None
        for torn in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            torn.unlink(missing_ok=True)

    def discard(self) -> None:
        """Remove the state: the stage's artifact now holds the result (or it was unusable)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
