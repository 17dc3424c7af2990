"""`teacher=endpoint`: a teacher behind an inference server that speaks the OpenAI completions
API with top-k log-probabilities (vLLM, SGLang, `kd serve`; docs/serving.md).

`EndpointLM` is a kdcli model (token ids [B, T] -> logits [B, T, V]) whose forward pass asks the
server: each row goes as token ids with `echo`, `logprobs=k` and `max_tokens=1`, which gives
the k most likely next tokens after every position; the logits are their log-probabilities,
with the rest of the mass spread evenly over the other tokens (as a top-k soft-label store
reads back). Requests hold `batch_size` rows and `concurrency` of them run at once. The
soft-label stage reads the top-k itself (`top_k_batches`), so nothing is lost to the spread.

`preflight` runs before any work: the server answers, serves `teacher.model`, tokenizes as
`dataset.tokenizer` does, and returns enough log-probabilities; else a UserError naming the
key and the fix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import torch
from torch import nn

from kdcli.errors import UserError
from kdcli.models.lm.openai_api import Client, Connection, ServerError, next_token_top_k

TopK = tuple[np.ndarray, np.ndarray]  # probabilities [T, k] float32, token ids [T, k] int64


class EndpointLM(nn.Module):
    """A causal LM behind `url` (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        model: str,
        num_classes: int,
        in_channels: int = 1,
        image_size: int = 64,
        api_key_env: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 60.0,
        retries: int = 5,
        batch_size: int = 8,
        logprobs: int = 20,
    ) -> None:
        super().__init__()
        self.connection = Connection(url, model, api_key_env, float(timeout_s), int(retries))
        self.vocabulary = num_classes
        self.concurrency = int(concurrency)
        self.batch_size = int(batch_size)
        self.logprobs = min(int(logprobs), num_classes)
        self.names: Callable[[str], int | None] = lambda name: None
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # where outputs go
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.connection)
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        """A copy (deepcopy, as measurements take one) opens its own connections."""
        return {**self.__dict__, "_client": None}

    def use_tokenizer(self, vocabulary: Any) -> None:
        """Read tokens that the server names by their text with `vocabulary` (the data's)."""
        self.names = text_to_id(vocabulary, self.vocabulary)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        rows = tokens.tolist()
        results: list[TopK | None] = [None] * len(rows)
        batches = list(range(0, len(rows), self.batch_size))
        for start, answers in self.top_k_batches(rows, self.logprobs, batches):
            results[start : start + len(answers)] = answers
        probs = torch.from_numpy(np.stack([r[0] for r in results if r is not None]))
        ids = torch.from_numpy(np.stack([r[1] for r in results if r is not None]))
        rest = (1.0 - probs.sum(-1, keepdim=True)).clamp_min(1e-6) / max(
            1, self.vocabulary - probs.shape[-1]
        )
        full = rest.expand(*probs.shape[:-1], self.vocabulary).clone()
        full.scatter_(-1, ids, probs)
        logits = full.clamp_min(torch.finfo(torch.float32).tiny).log()
        return logits.to(self.anchor.device)

    def top_k_batches(
        self, rows: list[list[int]], k: int, starts: list[int]
    ) -> Iterator[tuple[int, list[TopK]]]:
        """For each start in `starts`, the top-k after every position of rows
        start..start+batch_size-1, one request each, `concurrency` at once; yielded as they
        arrive (start, results). A server that fails past its retries raises a UserError."""
        with ThreadPoolExecutor(max(1, self.concurrency)) as pool:
            waiting: dict[Future[list[TopK]], int] = {}
            queue = list(reversed(starts))
            while queue or waiting:
                while queue and len(waiting) < max(1, self.concurrency):
                    start = queue.pop()
                    chunk = rows[start : start + self.batch_size]
                    waiting[pool.submit(self._request, chunk, k)] = start
                done, _ = wait(waiting, return_when=FIRST_COMPLETED)
                for future in done:
                    start = waiting.pop(future)
                    try:
                        yield start, future.result()
                    except ServerError as error:
                        for other in waiting:
                            other.cancel()
                        raise self.failed(error) from None

    def _request(self, rows: list[list[int]], k: int) -> list[TopK]:
        body = {
            "model": self.connection.model,
            "prompt": rows,
            "max_tokens": 1,
            "temperature": 0,
            "echo": True,
            "logprobs": k,
            "return_tokens_as_token_ids": True,
        }
        answer = self.client.post("/completions", body)
        choices = sorted(_choices(answer, len(rows)), key=lambda c: c.get("index", 0))
        return [
            next_token_top_k(c, len(r), k, self.names) for c, r in zip(choices, rows, strict=True)
        ]

    def write(
        self, prompts: list[list[int]], max_tokens: int, temperature: float, seed: int,
        stop: int | None,
    ) -> list[list[int]]:  # fmt: skip
        """The tokens the server writes after each prompt (at most `max_tokens`, ending at
        `stop` when given), one request per prompt, `concurrency` at once."""

        def one(index: int) -> list[int]:
            body = {
                "model": self.connection.model, "prompt": prompts[index],
                "max_tokens": max_tokens, "temperature": temperature, "seed": seed + index,
                "logprobs": 1, "return_tokens_as_token_ids": True,
                "stop_token_ids": [] if stop is None else [stop],
            }  # fmt: skip
            choice = _choices(self.client.post("/completions", body), 1)[0]
            names = (choice.get("logprobs") or {}).get("tokens") or []
            return [self._id(name) for name in names][:max_tokens]

        try:
            with ThreadPoolExecutor(max(1, self.concurrency)) as pool:
                return list(pool.map(one, range(len(prompts))))
        except ServerError as error:
            raise self.failed(error) from None

    def _id(self, name: str) -> int:
        from kdcli.models.lm.openai_api import token_id

        return token_id(name, self.names)

    def failed(self, error: ServerError) -> UserError:
        """A server that stopped answering as it should, as the error kd reports."""
        where = f"teacher.url={self.connection.url} (teacher.model={self.connection.model})"
        said = f"HTTP {error.status}: {error}" if error.status else str(error)
        return UserError(
            f"{where} failed after {self.connection.retries} retries ({said}). Check that the "
            "server runs (and teacher.retries / teacher.timeout_s); the soft labels written so "
            "far are kept: run the same command again to continue."
        )


def _choices(answer: Any, count: int) -> list[dict[str, Any]]:
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or len(choices) != count:
        raise ServerError(200, f"an answer without {count} choice(s)")
    return choices


def text_to_id(vocabulary: Any, size: int) -> Callable[[str], int | None]:
    """Each token's text -> its id, for the tokens whose text no other token shares."""
    table: dict[str, int | None] = {}
    for token in range(size):
        try:
            text = vocabulary.decode([token])
        except (KeyError, IndexError, ValueError):
            continue
        table[text] = None if text in table else token
    return table.get


def tokenizer_fingerprint(vocabulary: Any) -> str:
    """A hash of the data's tokenizer (its characters, or its token -> id table): the endpoint
    teacher's cache key holds it, with the server's model id, not the URL."""
    inner = getattr(vocabulary, "tokenizer", None)
    if inner is not None and hasattr(inner, "get_vocab"):
        content: Any = sorted(inner.get_vocab().items())
    else:
        content = [type(vocabulary).__name__, getattr(vocabulary, "characters", None)]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]
