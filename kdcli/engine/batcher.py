"""Forward passes of a causal LM gathered from many callers into batches (`kd serve`).

Each caller (one HTTP request's prompt) asks for the log-probabilities of the next token at
every position of its token sequence; a worker thread takes whatever is waiting (at most
`max_batch` sequences, after waiting up to `wait_s` for more to arrive), pads the sequences on
the right to one length, runs the model once and hands each caller its rows. A causal model's
position t reads positions <= t only, so right padding leaves every real position's output
as it would be alone.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

import torch
from torch import nn

from kdcli.engine import precision as numerics
from kdcli.engine.precision import FP32, Precision

Job = tuple[list[int], "Future[torch.Tensor]"]


class Batcher:
    """Runs `model` (token ids [B, T] -> logits [B, T, V]) on batches of callers' sequences."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        max_batch: int = 32,
        wait_s: float = 0.005,
        precision: Precision = FP32,
    ) -> None:
        self.model = model.eval().to(device)
        self.device = device
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.precision = precision
        numerics.prepare(self.model, precision)
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name="kd-serve-batcher", daemon=True)
        self._worker.start()

    def log_probs(self, sequences: list[list[int]]) -> list[torch.Tensor]:
        """For each sequence of token ids, the log-probabilities [T, V] (fp32, CPU) of the
        next token after each of its positions. Blocks until the batches holding them ran."""
        futures: list[Future[torch.Tensor]] = []
        for tokens in sequences:
            future: Future[torch.Tensor] = Future()
            self._jobs.put((list(tokens), future))
            futures.append(future)
        return [future.result() for future in futures]

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.join(timeout=5)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch = [job]
            stop = self._gather(batch)
            _run(self._forward, batch)
            if stop:
                return

    def _gather(self, batch: list[Job]) -> bool:
        """Add the jobs that arrive within `wait_s` to `batch`; True when told to stop."""
        while len(batch) < self.max_batch:
            try:
                job = self._jobs.get(timeout=self.wait_s)
            except queue.Empty:
                return False
            if job is None:
                return True
            batch.append(job)
        return False

    @torch.no_grad()
    def _forward(self, sequences: list[list[int]]) -> list[torch.Tensor]:
        length = max(len(s) for s in sequences)
        tokens = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            tokens[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        with numerics.autocast(self.precision, self.device):
            logits = self.model(tokens.to(self.device))
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        return [logp[row, : len(sequence)] for row, sequence in enumerate(sequences)]


def _run(forward: Callable[[list[list[int]]], list[torch.Tensor]], batch: list[Job]) -> None:
    """One forward pass over `batch`; its outputs, or its error, go to every caller."""
    try:
        outputs = forward([tokens for tokens, _ in batch])
    except Exception as error:  # the callers report it (HTTP 500); the worker lives on
        for _, future in batch:
            future.set_exception(error)
        return
    for (_, future), output in zip(batch, outputs, strict=True):
        future.set_result(output)
