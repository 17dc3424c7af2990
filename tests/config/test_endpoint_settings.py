"""`teacher=endpoint`'s settings checked on the config tree before anything runs
(kdcli/config/endpoint.py), and the model built from them with kdcli's own target."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from kdcli.config.checks import check_overrides
from kdcli.config.endpoint import ENDPOINT_TARGET, model_node
from kdcli.errors import UserError

GOOD = ["task=lm", "teacher=endpoint", "teacher.url=http://127.0.0.1:8000/v1", "teacher.model=m"]


def test_a_good_endpoint_config_passes_and_builds_kdclis_endpoint_model():
    [cfg] = check_overrides(GOOD)
    node = model_node(cfg, "teacher")
    assert node._target_ == ENDPOINT_TARGET
    assert OmegaConf.to_container(node)["url"] == "http://127.0.0.1:8000/v1"
    assert model_node(cfg, "student") is cfg.student.model


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["task=lm", "teacher=endpoint", "teacher.model=m"], "teacher.url is not set"),
        (["task=lm", "teacher=endpoint", "teacher.url=http://h:1/v1"], "teacher.model is not set"),
        ([*GOOD, "teacher.url=ftp://h/v1"], "teacher.url='ftp://h/v1' is not an http"),
        ([*GOOD, "teacher.url=http://h a/v1"], "is not an http"),
        ([*GOOD, "teacher.api_key_env=sk-1.2"], "teacher.api_key_env=.sk-1.2. must be the NAME"),
        ([*GOOD, "teacher.concurrency=0"], "teacher.concurrency=0 must be a whole number >= 1"),
        ([*GOOD, "teacher.retries=-1"], "teacher.retries=-1"),
        ([*GOOD, "teacher.timeout_s=0"], "teacher.timeout_s=0"),
        ([*GOOD, "soft_labels.topk=null"], "soft_labels.topk=null: a server returns the top-k"),
        (["teacher=endpoint", "teacher.url=http://h:1/v1", "teacher.model=m"], "teacher=endpoint"),
    ],
)
def test_a_bad_setting_names_its_key(overrides, says):
    with pytest.raises(UserError, match=says.replace("(", r"\(").replace("?", r"\?")):
        check_overrides(overrides)
