"""The endpoint teacher's checks before any work (kdcli/models/lm/endpoint.py): the server
answers at `teacher.url`, serves `teacher.model`, splits text into the token ids
`dataset.tokenizer` does, and returns the top-k log-probabilities of a prompt's tokens (echo).
Each failure is a UserError naming the key and what would fix it."""

from __future__ import annotations

from typing import Any

from kdcli.errors import UserError
from kdcli.models.lm.endpoint import EndpointLM
from kdcli.models.lm.openai_api import ServerError, token_id

START_ONE = (
    "start one (kd serve MODEL --port N, or vLLM, SGLang: docs/serving.md) or fix the address, "
    "which ends with /v1 (e.g. teacher.url=http://127.0.0.1:8000/v1)"
)


def preflight(module: EndpointLM, vocabulary: Any, probe: str, k: int) -> None:
    """Check the server behind `module` against the data's `vocabulary` with the text `probe`
    (one the vocabulary can encode), for `k` log-probabilities per position."""
    url, model = module.connection.url, module.connection.model
    served = _models(module)
    if model not in served:
        listed = ", ".join(served[:10]) or "none"
        raise UserError(
            f"teacher.model={model}: the server at teacher.url={url} serves {listed}; set "
            f"teacher.model to one of them."
        )
    module.use_tokenizer(vocabulary)
    local = [int(t) for t in vocabulary.encode(probe)]
    remote = _server_tokens(module, probe)
    if remote != local:
        at = next((i for i, (a, b) in enumerate(zip(remote, local, strict=False)) if a != b), None)
        at = min(len(remote), len(local)) if at is None else at
        raise UserError(
            f"teacher.model={model} at teacher.url={url} splits text into other tokens than "
            f"the data's tokenizer (dataset.tokenizer): {probe[:40]!r} is {remote[at : at + 8]} "
            f"there and {local[at : at + 8]} here from token {at} on. Serve the teacher with the "
            "data's tokenizer, or set dataset.tokenizer to the directory of the teacher's "
            "(nothing was sent for labelling)."
        )
    _check_logprobs(module, local[:16], k)


def _models(module: EndpointLM) -> list[str]:
    url = module.connection.url
    try:
        listed = module.client.get("/models")
    except ServerError as error:
        raise _unreachable(module, error) from None
    data = listed.get("data") if isinstance(listed, dict) else None
    if not isinstance(data, list):
        raise UserError(
            f"teacher.url={url}: GET {url}/models is not the OpenAI API's answer; {START_ONE}."
        )
    return [str(m.get("id")) for m in data if isinstance(m, dict)]


def _unreachable(module: EndpointLM, error: ServerError) -> UserError:
    url = module.connection.url
    if error.status == 0:
        return UserError(f"teacher.url={url}: no server answers there ({error}); {START_ONE}.")
    if error.status in (401, 403):
        env = module.connection.api_key_env
        fix = (
            f"check the key in ${env} (teacher.api_key_env)"
            if env
            else "set teacher.api_key_env=NAME, the environment variable holding its API key"
        )
        return UserError(f"teacher.url={url}: the server refused kd (HTTP {error.status}); {fix}.")
    return UserError(
        f"teacher.url={url}: GET {url}/models answered HTTP {error.status} ({error}); {START_ONE}."
    )


def _server_tokens(module: EndpointLM, text: str) -> list[int]:
    """The server's token ids of `text`: from /tokenize (vLLM, SGLang, kd serve), else from
    the echo of a text prompt."""
    model = module.connection.model
    body = {"model": model, "prompt": text, "add_special_tokens": False}
    for root in (True, False):
        try:
            answer = module.client.post("/tokenize", body, root=root)
        except ServerError as error:
            if error.status in (404, 405):
                continue
            raise _unreachable(module, error) from None
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if isinstance(tokens, list) and all(isinstance(t, int) for t in tokens):
            return tokens
    body = {"model": model, "prompt": text, "max_tokens": 1, "echo": True, "logprobs": 1}
    try:
        answer = module.client.post("/completions", {**body, "return_tokens_as_token_ids": True})
        names = answer["choices"][0]["logprobs"]["tokens"][:-1]
        return [token_id(str(name), module.names) for name in names]
    except (ServerError, KeyError, IndexError, TypeError) as error:
        raise UserError(
            f"teacher.url={module.connection.url}: the server neither tokenizes text "
            f"(/tokenize) nor echoes a prompt's tokens ({error}), so kd cannot check that it "
            "shares dataset.tokenizer; use a server with /tokenize (vLLM, SGLang, kd serve)."
        ) from None


def _check_logprobs(module: EndpointLM, tokens: list[int], k: int) -> None:
    url, model = module.connection.url, module.connection.model
    try:
        [(_, ids)] = module._request([tokens], k)
    except ServerError as error:
        said = f"HTTP {error.status}: {error}" if error.status != 200 else str(error)
        raise UserError(
            f"teacher.url={url} (teacher.model={model}) gives no top-{k} log-probabilities of a "
            f"prompt's tokens ({said}). kd needs `echo` with `logprobs={k}` (soft_labels.topk, "
            f"teacher.logprobs): start vLLM with --max-logprobs {k} (kd serve: --max-logprobs "
            f"{k}), or lower soft_labels.topk and teacher.logprobs."
        ) from None
    if int(ids.max()) >= module.vocabulary:
        raise UserError(
            f"teacher.model={model} at teacher.url={url} names token {int(ids.max())}, beyond "
            f"the data's vocabulary of {module.vocabulary} (dataset.tokenizer): serve the "
            "teacher with the data's tokenizer."
        )
