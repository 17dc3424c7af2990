"""kdcli/config/train_help.py: `kd train --help` prints Hydra's own help text, character for
character, without Hydra's slow listing of the groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdcli.config.train_help import config_groups


@pytest.mark.parametrize(
    "overrides",
    [[], ["teacher=resnet50", "loss=dkd", "--resolve"], ["hydra.help.footer=see the docs"]],
    ids=["defaults", "options resolved", "footer overridden"],
)
def test_the_text_is_hydras(kd, overrides):
    ours = kd("train", *overrides, "--help")
    # --config-name takes kd train past its own text to Hydra's (the same config)
    hydras = kd("train", *overrides, "--help", "--config-name", "train")
    assert ours.returncode == hydras.returncode == 0, ours.stderr + hydras.stderr
    assert ours.stdout == hydras.stdout
    assert "== Config groups ==" in ours.stdout


def test_a_template_that_asks_for_hydras_flags_gets_hydras_help(kd):
    done = kd("train", "hydra.help.template=flags: $FLAGS_HELP", "--help")
    assert done.returncode == 0, done.stderr
    assert "--hydra-help" in done.stdout


def test_a_bad_override_is_hydras_error(kd):
    ours = kd("train", "loss=nope", "--help")
    hydras = kd("train", "loss=nope", "--help", "--config-name", "train")
    assert ours.returncode == hydras.returncode != 0
    assert ours.stderr == hydras.stderr and "nope" in ours.stderr


def test_groups_are_listed_as_hydra_lists_them(tmp_path: Path):
    for name in ("loss/kd", "loss/dkd", "model/cifar/wrn", "hydra/launcher/slurm", "teacher/a"):
        (tmp_path / f"{name}.yaml").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{name}.yaml").write_text("a: 1\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "loss" / "notes.txt").write_text("not an option")
    assert config_groups(tmp_path) == "loss: dkd, kd\nmodel/cifar: wrn\nteacher: a\n"
