"""The endpoint teacher (kdcli/models/lm/endpoint.py) against kd serve's app in a thread: its
forward pass gives the served model's top-k as logits, requests run concurrently, the tokens
the server writes come back as ids, and a server gone mid-way is a UserError naming
teacher.url."""

from __future__ import annotations

import pytest
import torch
from kd_server import LETTERS, free_port, serving, tiny_served

from kdcli.data.text import Vocabulary
from kdcli.errors import UserError
from kdcli.models.lm.endpoint import EndpointLM, tokenizer_fingerprint


@pytest.fixture(scope="module")
def served():
    served = tiny_served()
    with serving(served) as url:
        yield served, url


def endpoint(url: str, **settings) -> EndpointLM:
    return EndpointLM(url, "tiny", len(LETTERS), retries=0, **settings)


def test_forward_gives_the_top_k_of_the_served_model_as_logits(served):
    model, url = served
    teacher = endpoint(url, logprobs=5, batch_size=2, concurrency=3)
    tokens = torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1], [0, 0, 5, 5], [7, 8, 9, 10], [1, 1, 1, 1]])
    logits = teacher(tokens)
    with torch.no_grad():
        expected = torch.softmax(model.batcher.model(tokens), -1)
    probs = torch.softmax(logits, -1)
    top = expected.topk(5, dim=-1)
    assert torch.equal(probs.topk(5, dim=-1).indices, top.indices)
    torch.testing.assert_close(probs.gather(-1, top.indices), top.values, atol=1e-5, rtol=1e-4)
    rest = 1 - top.values.sum(-1, keepdim=True)  # spread over the other tokens
    others = probs.sum(-1, keepdim=True) - probs.gather(-1, top.indices).sum(-1, keepdim=True)
    torch.testing.assert_close(others, rest, atol=1e-5, rtol=1e-4)


def test_the_tokens_the_server_writes_come_back_as_ids(served):
    model, url = served
    teacher = endpoint(url)
    [written] = teacher.write([[1, 2, 3]], 4, 0.0, 0, None)
    tokens = [1, 2, 3]
    with torch.no_grad():
        for _ in range(4):
            tokens.append(int(model.batcher.model(torch.tensor([tokens]))[0, -1].argmax()))
    assert written == tokens[3:]


def test_a_server_gone_is_a_user_error_naming_the_url_and_saying_progress_is_kept():
    teacher = EndpointLM(f"http://127.0.0.1:{free_port()}/v1", "tiny", 27, retries=0)
    with pytest.raises(UserError, match=r"teacher.url=http://127.0.0.1:\d+/v1 .*run the same"):
        teacher(torch.tensor([[1, 2]]))


def test_the_tokenizer_fingerprint_follows_the_vocabulary_only():
    a, b = Vocabulary("abc"), Vocabulary("abd")
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(Vocabulary("abc"))
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)
