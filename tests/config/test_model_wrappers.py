"""configs/teacher/ and configs/student/ hold one small wrapper per model in configs/model/
(so `kd list teacher` and `teacher=NAME` work). They are files, not generated, so that a
wrapper can carry a per-model recipe; this test keeps them in step with the model configs."""

from __future__ import annotations

import pytest

from kdcli.config.paths import config_dir

MODELS = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
# teachers that are no model kdcli builds: a server's (teacher=endpoint)
TEACHERS_ONLY = ["endpoint"]


def first_comment(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("#"))


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_every_model_has_a_wrapper_and_every_wrapper_a_model(role):
    extra = TEACHERS_ONLY if role == "teacher" else []
    assert sorted(p.stem for p in (config_dir() / role).glob("*.yaml")) == sorted(MODELS + extra)


@pytest.mark.parametrize("role", ["teacher", "student"])
@pytest.mark.parametrize("name", MODELS)
def test_a_wrapper_picks_its_model_names_it_and_shares_its_description(role, name):
    wrapper = (config_dir() / role / f"{name}.yaml").read_text()
    model = (config_dir() / "model" / f"{name}.yaml").read_text()
    lines = [line for line in wrapper.splitlines() if line and not line.lstrip().startswith("#")]
    defaults = lines[: lines.index("  - _self_") + 1]
    assert defaults[:2] == ["defaults:", f"  - /model@model: {name}"]
    # a recipe may pick another optimizer or scheduler for the stage, nothing else
    assert all(line.startswith("  - override /") for line in defaults[2:-1]), defaults
    # torchvision takes the classifier's name on the command line
    assert f"name: {'???' if name == 'torchvision' else name}" in [x.split("  #")[0] for x in lines]
    assert first_comment(wrapper) == first_comment(model), "`kd list` shows this line"
