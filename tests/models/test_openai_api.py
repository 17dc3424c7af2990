"""The endpoint teacher's HTTP client (kdcli/models/lm/openai_api.py): retries with backoff on
429, 5xx and lost connections, none on other errors, the API key only in its header, and the
answers' top-k read by token id or text."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from kd_server import free_port

from kdcli.errors import UserError
from kdcli.models.lm.openai_api import Client, Connection, ServerError, next_token_top_k, top_k


class Flaky(BaseHTTPRequestHandler):
    """Answers each request with the next status of `statuses` (then 200), and records the
    Authorization header it got."""

    statuses: list[int] = []
    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append(self.headers.get("Authorization"))
        status = self.statuses.pop(0) if self.statuses else 200
        body = json.dumps({"error": {"message": "busy"}} if status >= 400 else {"ok": True})
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Flaky.seen = []
    yield server, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_busy_answers_are_retried_until_one_is_good(flaky):
    _, url = flaky
    Flaky.statuses = [429, 503, 500]
    client = Client(Connection(url, "m", retries=3, backoff_s=0.001))
    assert client.get("/models") == {"ok": True}
    assert len(Flaky.seen) == 4


def test_retries_end_and_a_refusal_is_not_retried(flaky):
    _, url = flaky
    Flaky.statuses = [503, 503, 503]
    client = Client(Connection(url, "m", retries=1, backoff_s=0.001))
    with pytest.raises(ServerError, match="busy") as raised:
        client.get("/models")
    assert raised.value.status == 503 and len(Flaky.seen) == 2
    Flaky.statuses = [400]
    with pytest.raises(ServerError):
        client.get("/models")
    assert len(Flaky.seen) == 3  # once


def test_no_server_is_a_connection_error_after_the_retries():
    client = Client(Connection(f"http://127.0.0.1:{free_port()}/v1", "m", retries=1, backoff_s=0))
    with pytest.raises(ServerError) as raised:
        client.get("/models")
    assert raised.value.status == 0


def test_the_api_key_comes_from_the_named_variable_and_goes_in_the_header_only(flaky, monkeypatch):
    _, url = flaky
    monkeypatch.setenv("KD_TEST_KEY", "sekrit-123")
    Flaky.statuses = [401]
    client = Client(Connection(url, "m", api_key_env="KD_TEST_KEY", retries=0))
    with pytest.raises(ServerError) as raised:
        client.get("/models")
    assert Flaky.seen == ["Bearer sekrit-123"]
    assert "sekrit" not in str(raised.value)
    monkeypatch.delenv("KD_TEST_KEY")
    with pytest.raises(UserError, match="teacher.api_key_env=KD_TEST_KEY"):
        Client(Connection(url, "m", api_key_env="KD_TEST_KEY"))


def test_top_k_is_read_by_token_id_or_by_a_token_text_the_tokenizer_knows():
    positions = [{"token_id:3": -0.1, "token_id:1": -2.5}, {"b": -0.5, "a": -1.0}]
    names = {"a": 0, "b": 1}.get
    probs, ids = top_k(positions, 2, names)
    assert ids.tolist() == [[3, 1], [1, 0]]
    np.testing.assert_allclose(probs, np.exp([[-0.1, -2.5], [-0.5, -1.0]]), rtol=1e-6)
    with pytest.raises(ServerError, match="no single token"):
        top_k([{"zz": -1.0}], 1, names)
    with pytest.raises(ServerError, match="1 top log-probabilities at a position, 2 asked"):
        top_k([{"a": -1.0}], 2, names)


def test_the_echoed_prompt_and_the_written_token_give_every_next_token_distribution():
    top = [None, {"token_id:1": -0.2}, {"token_id:2": -0.3}, {"token_id:0": -0.4}]
    probs, ids = next_token_top_k({"logprobs": {"top_logprobs": top}}, 3, 1, lambda n: None)
    assert ids[:, 0].tolist() == [1, 2, 0]
    with pytest.raises(ServerError, match="echo"):
        next_token_top_k({"logprobs": None}, 3, 1, lambda n: None)
