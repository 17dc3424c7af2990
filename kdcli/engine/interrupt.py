"""Stopping on a signal without losing work: SIGTERM (`kill`, a SLURM preemption), SIGINT
(Ctrl-C), SIGUSR1 (SLURM's `--signal`, before the time limit; scripts/*.sbatch) and SIGUSR2
(submitit's, under `hydra/launcher=slurm`).

While `handle_signals()` is active, a signal outside the training loop raises `Interrupted`
at once (nothing is half-written: every write is atomic). Inside the loop (`deferred()`) it is
only noted; the loop finishes its step, saves its state (engine/state.py) and raises
`Interrupted` itself, so a rerun of the same command continues from that step. A handler
that was there before (submitit's, which requeues the job) is called after the save:
`pass_on`.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)


class Interrupted(BaseException):
    """A signal stopped the run. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way up mistakes it for an error to recover from."""

    def __init__(self, signum: int, saved: Path | None = None, position: str = "") -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.saved = saved  # the training state written on the way out, if any
        self.position = position  # e.g. "teacher, epoch 3, step 12"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 143 SIGTERM, 130 SIGINT, 138 SIGUSR1

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_pending: int | None = None
_deferring = 0
_previous: dict[int, object] = {}  # the handlers `handle_signals` replaced


def _on_signal(signum: int, frame: object) -> None:
    global _pending
    if _pending is not None:
        return  # a second signal while the first is being handled: already stopping
    _pending = signum
    if not _deferring:
        raise Interrupted(signum)


def pending() -> int | None:
    """The signal received inside `deferred()` and not yet acted on, if any."""
    return _pending


@contextmanager
def handle_signals() -> Iterator[None]:
    """Turn SIGTERM, SIGINT and SIGUSR1 into `Interrupted` for the block (main thread only)."""
    global _pending
    _pending = None
    try:
        previous = {signum: signal.signal(signum, _on_signal) for signum in SIGNALS}
    except ValueError:  # not the main thread: leave the signals as they are
        yield
        return
    _previous.update(previous)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _previous.clear()
        _pending = None


def pass_on(signum: int) -> None:
    """Call the Python handler that `handle_signals` replaced for `signum`, if there was one
    (submitit's requeues the job); the default actions are not taken (kd exits by itself)."""
    handler = _previous.get(signum)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signum, None)


@contextmanager
def deferred() -> Iterator[None]:
    """Inside the block a signal is only noted; the caller checks `pending()` at safe points."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
