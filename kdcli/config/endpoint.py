"""`teacher=endpoint` (kdcli/models/lm/endpoint.py): its settings checked on the config tree,
the model built from them, and the server checked before any work (kdcli/models/lm/preflight.py).

Its section holds plain values (`teacher.url`, `teacher.model`: the server's model id, ...);
the module that reads the server is kdcli's own (`ENDPOINT_TARGET`), never named by a file.
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kdcli.errors import UserError

ENDPOINT_TARGET = "kdcli.models.lm.endpoint.EndpointLM"
SETTINGS = ("url", "model", "api_key_env", "concurrency", "batch_size", "timeout_s", "retries",
            "logprobs")  # fmt: skip
URL = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_endpoint(cfg: DictConfig) -> bool:
    """Whether the teacher is behind a server (`teacher=endpoint`)."""
    keys = list(cfg.teacher)  # with those whose value is missing (???), which `in` leaves out
    return (
        "url" in keys
        and "model" in keys
        and not isinstance(cfg.teacher._get_node("model"), DictConfig)
    )


def model_node(cfg: DictConfig, role: str) -> DictConfig:
    """What builds `cfg[role]`'s model: its `model` section, or for the endpoint teacher kdcli's
    EndpointLM with the teacher's settings."""
    if role == "teacher" and is_endpoint(cfg):
        values = {name: OmegaConf.select(cfg.teacher, name) for name in SETTINGS}
        return OmegaConf.create({"_target_": ENDPOINT_TARGET, **values})
    return cfg[role].model


def check_endpoint_config(cfg: DictConfig) -> None:
    """`teacher=endpoint`'s settings, before anything runs."""
    if not is_endpoint(cfg):
        return
    teacher = cfg.teacher
    for name, example in (("url", "http://127.0.0.1:8000/v1"), ("model", "NAME")):
        if OmegaConf.is_missing(teacher, name):
            raise UserError(
                f"teacher.{name} is not set: teacher=endpoint reads a server, e.g. "
                f"teacher.url=http://127.0.0.1:8000/v1 teacher.model=NAME (`kd serve MODEL` "
                f"starts one; GET /v1/models lists the model names), here teacher.{name}={example}."
            )
    url = str(teacher.url)
    if not URL.match(url):
        raise UserError(
            f"teacher.url={url!r} is not an http(s) address of an OpenAI-style API; give one "
            "ending with /v1, e.g. teacher.url=http://127.0.0.1:8000/v1."
        )
    env = teacher.get("api_key_env")
    if env is not None and not (isinstance(env, str) and ENV_NAME.match(env)):
        raise UserError(
            f"teacher.api_key_env={env!r} must be the NAME of an environment variable holding "
            "the API key (never the key itself), e.g. teacher.api_key_env=OPENAI_API_KEY."
        )
    for name, low in (("concurrency", 1), ("batch_size", 1), ("retries", 0), ("logprobs", 1)):
        value = teacher.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"teacher.{name}={value!r} must be a whole number >= {low}.")
    timeout = teacher.get("timeout_s")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise UserError(f"teacher.timeout_s={timeout!r} must be a number of seconds > 0.")
    if cfg.soft_labels.topk is None and cfg.soft_labels.mode != "online":
        raise UserError(
            "soft_labels.topk=null: a server returns the top-k log-probabilities of each "
            "position, not all the logits; set soft_labels.topk (e.g. 20: vLLM's --max-logprobs "
            "caps it) with teacher=endpoint."
        )


def check_endpoint(cfg: DictConfig, module: Any, data: Any, k: int) -> None:
    """The server answers as the run needs (kdcli/models/lm/preflight.py), probed with the
    start of the training text; `k` log-probabilities per position."""
    from kdcli.models.lm.preflight import preflight

    vocabulary = getattr(data, "vocabulary", None)
    if vocabulary is None:
        raise UserError(
            f"dataset={cfg.dataset.name}: teacher=endpoint labels text data only (task=lm, "
            "task=instruct)."
        )
    row = [int(t) for t in data.train.images[0].tolist()]
    probe = vocabulary.decode(row)[:200] or "Hello"
    preflight(module, vocabulary, probe, k)
