"""The client side of the OpenAI completions API with top-k log-probabilities, as kdcli's
endpoint teacher reads it from an inference server (vLLM, SGLang, `kd serve`, ...).

Requests go through httpx (the `endpoint` extra) with a timeout, and are retried with
exponential backoff (honouring `Retry-After`) on HTTP 429, 5xx and connection errors. An API
key comes from the environment variable the config names and goes into the Authorization
header only: no message, log line or cache key ever holds it.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdcli.errors import UserError

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request

RETRIED = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Connection:
    """Where the server is and how to talk to it (`teacher.*`)."""

    url: str  # ends with /v1
    model: str
    api_key_env: str | None = None
    timeout_s: float = 60.0
    retries: int = 5
    backoff_s: float = 0.5


class ServerError(Exception):
    """An answer that is not what was asked for: `status` (0: no answer), and what it said."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def httpx_module() -> Any:
    try:
        import httpx
    except ImportError:
        raise UserError("teacher=endpoint needs httpx: pip install 'kdcli[endpoint]'.") from None
    return httpx


class Client:
    """Requests to one server, retried as the module says; thread-safe (one pool)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.httpx = httpx_module()
        headers = {"Content-Type": "application/json"}
        if connection.api_key_env:
            key = os.environ.get(connection.api_key_env)
            if not key:
                raise UserError(
                    f"teacher.api_key_env={connection.api_key_env}: that environment variable "
                    "is not set; export it with the server's API key, or set "
                    "teacher.api_key_env=null for a server without one."
                )
            headers["Authorization"] = f"Bearer {key}"
        self._http = self.httpx.Client(headers=headers, timeout=connection.timeout_s)

    @property
    def root(self) -> str:
        """The server's address without the API version (vLLM's /tokenize lives there)."""
        return self.connection.url.rstrip("/").removesuffix("/v1")

    def get(self, path: str) -> Any:
        return self._request("GET", f"{self.connection.url.rstrip('/')}{path}", None)

    def post(self, path: str, body: dict[str, Any], root: bool = False) -> Any:
        base = self.root if root else self.connection.url.rstrip("/")
        return self._request("POST", f"{base}{path}", body)

    def _request(self, method: str, url: str, body: dict[str, Any] | None) -> Any:
        attempts = self.connection.retries + 1
        for attempt in range(attempts):
            try:
                response = self._http.request(method, url, json=body)
            except self.httpx.TransportError as error:  # no answer: refused, reset, timed out
                problem = ServerError(0, f"{type(error).__name__}: {error}")
                wait = None
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError:
                        raise ServerError(
                            response.status_code, "an answer that is not JSON"
                        ) from None
                problem = ServerError(response.status_code, _message(response))
                if response.status_code not in RETRIED:
                    raise problem
                wait = _retry_after(response)
            if attempt + 1 < attempts:
                delay = wait if wait is not None else self._backoff(attempt)
                log.warning("teacher      %s; retrying in %.1f s", _short(problem), delay)
                time.sleep(delay)
        raise problem

    def _backoff(self, attempt: int) -> float:
        return self.connection.backoff_s * 2**attempt * (1 + 0.25 * random.random())

    def close(self) -> None:
        self._http.close()


def _short(problem: ServerError) -> str:
    return f"HTTP {problem.status}: {problem}" if problem.status else str(problem)


def _message(response: Any) -> str:
    """What an error answer says (OpenAI's `{"error": {"message": ...}}`, or its text)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or body)[:300]
        return str(error)[:300]
    return str(body)[:300]


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(60.0, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


# ---- what the answers hold -------------------------------------------------------------------


def token_id(name: str, names: Callable[[str], int | None]) -> int:
    """The token id a `top_logprobs` key names: `token_id:N` (vLLM's
    return_tokens_as_token_ids, kd serve), else the token's text looked up in the tokenizer."""
    if name.startswith("token_id:"):
        return int(name.removeprefix("token_id:"))
    found = names(name)
    if found is None:
        raise ServerError(
            200,
            f"the server names a token {name!r} by its text, which is no single token of "
            "dataset.tokenizer (start vLLM with return_tokens_as_token_ids support, or serve "
            "with kd serve)",
        )
    return found


def top_k(
    positions: list[dict[str, float] | None], k: int, names: Callable[[str], int | None]
) -> tuple[np.ndarray, np.ndarray]:
    """The k most likely tokens' probabilities [P, k] (float32, largest first) and ids
    [P, k] (int64) at each position of OpenAI's `top_logprobs`."""
    probs = np.zeros((len(positions), k), dtype=np.float32)
    ids = np.zeros((len(positions), k), dtype=np.int64)
    for row, top in enumerate(positions):
        if not isinstance(top, dict) or len(top) < k:
            have = 0 if not isinstance(top, dict) else len(top)
            raise ServerError(200, f"{have} top log-probabilities at a position, {k} asked")
        pairs = sorted(((v, token_id(n, names)) for n, v in top.items()), key=lambda p: -p[0])
        probs[row] = np.exp(np.array([v for v, _ in pairs[:k]], dtype=np.float64))
        ids[row] = [i for _, i in pairs[:k]]
    return probs, ids


def next_token_top_k(
    choice: dict[str, Any], length: int, k: int, names: Callable[[str], int | None]
) -> tuple[np.ndarray, np.ndarray]:
    """From one answer to `echo=true, logprobs=k, max_tokens=1` for a prompt of `length`
    tokens: the distribution of the next token after each prompt position [length, k]. The
    prompt's tokens 1..length-1 carry those after positions 0..length-2; the written token
    carries the one after the last."""
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    top = logprobs.get("top_logprobs") if isinstance(logprobs, dict) else None
    if not isinstance(top, list) or len(top) < length + 1:
        raise ServerError(200, "no log-probabilities of the prompt's tokens (echo) in the answer")
    return top_k(top[1 : length + 1], k, names)
