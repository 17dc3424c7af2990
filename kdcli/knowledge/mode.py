"""Which knowledge the student learns from (`soft_labels.mode`), decided in one place.

`soft_label_mode` is a pure function of plain facts. The pre-flight checks call it with what
the config alone tells (the configured mode, text or images, on-policy or not), so a bad
combination stops the run before anything is written; the soft-label stage calls it again
with the built data's facts as well (augmented or not, what a store would take, the teacher
features a feature loss asks for), which decides `auto` and the cases where the teacher has to
run online.
"""

from __future__ import annotations

import math

from kdcli.errors import UserError

MODES = ("auto", "static", "views", "online", "generate")


def on_policy_setting(lmbda: float | None, ramp: object) -> str | None:
    """The setting that has the student write some of its text (`loss.lmbda` > 0, or a
    `loss.schedule.lmbda`), as messages name it; None when the student writes nothing."""
    if not lmbda and ramp is None:
        return None
    return f"loss.lmbda={lmbda}" if ramp is None else "loss.schedule.lmbda"


def soft_label_mode(
    configured: str,
    *,
    language_model: bool,
    on_policy: str | None = None,
    augmented: bool | None = None,
    epoch_bytes: int = 0,
    epochs: int = 1,
    max_gb: float = math.inf,
    features: str | None = None,
    feature_bytes: int = 0,
    feature_budget_mb: float = math.inf,
) -> str:
    """The mode a run uses, `static`, `views`, `online` or `generate`; `auto` while the data's
    facts are unknown (`augmented` None: the pre-flight checks).

    `configured`: `soft_labels.mode`. `language_model`: the task reads text. `on_policy`: the
    setting that has the student write text (`on_policy_setting`), None when off.
    `epoch_bytes`: what one stored view of every training sample takes (`views` stores
    `epochs` of them, the student's); `auto` runs the teacher online when the store it would
    pick exceeds `max_gb`. `features`: `soft_labels.features` when the loss taps teacher
    layers (None otherwise), whose maps take `feature_bytes` stored, against
    `feature_budget_mb`. A combination that cannot run is a `UserError`.
    """
    if configured not in MODES:
        raise UserError(
            f"soft_labels.mode={configured!r} must be auto, static, views, online or generate."
        )
    if configured == "generate" and not language_model:
        raise UserError(
            "soft_labels.mode=generate has the teacher write text, so it needs a language "
            "model: add task=lm (images: use static, views or online)."
        )
    if on_policy is not None:  # no store can hold the teacher's view of text the student writes
        _check_on_policy(configured, on_policy, language_model)
        return "online"
    mode = configured
    if mode == "auto":
        if augmented is None:
            return mode
        # not augmented: every view is the clean one; a language model's full distributions
        # over a large vocabulary rarely fit (top-k does)
        mode, stored = ("views", epochs * epoch_bytes) if augmented else ("static", epoch_bytes)
        mode = mode if stored <= max_gb * 2**30 else "online"
    if features is not None and mode != "online" and augmented is not None:
        source = choose_feature_source(features, augmented, feature_bytes, feature_budget_mb)
        if source == "online":  # the teacher runs anyway: take its logits on the same view
            mode = "online"
    return mode


def _check_on_policy(configured: str, setting: str, language_model: bool) -> None:
    """On-policy distillation has the student write text that the teacher then reads online."""
    if not language_model:
        raise UserError(
            f"{setting} has the student write text (on-policy distillation), so it "
            "needs a language model: add task=lm, or set loss.lmbda=0."
        )
    if configured not in ("auto", "online"):
        raise UserError(
            f"{setting} needs the teacher online (it reads text the student writes "
            f"during training, which no store holds): soft_labels.mode={configured} "
            "cannot be used with it; set soft_labels.mode=online (or auto), or loss.lmbda=0."
        )


def choose_feature_source(
    setting: str, augmented: bool, needed_bytes: int, budget_mb: float
) -> str:
    """'stored' or 'online' for `soft_labels.features` = auto, stored or online."""
    fits = needed_bytes <= budget_mb * 2**20
    if setting == "online":
        return "online"
    if setting == "stored":
        if augmented:
            raise UserError(
                "soft_labels.features=stored: the training data is augmented, so stored teacher "
                "features would not match the student's view; use soft_labels.features=online "
                "(or auto), or turn the augmentation off (e.g. dataset.augment=false)."
            )
        if not fits:
            raise UserError(
                f"soft_labels.features=stored needs {needed_bytes / 2**20:.1f} MiB, over "
                f"soft_labels.feature_budget_mb={budget_mb}; raise the budget or use "
                "soft_labels.features=online."
            )
        return "stored"
    return "stored" if fits and not augmented else "online"
