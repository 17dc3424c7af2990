"""The soft-label mode (kdcli/knowledge/mode.py): one decision, from plain facts, for the
pre-flight checks (the config alone) and the soft-label stage (with the built data)."""

from __future__ import annotations

import pytest

from kdcli.errors import UserError
from kdcli.knowledge.mode import on_policy_setting, soft_label_mode

GIB = 2**30
IMAGES = {"language_model": False}
TEXT = {"language_model": True}
# what the stage knows of the default run: augmented digits, 5 epochs, labels far below max_gb
BUILT = {**IMAGES, "augmented": True, "epoch_bytes": GIB // 100, "epochs": 5, "max_gb": 2.0}
CLEAN = {**BUILT, "augmented": False}
FEATURES = {"features": "auto", "feature_bytes": 2**20, "feature_budget_mb": 512}

ROWS = [
    # the config alone (pre-flight): auto stays undecided, the rest is what was asked
    ("auto", IMAGES, "auto"),
    ("static", IMAGES, "static"),
    ("views", IMAGES, "views"),
    ("online", IMAGES, "online"),
    ("generate", TEXT, "generate"),
    ("auto", {**TEXT, "on_policy": "loss.lmbda=0.5"}, "online"),
    ("online", {**TEXT, "on_policy": "loss.schedule.lmbda"}, "online"),
    ("auto", {**IMAGES, **FEATURES}, "auto"),  # the features' facts come with the data's
    # auto with the data's facts: every epoch's views when augmented, one view when not
    ("auto", BUILT, "views"),
    ("auto", CLEAN, "static"),
    ("auto", {**BUILT, "epoch_bytes": GIB // 2}, "online"),  # 5 views over 2 GB
    ("auto", {**CLEAN, "epoch_bytes": GIB // 2}, "static"),  # one view under it
    ("auto", {**CLEAN, "epoch_bytes": 3 * GIB}, "online"),
    ("views", {**BUILT, "epoch_bytes": GIB}, "views"),  # max_gb bounds auto's choice only
    ("static", BUILT, "static"),
    ("auto", {**TEXT, "augmented": False, "on_policy": "loss.lmbda=0.5"}, "online"),
    # feature losses: stored maps must match the view and fit their budget
    ("auto", {**CLEAN, **FEATURES}, "static"),
    ("auto", {**BUILT, **FEATURES}, "online"),  # augmented: the teacher runs anyway
    ("static", {**BUILT, **FEATURES}, "online"),
    ("auto", {**CLEAN, **FEATURES, "feature_bytes": 2**30}, "online"),
    ("auto", {**CLEAN, **FEATURES, "features": "online"}, "online"),
    ("online", {**BUILT, **FEATURES, "features": "stored"}, "online"),  # nothing is stored
]

ERRORS = [
    ("bogus", IMAGES, "must be auto, static, views, online or generate"),
    ("generate", IMAGES, "soft_labels.mode=generate has the teacher write text"),
    ("auto", {**IMAGES, "on_policy": "loss.lmbda=0.5"}, "loss.lmbda=0.5 has the student write"),
    ("static", {**TEXT, "on_policy": "loss.lmbda=0.5"}, "soft_labels.mode=static cannot be"),
    ("views", {**TEXT, "on_policy": "loss.schedule.lmbda"}, "loss.schedule.lmbda needs the"),
    ("auto", {**BUILT, **FEATURES, "features": "stored"}, "the training data is augmented"),
    ("static", {**CLEAN, **FEATURES, "features": "stored", "feature_bytes": 2**30}, "over"),
]


@pytest.mark.parametrize(("configured", "facts", "mode"), ROWS)
def test_the_mode_follows_from_the_facts(configured, facts, mode):
    assert soft_label_mode(configured, **facts) == mode


@pytest.mark.parametrize(("configured", "facts", "message"), ERRORS)
def test_a_mode_that_cannot_run_is_a_user_error(configured, facts, message):
    with pytest.raises(UserError, match=message):
        soft_label_mode(configured, **facts)


@pytest.mark.parametrize(
    ("lmbda", "ramp", "setting"),
    [
        (0, None, None),
        (0.0, None, None),
        (None, None, None),
        (0.5, None, "loss.lmbda=0.5"),
        (0, {"start": 0, "end": 0.5}, "loss.schedule.lmbda"),
        (0.5, {"start": 0, "end": 0.5}, "loss.schedule.lmbda"),
    ],
)
def test_on_policy_is_named_by_the_setting_that_asks_for_it(lmbda, ramp, setting):
    assert on_policy_setting(lmbda, ramp) == setting
