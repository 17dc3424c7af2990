"""The endpoint teacher's checks before any work (kdcli/models/lm/preflight.py), each failure
a UserError naming the key and the fix: no server, a model it does not serve, another
tokenizer, too few log-probabilities, an API key it refuses."""

from __future__ import annotations

import pytest
from kd_server import LETTERS, free_port, serving, tiny_served

from kdcli.data.text import Vocabulary
from kdcli.errors import UserError
from kdcli.models.lm.endpoint import EndpointLM
from kdcli.models.lm.preflight import preflight

PROBE = "a bad cab"


def check(url: str, model: str = "tiny", vocabulary: str = LETTERS, k: int = 5, **options) -> None:
    teacher = EndpointLM(url, model, len(vocabulary), retries=0, **options)
    preflight(teacher, Vocabulary(vocabulary), PROBE, k)


@pytest.fixture(scope="module")
def url():
    with serving(tiny_served(max_logprobs=8)) as url:
        yield url


def test_a_server_that_fits_passes(url):
    check(url)


def test_no_server_names_teacher_url_and_how_to_start_one():
    with pytest.raises(UserError, match=r"teacher.url=\S+: no server answers there.*kd serve"):
        check(f"http://127.0.0.1:{free_port()}/v1")


def test_a_model_the_server_does_not_serve_names_teacher_model_and_what_it_serves(url):
    with pytest.raises(UserError, match="teacher.model=gpt9: the server .* serves tiny"):
        check(url, model="gpt9")


def test_another_tokenizer_is_caught_before_any_labelling(url):
    swapped = " bacdefghijklmnopqrstuvwxyz"  # a and b swapped: the same size, other ids
    with pytest.raises(UserError, match="splits text into other tokens .*dataset.tokenizer"):
        check(url, vocabulary=swapped)
    check(url, vocabulary=" abcdefghijklmnopqrstuvwxzy")  # y, z swapped: the probe has neither


def test_too_few_log_probabilities_names_the_setting_and_vllms_flag(url):
    with pytest.raises(UserError, match=r"no top-9 log-probabilities.*--max-logprobs 9"):
        check(url, k=9)


def test_a_refused_api_key_names_teacher_api_key_env(monkeypatch):
    monkeypatch.setenv("KD_TEST_KEY", "right")
    with serving(tiny_served(), api_key="right") as url:
        check(url, api_key_env="KD_TEST_KEY")
        with pytest.raises(UserError, match="set teacher.api_key_env=NAME"):
            check(url)
        monkeypatch.setenv("KD_TEST_KEY", "wrong")
        with pytest.raises(UserError, match=r"HTTP 401.*check the key in \$KD_TEST_KEY"):
            check(url, api_key_env="KD_TEST_KEY")
