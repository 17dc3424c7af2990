"""Losses that stop training at their `at`-th call, for the tests of stopping and resuming (a
module name no other test folder uses)."""

import signal

from kdcli.losses import CrossEntropy


class StopsAt(CrossEntropy):
    """Cross-entropy that calls `stop` at its `at`-th call, then goes on if it returns."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def stop(self) -> None:
        raise NotImplementedError

    def forward(self, *args):
        self.calls += 1
        if self.calls == self.at:
            self.stop()
        return super().forward(*args)


class SignalAt(StopsAt):
    """Sends this process `signum` (a real signal) at the `at`-th call."""

    def __init__(self, at: int, signum: int = signal.SIGTERM) -> None:
        super().__init__(at)
        self.signum = signum

    def stop(self) -> None:
        signal.raise_signal(self.signum)


class Crash(StopsAt):
    """Raises KeyboardInterrupt at the `at`-th call, as a crash the loop does not expect."""

    def stop(self) -> None:
        raise KeyboardInterrupt
