"""kd serve's completions API as plain functions (kdcli/engine/completions.py): the shapes
OpenAI's API gives, and log-probabilities equal to the model's own."""

from __future__ import annotations

import math

import pytest
import torch
from kd_server import tiny_served

from kdcli.engine.completions import BadRequest, complete, models, tokenize


@pytest.fixture(scope="module")
def served():
    served = tiny_served(max_logprobs=5)
    yield served
    served.batcher.close()


def test_echo_gives_the_top_k_after_every_prompt_token_as_the_model_computes_it(served):
    prompt = served.encode("a cab")
    body = {"prompt": prompt, "echo": True, "logprobs": 3, "max_tokens": 1, "temperature": 0,
            "return_tokens_as_token_ids": True}  # fmt: skip
    [choice] = complete(served, body)["choices"]
    logprobs = choice["logprobs"]
    assert logprobs["tokens"][: len(prompt)] == [f"token_id:{t}" for t in prompt]
    assert logprobs["top_logprobs"][0] is None and logprobs["token_logprobs"][0] is None
    with torch.no_grad():
        expected = torch.log_softmax(served.batcher.model(torch.tensor([prompt])), -1)[0]
    for position in range(len(prompt)):  # the entry of token p+1 holds what follows token p
        top = logprobs["top_logprobs"][position + 1]
        values, ids = expected[position].topk(3)
        assert list(top) == [f"token_id:{int(i)}" for i in ids]
        assert list(top.values()) == pytest.approx(values.tolist(), abs=1e-5)
    written = int(logprobs["tokens"][-1].removeprefix("token_id:"))
    assert written == int(expected[-1].argmax())  # temperature 0: the most likely token


def test_prompts_in_one_request_are_batched_and_answer_as_alone(served):
    one = complete(served, {"prompt": "abc", "echo": True, "logprobs": 2, "max_tokens": 0})
    both = complete(served, {"prompt": ["abc", "zz z"], "echo": True, "logprobs": 2,
                             "max_tokens": 0})  # fmt: skip
    first = both["choices"][0]["logprobs"]["top_logprobs"]
    alone = one["choices"][0]["logprobs"]["top_logprobs"]
    for a, b in zip(first[1:], alone[1:], strict=True):
        assert list(a) == list(b)
        assert list(a.values()) == pytest.approx(list(b.values()), abs=1e-5)
    assert both["usage"]["prompt_tokens"] == 3 + 4


def test_writing_stops_at_max_tokens_or_a_stop_string_and_sampling_follows_the_seed(served):
    long = complete(served, {"prompt": "ab", "max_tokens": 6, "temperature": 0})["choices"][0]
    assert long["finish_reason"] == "length" and len(long["text"]) == 6
    stop = long["text"][2]
    cut = complete(served, {"prompt": "ab", "max_tokens": 6, "temperature": 0, "stop": stop})
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert stop not in cut["choices"][0]["text"] and long["text"].startswith(
        cut["choices"][0]["text"]
    )
    drawn = [complete(served, {"prompt": "ab", "max_tokens": 8, "temperature": 1.5, "seed": s})
             ["choices"][0]["text"] for s in (1, 1, 2)]  # fmt: skip
    assert drawn[0] == drawn[1] != drawn[2]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"prompt": "ab", "logprobs": 6}, "--max-logprobs"),
        ({"prompt": [1, 99]}, "tokens below"),
        ({"prompt": "a" * 17}, "1 to 16 tokens"),
        ({"prompt": "AB"}, "vocabulary lacks"),
        ({"prompt": {"x": 1}}, "`prompt` must be"),
        ({"prompt": "ab", "model": "other"}, "serves 'tiny'"),
        ({"prompt": "ab", "temperature": -1}, "`temperature`"),
    ],
)
def test_a_request_it_cannot_answer_is_refused_with_the_reason(served, body, says):
    with pytest.raises(BadRequest, match=says.replace("[", r"\[")):
        complete(served, body)


def test_models_and_tokenize(served):
    assert models(served)["data"][0]["id"] == "tiny"
    assert tokenize(served, {"prompt": "ba"})["tokens"] == served.encode("ba")
    assert math.isclose(len(served.encode("abc")), 3)
