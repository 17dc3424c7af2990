"""On-policy distillation (kdcli/knowledge/on_policy.py, `loss.lmbda`): which batches the
student rewrites, what it writes, what the loss then gets, and the run end to end."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from kd_settings import TINY_LM
from toy_models import Always

from kdcli.config.build import training_recipe
from kdcli.config.checks import check_overrides
from kdcli.config.paths import config_dir
from kdcli.data.text import TextCorpus
from kdcli.engine.loop import Job, Trainee, fit
from kdcli.engine.precision import FP32
from kdcli.errors import UserError
from kdcli.knowledge.on_policy import OnPolicyBatches
from kdcli.knowledge.teacher import OnlineTeacher
from kdcli.losses.token import TokenDistillation
from kdcli.models.lm.gpt import GPT
from kdcli.tasks.lm import TASK

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return TextCorpus(name="t", path=str(path), block_size=16).load()


def on_policy(loader, student, lmbda: float) -> OnPolicyBatches:
    return OnPolicyBatches(loader, student, lambda: lmbda, 0.25, 1.0, seed=0, precision=FP32)


def test_every_batch_is_rewritten_at_lmbda_1_from_its_prompt(text):
    loader = text.train_loader(4, seed=0)
    student = Always(token=3, vocabulary=text.info.num_classes).train()
    read = []
    student.register_forward_pre_hook(lambda module, args: read.append(args[0].shape[1]))
    batches = list(on_policy(loader, student, 1.0).epoch(0))
    assert len(batches) == len(loader)
    for written, real in zip(batches, loader.epoch(0), strict=True):
        assert not written.labelled and real.labelled
        assert torch.equal(written.index, real.index)
        assert torch.equal(written.x[:, :4], real.x[:, :4]), "a quarter of 16: the real prompt"
        assert (written.x[:, 4:] == 3).all(), "the rest is what the student wrote"
        assert torch.equal(written.y[:, :-1], written.x[:, 1:]), "y is x shifted by one"
        assert (written.y[:, -1] == 3).all()
    assert max(read) == 16, "the student never reads more than the window"
    assert student.training, "the student is back in training mode"


def test_a_lmbda_share_of_batches_is_rewritten_the_same_way_on_every_run(text):
    loader = text.train_loader(8, seed=0)
    assert len(loader) >= 8
    student = GPT(text.info.num_classes, 1, 16, layers=1, heads=1, width=8, dropout=0.0)
    first = list(on_policy(loader, student, 0.5).epoch(1))
    again = list(on_policy(loader, student, 0.5).epoch(1))
    rewritten = [not b.labelled for b in first]
    assert 0 < sum(rewritten) < len(first), "some batches, not all"
    assert [not b.labelled for b in again] == rewritten
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y), "the same samples"
    # a resumed epoch draws the batches the uninterrupted one would have
    resumed = list(on_policy(loader, student, 0.5).epoch(1, start=5))
    for a, b in zip(first[5:], resumed, strict=True):
        assert torch.equal(a.x, b.x) and a.labelled == b.labelled
    untouched = list(on_policy(loader, student, 0.0).epoch(1))
    assert all(b.labelled for b in untouched)


def test_a_schedule_ramps_the_share_epoch_by_epoch(text):
    ramp = {"lmbda": {"kind": "linear", "start": 0.0, "end": 1.0, "epochs": 2}}
    loss = TokenDistillation("kd", lmbda=0.0, schedule=ramp)
    assert loss.on_policy, "scheduled: on-policy though lmbda starts at 0"
    assert not TokenDistillation("kd").on_policy
    student = Always(token=3, vocabulary=text.info.num_classes)
    loader = text.train_loader(16, seed=0)
    batches = OnPolicyBatches(loader, student, lambda: loss.lmbda, 0.5, 1.0, 0, FP32)
    loss.start_epoch(1, 2)  # the end of the ramp: every batch
    assert not any(b.labelled for b in batches.epoch(1))
    loss.lmbda = 0.0  # as a schedule at 0 sets it
    assert all(b.labelled for b in batches.epoch(0))


class Recording(TokenDistillation):
    """The token loss, noting whether each batch came with targets."""

    def __init__(self) -> None:
        super().__init__("jsd", alpha=0.5)
        self.targets_given: list[bool] = []

    def forward(self, student_logits, teacher_logits, targets, features=None):
        self.targets_given.append(targets is not None)
        return super().forward(student_logits, teacher_logits, targets, features)


def test_the_loop_gives_the_loss_no_targets_for_the_students_own_text(text):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        stage = compose("train", overrides=["task=lm", "student.epochs=1"]).student
    torch.manual_seed(0)
    vocabulary = text.info.num_classes
    student = GPT(vocabulary, 1, 16, layers=1, heads=1, width=8, dropout=0.0)
    teacher = GPT(vocabulary, 1, 16, layers=1, heads=1, width=16, dropout=0.0)
    loss = Recording()
    batches = on_policy(text.train_loader(8, seed=0), student, 0.5)
    recipe = training_recipe(stage, "student")
    fit(
        Trainee(student, batches, loss),
        recipe,
        Job("student", TASK, CPU),
        OnlineTeacher(teacher, []),
    )
    assert loss.targets_given == [b.labelled for b in batches.epoch(0)]
    assert not all(loss.targets_given) and any(loss.targets_given)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss=token_kd", "loss.lmbda=0.5"], "needs a language model: add task=lm"),
        (["task=lm", "loss.lmbda=0.5", "soft_labels.mode=static"], "soft_labels.mode=static"),
        (["task=lm", "loss.lmbda=1.5"], r"loss.lmbda=1.5 must be a number in \[0, 1\]"),
        (
            ["task=lm", "soft_labels.mode=views", "loss.schedule.lmbda={start:0,end:0.5}"],
            "loss.schedule.lmbda needs the teacher online",
        ),
    ],
)
def test_on_policy_without_a_language_model_or_an_online_teacher_is_bad_input(overrides, message):
    with pytest.raises(UserError, match=message):
        check_overrides(overrides)


def test_kd_train_on_policy_runs_the_teacher_online_on_the_students_text(kd):
    result = kd("train", *TINY_LM, "loss=jsd", "loss.lmbda=1.0", "baseline=false")
    assert result.returncode == 0, result.stderr
    report = result.report()
    assert report["soft_labels"]["mode"] == "online"
    assert report["soft_labels"]["on_policy"] == 1.0
    assert report["loss"]["lmbda"] == 1.0
    assert math.isfinite(report["student"]["perplexity"])
    assert "100% of them written by the student (loss.lmbda)" in result.stderr


def test_on_instruction_data_the_student_answers_each_prompt_to_its_end_token():
    from kdcli.data.drills import Drills
    from kdcli.data.instruct import IGNORE, prompt_lengths

    data = Drills(count=60, seed=1).load()
    tokens = data.vocabulary
    letter, newline = tokens.encode("q")[0], tokens.encode("\n")[0]

    class Says(torch.nn.Module):  # after the prompt's newline: "qq", then the end token
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.full((*x.shape, len(tokens)), -30.0)
            answering = (x == newline).long().cumsum(1) > 0
            written = ((x == letter) & answering).long().cumsum(1)
            logits[..., letter] = torch.where(written < 2, 30.0, -30.0)
            logits[..., tokens.eos_id] = torch.where(written < 2, -30.0, 30.0)
            return logits

    batches = OnPolicyBatches(
        data.train_loader(8, seed=0), Says(), lambda: 1.0, 0.5, 1.0, seed=0, precision=FP32,
        answers=(tokens.eos_id, tokens.pad_id),
    )  # fmt: skip
    original = next(iter(data.train_loader(8, seed=0).epoch(0)))
    batch = next(iter(batches.epoch(0)))
    assert not batch.labelled
    prompts = prompt_lengths(original.y)
    for row in range(8):
        size = int(prompts[row])
        assert torch.equal(batch.x[row, :size], original.x[row, :size]), "the prompt is kept"
        counted = batch.y[row][batch.y[row] != IGNORE].tolist()
        assert tokens.decode(counted) == "qq" and counted[-1] == tokens.eos_id
        assert (batch.y[row, : size - 1] == IGNORE).all()
        assert (batch.x[row, size + 3 :] == tokens.pad_id).all(), "padding after the end"
