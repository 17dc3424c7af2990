"""`teacher.tokenizer` before anything runs (kdcli/config/tokenizers.py): two tokenizers need
text, `loss=uld` and soft labels of each sample; the student's own tokenizer spelled out for
the teacher is one tokenizer, and a missing directory is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdcli.config.checks import check_overrides
from kdcli.errors import UserError
from kdcli.pipeline.tokenizers import teacher_tokenizer


@pytest.fixture
def tok(tmp_path: Path) -> str:
    (tmp_path / "tok").mkdir()
    return str(tmp_path / "tok")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["loss=token_kd"], "loss=kd compares the teacher's and the student's probabilities"),
        (["loss=rkl"], "Distil across two tokenizers with loss=uld"),
        (["loss=kd"], "loss=SoftTargetKD compares"),
        (["loss=uld", "soft_labels.mode=generate"], "soft_labels.mode=generate with two"),
        (["loss=uld", "dataset.windows=tokens"], "set dataset.windows=characters"),
    ],
)
def test_two_tokenizers_need_uld_and_soft_labels_of_each_sample(tok, args, expected):
    with pytest.raises(UserError, match="teacher.tokenizer=chars") as error:
        check_overrides(["task=lm", f"dataset.tokenizer={tok}", "teacher.tokenizer=chars", *args])
    assert expected in str(error.value)


def test_a_missing_directory_and_images_are_named():
    with pytest.raises(UserError, match="teacher.tokenizer=/no/such: no such directory"):
        check_overrides(["task=lm", "loss=uld", "teacher.tokenizer=/no/such"])
    with pytest.raises(UserError, match="a tokenizer is for text"):
        check_overrides(["teacher.tokenizer=chars"])


def test_the_students_own_tokenizer_is_one_tokenizer(tok):
    [chars] = check_overrides(["task=lm", "teacher.tokenizer=chars"])  # token_kd: accepted
    [same] = check_overrides(["task=lm", f"dataset.tokenizer={tok}", f"teacher.tokenizer={tok}/"])
    [two] = check_overrides(
        ["task=lm", "loss=uld", f"dataset.tokenizer={tok}", "teacher.tokenizer=chars"]
    )
    assert teacher_tokenizer(chars) is None and teacher_tokenizer(same) is None
    assert teacher_tokenizer(two) == "chars"
    # the text is cut by characters for two tokenizers alone (the config resolves it so)
    assert chars.dataset.windows == same.dataset.windows == "tokens"
    assert two.dataset.windows == "characters"
