"""The OpenAI completions API's subset that `kd serve` answers, as plain functions of a request's
JSON body: what kdcli's endpoint teacher (and vLLM's users) send.

`/v1/completions`: `prompt` as text, token ids, or a list of either; `max_tokens`;
`temperature` (0: the most likely token); `seed`; `echo` (the prompt's tokens come first in
the answer, the first of them without log-probabilities); `logprobs=k` (the k most likely
tokens at every position, OpenAI's `top_logprobs` shape); `stop` (strings) and vLLM's
`stop_token_ids`; vLLM's `return_tokens_as_token_ids` (tokens named `token_id:N`, which no
two tokens share). A bad request raises `BadRequest`, answered with HTTP 400.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from kdcli.engine.batcher import Batcher


class Tokenizer(Protocol):
    def encode(self, text: str) -> Any: ...
    def decode(self, tokens: list[int]) -> str: ...


class BadRequest(ValueError):
    """A request the server cannot answer as asked (HTTP 400), with the reason."""


@dataclass
class Served:
    """What `kd serve` serves: a causal LM behind a batcher, its tokenizer and limits."""

    name: str
    batcher: Batcher
    tokenizer: Tokenizer
    vocabulary: int
    context: int  # the most tokens the model reads
    max_logprobs: int = 20
    eos: int | None = None

    def encode(self, text: str) -> list[int]:
        try:
            return [int(t) for t in self.tokenizer.encode(text)]
        except KeyError as error:  # a character-level vocabulary without that character
            raise BadRequest(f"the text holds {error} which the model's vocabulary lacks") from None


def models(served: Served) -> dict[str, Any]:
    entry = {"id": served.name, "object": "model", "owned_by": "kdcli"}
    return {"object": "list", "data": [{**entry, "max_model_len": served.context}]}


def tokenize(served: Served, body: dict[str, Any]) -> dict[str, Any]:
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise BadRequest("`prompt` must be a text")
    tokens = served.encode(prompt)
    return {"tokens": tokens, "count": len(tokens), "max_model_len": served.context}


def _prompts(served: Served, prompt: Any) -> list[list[int]]:
    """The request's prompts as token ids (one text, one list of ids, or a list of either)."""
    if isinstance(prompt, str):
        return [served.encode(prompt)]
    if isinstance(prompt, list) and prompt and all(_is_id(t) for t in prompt):
        return [[int(t) for t in prompt]]
    if isinstance(prompt, list) and prompt:
        return [p for item in prompt for p in _prompts(served, item)]
    raise BadRequest("`prompt` must be a text, a list of token ids, or a list of either")


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadRequest(f"`{name}` must be a number in [{low}, {high}], not {value!r}")
    return float(value)


@dataclass
class Settings:
    max_tokens: int
    temperature: float
    seed: int
    echo: bool
    logprobs: int | None
    stop: list[str]
    stop_ids: set[int]
    ids_as_names: bool


def _settings(served: Served, body: dict[str, Any]) -> Settings:
    logprobs = body.get("logprobs")
    if logprobs is not None:
        logprobs = int(_number(body, "logprobs", 0, 0, 1 << 20))
        if logprobs > served.max_logprobs:
            raise BadRequest(
                f"logprobs={logprobs}: this server returns at most {served.max_logprobs} "
                "(start it with --max-logprobs N)"
            )
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    stop_ids = body.get("stop_token_ids") or []
    if not all(isinstance(s, str) for s in stop) or not all(_is_id(t) for t in stop_ids):
        raise BadRequest("`stop` must be texts and `stop_token_ids` token ids")
    return Settings(
        max_tokens=int(_number(body, "max_tokens", 16, 0, served.context)),
        temperature=_number(body, "temperature", 1.0, 0.0, 100.0),
        seed=int(_number(body, "seed", 0, 0, 2**63 - 1)),
        echo=bool(body.get("echo", False)),
        logprobs=logprobs,
        stop=list(stop),
        stop_ids={int(t) for t in stop_ids} | ({served.eos} if served.eos is not None else set()),
        ids_as_names=bool(body.get("return_tokens_as_token_ids", False)),
    )


def complete(served: Served, body: dict[str, Any]) -> dict[str, Any]:
    """The answer to a `/v1/completions` request's JSON `body`."""
    model = body.get("model")
    if model is not None and model != served.name:
        raise BadRequest(f"model {model!r} is not served here; this server serves {served.name!r}")
    settings = _settings(served, body)
    prompts = _prompts(served, body.get("prompt"))
    for tokens in prompts:
        if not tokens or len(tokens) > served.context or max(tokens) >= served.vocabulary:
            raise BadRequest(
                f"a prompt must hold 1 to {served.context} tokens below {served.vocabulary}"
            )
        if min(tokens) < 0:
            raise BadRequest("token ids must not be negative")
    choices = [_choice(served, tokens, settings, i) for i, tokens in enumerate(prompts)]
    written = sum(c.pop("_written") for c in choices)
    read = sum(len(t) for t in prompts)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": served.name,
        "choices": choices,
        "usage": {
            "prompt_tokens": read,
            "completion_tokens": written,
            "total_tokens": read + written,
        },
    }


def _choice(served: Served, prompt: list[int], settings: Settings, index: int) -> dict[str, Any]:
    """One prompt's completion: its tokens drawn one at a time (each step batched with other
    requests' by the batcher), with the log-probabilities asked for."""
    generator = torch.Generator().manual_seed(settings.seed + index)
    tokens, steps = list(prompt), []
    finish = "length"
    logp = served.batcher.log_probs([tokens])[0]  # every prompt position's next token
    prompt_steps = list(logp[:-1])
    for _ in range(settings.max_tokens):
        step = logp[-1]
        if settings.temperature == 0:
            token = int(step.argmax())
        else:
            probs = torch.softmax(step / settings.temperature, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
        tokens.append(token)
        steps.append(step)
        text = served.tokenizer.decode(tokens[len(prompt) :])
        if token in settings.stop_ids or any(s in text for s in settings.stop):
            finish = "stop"
            break
        if len(steps) < settings.max_tokens:
            logp = served.batcher.log_probs([tokens[-served.context :]])[0]
    written = tokens[len(prompt) :]
    text = _cut(served.tokenizer.decode(written), settings.stop)
    shown = tokens if settings.echo else written
    choice: dict[str, Any] = {
        "index": index,
        "text": (served.tokenizer.decode(prompt) if settings.echo else "") + text,
        "finish_reason": finish,
        "logprobs": None,
        "_written": len(written),
    }
    if settings.logprobs is not None:
        chosen = [None, *prompt_steps] if settings.echo else []
        choice["logprobs"] = _logprobs(served, shown, [*chosen, *steps], settings)
    return choice


def _cut(text: str, stop: list[str]) -> str:
    """The text up to the first stop string (OpenAI leaves the stop string out)."""
    ends = [text.index(s) for s in stop if s in text]
    return text[: min(ends)] if ends else text


def _logprobs(
    served: Served, tokens: list[int], steps: list[torch.Tensor | None], settings: Settings
) -> dict[str, Any]:
    """OpenAI's `logprobs` object: each token, its log-probability, and the top k tokens at
    its position (`None` for the first prompt token, which nothing predicts)."""
    k = settings.logprobs or 0
    name = _namer(served, settings.ids_as_names)
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    for token, step in zip(tokens, steps, strict=True):
        if step is None:
            token_logprobs.append(None)
            top_logprobs.append(None)
            continue
        token_logprobs.append(float(step[token]))
        values, ids = step.topk(k) if k else (torch.empty(0), torch.empty(0, dtype=torch.long))
        top_logprobs.append({name(int(i)): float(v) for v, i in zip(values, ids, strict=True)})
    texts = [name(t) for t in tokens]
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(served.tokenizer.decode([token]))
    return {
        "tokens": texts,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }


def _namer(served: Served, ids_as_names: bool):
    if ids_as_names:
        return lambda token: f"token_id:{token}"
    return lambda token: served.tokenizer.decode([token])
