"""Gradient accumulation in the one loop (engine/loop.py, `Recipe.accumulate`): N micro-batches
make one optimizer step whose loss and gradients are those of one batch N times larger, with
each micro-batch weighted by its counted items (tokens whose target is not -100), not by 1/N.
A whole fit with accumulate=2 at batch B takes the steps of a fit at batch 2B, and a state
saved by a signal mid-step resumes at the step's end to the same weights."""

from __future__ import annotations

import functools

import pytest
import torch
from stopping_losses import SignalAt

from kdcli.data import Batch
from kdcli.data.memory import EpochLoader, Split
from kdcli.data.text import text_info
from kdcli.engine.interrupt import Interrupted, handle_signals
from kdcli.engine.loop import Job, Recipe, Trainee, Training, fit
from kdcli.engine.lr_schedule import WarmupCosine
from kdcli.engine.state import TrainState
from kdcli.losses import CrossEntropy
from kdcli.losses.token import TokenDistillation
from kdcli.models.features import FeatureTap
from kdcli.models.lm.gpt import GPT
from kdcli.tasks.lm import IGNORE, TASK

CPU = torch.device("cpu")
VOCABULARY, LENGTH = 11, 8


def gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(VOCABULARY, image_size=LENGTH, layers=1, heads=2, width=16, dropout=0.0)


def windows(count: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Token windows and next-token targets, a different share of each row masked (-100)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCABULARY, (count, LENGTH), generator=generator)
    y = torch.randint(0, VOCABULARY, (count, LENGTH), generator=generator)
    for row in range(count):  # a prompt of 0 to LENGTH tokens: some rows count nothing
        y[row, : row * 5 % (LENGTH + 1)] = IGNORE
    return x, y


class Fixed:
    """A loader of the given batches, in order, every epoch."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    @property
    def num_samples(self) -> int:
        return sum(len(b.x) for b in self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, epoch: int, start: int = 0):
        yield from self.batches[start:]


class Teacher:
    """Online knowledge from a fixed GPT (the token loss compares distributions)."""

    train_data = None

    def __init__(self) -> None:
        self.model = gpt(seed=7).eval()

    def __call__(self, epoch: int, batch: Batch):
        from kdcli.engine.loop import TeacherOutputs

        with torch.no_grad():
            return TeacherOutputs(self.model(batch.x))


def one_step(batches: list[Batch], accumulate: int):
    """The loss over the window's counted tokens and every parameter's gradient after one
    optimizer step (at lr 0: the weights stay) on `batches` as one window."""
    model = gpt()
    loss_fn = TokenDistillation("kd", alpha=0.5, temperature=2.0)
    recipe = Recipe(
        1,
        functools.partial(torch.optim.SGD, lr=0.0),
        functools.partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lambda step: 1.0),
        accumulate=accumulate,
    )
    training = Training(
        Trainee(model, Fixed(batches), loss_fn), recipe, Job("s", TASK, CPU), Teacher()
    )
    [window] = list(training.windows(0, 0))
    assert len(window.batches) == len(batches) and training.steps == 1
    with FeatureTap(model, []) as tap:
        trained = list(training.update(0, window, tap))
    losses = torch.stack([loss.detach() for *_, loss, _ in trained])
    counts = torch.stack([counted for *_, counted in trained]).float()
    loss = (losses * counts).sum() / counts.sum()
    return loss, losses, {name: p.grad.clone() for name, p in model.named_parameters()}


def test_accumulated_micro_batches_give_the_loss_and_gradients_of_one_large_batch():
    x, y = windows(6)
    micro = [Batch(x[i : i + 2], y[i : i + 2], torch.arange(i, i + 2)) for i in (0, 2, 4)]
    counted = [int((b.y != IGNORE).sum()) for b in micro]
    assert len(set(counted)) == 3, f"the micro-batches count different tokens: {counted}"
    loss, parts, gradients = one_step(micro, accumulate=3)
    large_loss, _, large_gradients = one_step([Batch(x, y, torch.arange(6))], accumulate=1)
    torch.testing.assert_close(loss, large_loss, rtol=0, atol=1e-5)
    for name, gradient in large_gradients.items():
        torch.testing.assert_close(gradients[name], gradient, rtol=0, atol=1e-5, msg=name)
    # the bug that averages micro-batch means would be off by far more than the tolerance
    assert abs(float(parts.mean()) - float(large_loss)) > 100 * 1e-5


def tokens_loader(batch_size: int, count: int = 72) -> EpochLoader:
    """Shuffled token windows (the order a pure function of seed and epoch, so batches of B
    pair up into the batches of 2B); 72 windows: B=8 leaves a ninth batch that no step
    takes, as 2B=16 leaves 8 windows out."""
    x, y = windows(count)
    return EpochLoader(Split(x, y), text_info("t", VOCABULARY, LENGTH), batch_size, train=True)


def tokens_recipe(accumulate: int, epochs: int = 2) -> Recipe:
    return Recipe(
        epochs,
        # (SGD: Adam would scale the rounding noise of gradients that are 0 in exact
        # arithmetic, the attention's key bias, up to whole steps)
        functools.partial(torch.optim.SGD, lr=0.5, momentum=0.9, weight_decay=0.1),
        functools.partial(WarmupCosine, epochs=epochs, warmup_epochs=0.5),  # per step
        clip_grad_norm=0.5,
        accumulate=accumulate,
    )


def train(batch_size: int, accumulate: int, loss=None, state=None):
    model, rows = gpt(), []
    torch.manual_seed(3)
    trainee = Trainee(model, tokens_loader(batch_size), loss or CrossEntropy())
    job = Job("s", TASK, CPU, state=state, on_epoch=rows.append)
    fit(trainee, tokens_recipe(accumulate), job)
    return model, rows


def test_a_fit_with_accumulate_2_takes_the_steps_of_a_fit_at_twice_the_batch():
    """CE over masked tokens, SGD, a per-step warm-up and cosine, gradient clipping: the
    same weights after each epoch, and the same figures (a loss that is a mean over rows;
    not for DIST or BatchNorm, whose statistics are the micro-batch's)."""
    accumulated, rows = train(8, accumulate=2)
    large, large_rows = train(16, accumulate=1)
    large_weights = large.state_dict()
    for name, weight in accumulated.state_dict().items():
        torch.testing.assert_close(weight, large_weights[name], rtol=1e-4, atol=1e-5, msg=name)
    for row, large_row in zip(rows, large_rows, strict=True):
        assert row["step"] == large_row["step"] == 4 * row["epoch"], "optimizer steps"
        assert row["lr"] == pytest.approx(large_row["lr"], rel=1e-9)
        assert row["loss"] == pytest.approx(large_row["loss"], abs=1e-5)
        assert row["train_top1"] == pytest.approx(large_row["train_top1"], abs=1e-6)


def test_a_signal_mid_step_saves_at_the_steps_end_and_the_resume_ends_identical(tmp_path):
    straight, _ = train(8, accumulate=3)
    path = tmp_path / "state.pt"
    with handle_signals(), pytest.raises(Interrupted) as stop:
        train(8, accumulate=3, loss=SignalAt(at=14), state=TrainState(path))  # epoch 2, batch 5
    assert stop.value.position.endswith("epoch 2, batch 6"), "saved after the step's 3 batches"
    assert torch.load(path, weights_only=True)["step"] == 6
    resumed, _ = train(8, accumulate=3, state=TrainState(path))
    resumed_weights = resumed.state_dict()
    for name, weight in straight.state_dict().items():
        assert torch.equal(weight, resumed_weights[name]), name
