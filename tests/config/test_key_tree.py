"""kdcli/config/key_tree.py reads the keys from the YAML files alone: the same keys as Hydra's
composed config, for the default and for lines that pick options which override others."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from kdcli.config import resolvers
from kdcli.config.key_tree import config_keys, root_groups
from kdcli.config.paths import config_dir


def hydras_leaves(choices: dict[str, str]) -> set[str]:
    resolvers.register()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"{k}={v}" for k, v in choices.items()])
    leaves: set[str] = set()

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            leaves.add(prefix)

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return leaves


@pytest.mark.parametrize(
    "choices",
    [
        {},
        {"loss": "dkd", "optimizer@student.optimizer": "adamw", "dataset": "cifar10"},
        {"task": "lm"},  # a global option whose overrides pick other options
        {"task": "lm", "loss": "kd"},  # the line's choice beats the override
        {"experiment": "reviews"},
        {"teacher": "text_transformer"},  # an option that overrides its own optimizer
        {"teacher": "hf", "student": "gpt_tiny", "compress": "prune"},
    ],
    ids=lambda choices: " ".join(f"{k}={v}" for k, v in choices.items()) or "defaults",
)
def test_the_keys_are_those_hydra_composes(choices):
    assert set(config_keys(choices)) == hydras_leaves(choices)


def test_the_groups_a_line_picks_from_carry_their_package():
    groups = root_groups()
    assert groups["loss"] == "kd" and groups["teacher"] == "resnet8x4"
    assert groups["optimizer@student.optimizer"] == "sgd"
    assert groups["experiment"] is None


def test_a_name_from_the_line_is_never_made_into_a_path():
    assert set(config_keys({"loss": "../../etc/passwd"})) >= {"seed", "student.epochs"}
    assert not [k for k in config_keys({"loss": "x" * 5000}) if k.startswith("loss.")]
