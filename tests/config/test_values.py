"""The numeric settings' rules (kdcli/config/values.py): what they refuse, with which message,
and that no value of a numeric key gets past the pre-flight check as anything but a UserError."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kd_command import REPO
from omegaconf import DictConfig, OmegaConf

from kdcli.config.build import lora_settings
from kdcli.config.checks import check_overrides
from kdcli.config.values import BY_KEY, BY_NAME, LORA, LOSS, SECTIONS, check_values, leaf_keys
from kdcli.errors import UserError

CONFIGS = REPO / "configs"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ("{role}.optimizer.lr=-1", "{role}.optimizer.lr=-1 must be a number > 0, e.g. "),
        ("{role}.optimizer.lr=abc", "{role}.optimizer.lr='abc' must be a number > 0"),
        ("{role}.optimizer.lr=nan", "{role}.optimizer.lr=nan must be a number > 0"),
        ("{role}.optimizer.momentum=1", "{role}.optimizer.momentum=1 must be a number in [0, 1)"),
        ("{role}.optimizer.weight_decay=-1e-4", "weight_decay=-0.0001 must be a number >= 0"),
        ("scheduler@{role}.scheduler=warmup_cosine {role}.scheduler.warmup_epochs=-1", ">= 0"),
        ("scheduler@{role}.scheduler=multistep {role}.scheduler.milestones=[5,2]", "increas"),
        ("scheduler@{role}.scheduler=multistep {role}.scheduler.gamma=0", "gamma=0 must be"),
        ("{role}=smallcnn {role}.model.width=0", "{role}.model.width=0 must be a whole"),
        ("{role}=smallcnn {role}.model.width=2.5", "{role}.model.width=2.5 must be a whole"),
        ("{role}=mlp {role}.model.hidden=[32,0]", "{role}.model.hidden=[32,0] must be a list"),
        ("{role}=wrn_16_2 {role}.model.widen_factor=0", "widen_factor=0 must be"),
        ("{role}=vgg8 {role}.model.blocks=[[64],[0]]", "blocks=[[64],[0]] must be"),
        ("{role}.epochs=0", "{role}.epochs=0 must be a whole number >= 1"),
        ("{role}.batch_size=-8", "{role}.batch_size=-8 must be a whole number >= 1"),
        ("{role}=smallcnn {role}.model.width=${{seed}}", "{role}.model.width=0 must be"),
    ],
)
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_a_bad_value_names_the_key_the_value_and_what_is_accepted(role, overrides, expected):
    with pytest.raises(UserError) as caught:
        check_overrides(overrides.format(role=role).split())
    assert expected.format(role=role) in str(caught.value)
    assert ", e.g. " in str(caught.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("dataset.val_fraction=1", "dataset.val_fraction=1 must be a number in [0, 1)"),
        ("dataset.test_fraction=0", "dataset.test_fraction=0 must be a number in (0, 1)"),
        ("eval.batch_size=0", "eval.batch_size=0 must be auto or a whole number >= 1"),
        ("eval.latency_runs=0", "eval.latency_runs=0 must be a whole number >= 1"),
        ("plots=maybe", "plots='maybe' must be auto or true or false"),
        ("soft_labels.max_gb=0", "soft_labels.max_gb=0 must be a number > 0"),
        ("soft_labels.max_gb=abc", "soft_labels.max_gb='abc' must be a number > 0"),
        ("soft_labels.topk=0", "soft_labels.topk=0 must be null or a whole number >= 1"),
        ("seed=-1", "seed=-1 must be a whole number in [0, 4294967295]"),
        ("seed=4294967296", "seed=4294967296 must be a whole number in [0, 4294967295]"),
        ("seed=99999999999999999999", "seed=99999999999999999999 must be a whole number in"),
        ("dataset.split_seed=4294967296", "dataset.split_seed=4294967296 must be a whole number"),
        ("student.name=../../x", "student.name='../../x' must be a name of 1 to 100 characters"),
        ("teacher.name=..", "teacher.name='..' must be a name of 1 to 100 characters"),
        (r"teacher.name='a\\b'", "that can name a file (no / or \\, no NUL byte, not . or ..)"),
        ("student.name=" + "n" * 101, "must be a name of 1 to 100 characters"),
        ("loss.temperature=true", "loss.temperature=true must be a number > 0"),
        ("loss.schedule.alpha={start:0.1,epochs:abc}", "loss.schedule.alpha.epochs='abc' must"),
        ("loss.schedule.alpha={start:0.1,epochs:0}", "alpha.epochs=0 must be null or a whole"),
        ("dataset.max_shift=-1", "dataset.max_shift=-1 must be a whole number >= 0"),
        ("student.accumulate=0", "student.accumulate=0 must be a whole number >= 1"),
        ("student.accumulate=1.5", "student.accumulate=1.5 must be a whole number >= 1"),
        ("student.lora={r:0,target_modules:[qkv]}", "student.lora.r=0 must be a whole number >= 1"),
        (
            "student.lora={alpha:0,target_modules:[qkv]}",
            "student.lora.alpha=0 must be a number > 0",
        ),
        ("student.lora={dropout:1,target_modules:[qkv]}", "dropout=1 must be a number in [0, 1)"),
        ("student.lora={target_modules:[]}", "target_modules=[] must be a list of layer names"),
        ("student.lora={target_modules:qkv}", "target_modules='qkv' must be a list of layer"),
        ("student.lora={rank:8,target_modules:[qkv]}", "student.lora.rank is not a LoRA setting"),
        ("student.lora={r:8}", "student.lora.target_modules is not set: name the layers"),
        ("student.lora=8", "student.lora=8 must be null or a mapping"),
        ("student.lora.r=8", "student.lora is null by default, and holds only the keys it is"),
        ("student.lora={target_modules:[qkv]} student.lora.r=8", "with +student.lora.r=8."),
    ],
)
def test_a_bad_run_setting_names_the_key(override, expected):
    with pytest.raises(UserError) as caught:
        check_overrides(override.split())
    assert expected in str(caught.value)


def test_seeds_end_at_the_largest_numpy_takes_and_names_at_100_characters():
    [cfg] = check_overrides(["seed=4294967295", "student.name=" + "n" * 100, "teacher.name=7"])
    assert cfg.seed == 2**32 - 1
    for one_more in ("seed=4294967296", "student.name=" + "n" * 101):
        with pytest.raises(UserError, match=one_more.split("=")[0]):
            check_overrides([one_more])


def test_interpolations_are_checked_as_what_they_resolve_to():
    [cfg] = check_overrides(["teacher.optimizer.lr=${loss.alpha}", "eval.batch_size=auto"])
    assert cfg.teacher.optimizer.lr == 0.9
    with pytest.raises(UserError, match="teacher.optimizer.lr: its value could not be resolved"):
        check_overrides(["teacher.optimizer.lr=${no.such.key}"])


def _shipped_values():
    """(file, key, value) of every top-level key of the constructors' config files."""
    for group in ("model", "optimizer", "scheduler", "dataset"):
        for path in sorted((CONFIGS / group).glob("*.yaml")):
            for key, value in OmegaConf.to_container(OmegaConf.load(path)).items():
                yield f"{group}/{path.name}", key, value


def test_every_shipped_value_follows_its_rule():
    for name, key, value in _shipped_values():
        rule = BY_NAME.get(key)
        if rule is not None and not (isinstance(value, str) and "${" in value):
            assert rule.accepts(value), f"{name}: {key}={value} is not {rule.accepted}"


def test_every_numeric_key_of_the_constructors_configs_has_a_rule():
    """A new model, optimizer, scheduler or dataset key that holds numbers needs a rule."""
    missing = [
        f"{name}: {key}"
        for name, key, value in _shipped_values()
        if isinstance(value, (int, float, list))
        and not isinstance(value, bool)
        and key not in BY_NAME
    ]
    assert not missing, "add a rule to kdcli/config/values.py BY_NAME for " + ", ".join(missing)


# ---- any value, any numeric key: it passes, or it is a UserError ----------------------------

GROUPS = ["scheduler@student.scheduler=multistep"]  # a scheduler with milestones and gamma
BASE = check_overrides(GROUPS)[0]
NUMERIC_KEYS = sorted(
    {
        *BY_KEY,
        *(
            key
            for section in SECTIONS
            for key in leaf_keys(OmegaConf.select(BASE, section), f"{section}.")
            if key.rsplit(".", 1)[-1] in BY_NAME
        ),
        *(key for key in leaf_keys(BASE.loss, "loss.") if key.rsplit(".", 1)[-1] in LOSS),
    }
)

# what a user might type after `key=`, Hydra's grammar included
WORDS = ["", "null", "true", "auto", "abc", "???", "[]", "{}", "{a:1}", "[[1],[0]]", "1e400", "-0"]
WORDS += ["0x10", "1_000", "'5'", "1,2", "range(1,3)", "a b", "[1,${seed}]", "{start:2,epochs:0}"]
INTERPOLATIONS = ["${seed}", "${loss.alpha}", "${teacher.epochs}", "${nope}", "${oc.env:NOPE}"]
INTERPOLATIONS += ["${oc.decode:'[1'}", "${teacher.optimizer}", "${oc.env:HOME}"]
TYPED = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.lists(st.integers(-2, 300), max_size=4).map(lambda v: "[" + ",".join(map(str, v)) + "]"),
    st.sampled_from(WORDS),
    st.sampled_from(INTERPOLATIONS),
    st.text(st.characters(codec="ascii", categories=("L", "N", "P", "S", "Zs")), max_size=8),
)


@pytest.mark.slow
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(NUMERIC_KEYS), TYPED), min_size=1, max_size=3))
@example([("teacher.optimizer.lr", "${nope}")])  # the traps found so far, always tried
@example([("seed", "${oc.env:NOPE}")])
@example([("teacher.optimizer.momentum", "0")])  # in range, but SGD's nesterov refuses it
@example([("student.scheduler.milestones", "[1,${teacher.optimizer}]")])
def test_any_typed_value_passes_or_is_a_user_error(pairs):
    overrides = GROUPS + [f"{key}={value}" for key, value in pairs]
    try:
        check_overrides(overrides)
    except UserError as error:
        assert str(error).strip() and "Traceback" not in str(error)


# plain values as a config could hold them (after YAML or an interpolation), checked directly
PLAIN = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=6,
)


def _with(cfg: DictConfig, key: str, value: object) -> DictConfig:
    cfg = copy.deepcopy(cfg)
    OmegaConf.update(cfg, key, value, merge=False)
    return cfg


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(NUMERIC_KEYS), PLAIN)
def test_any_plain_value_passes_or_is_a_user_error(key, value):
    try:
        cfg = _with(BASE, key, value)
    except Exception:  # OmegaConf refuses to store it (e.g. a dict key it cannot take)
        return
    try:
        check_values(cfg)
    except UserError as error:
        assert key in str(error) or "could not be resolved" in str(error)


LORA_VALUES = PLAIN | st.dictionaries(st.sampled_from([*LORA, "rank"]), PLAIN, max_size=4)


@settings(max_examples=100, deadline=None)
@given(LORA_VALUES)
def test_any_lora_value_passes_and_builds_or_is_a_user_error(value):
    try:
        cfg = _with(BASE, "student.lora", value)
    except Exception:  # OmegaConf refuses to store it
        return
    try:
        check_values(cfg)
    except UserError as error:
        assert "student.lora" in str(error) or "could not be resolved" in str(error)
        return
    lora = lora_settings(cfg.student)  # what passes the checks builds
    assert lora is None or (lora.targets and lora.r >= 1 and lora.alpha > 0)
