"""On-policy distillation for language models (GKD; Agarwal et al. 2024): `loss.lmbda`.

A student trained only on real text (or the teacher's) is never corrected on the text it
writes itself, where its early mistakes compound. With `loss.lmbda` = λ > 0, each training
batch is, with probability λ (the loss's value in that epoch: `loss.schedule.lmbda` can ramp
it), replaced by the student's own continuation of its windows: the
first `soft_labels.generate.prompt_fraction` of every window stays real text and the student,
as it is at that step, samples the rest at `soft_labels.generate.temperature`. The teacher
then runs online on that text and the loss learns the teacher's distributions on it (no
cross-entropy: the student's samples are not ground truth). The coin and the samples are
drawn from a generator seeded by (seed, epoch, step), so a rerun, or a resumed run, draws the
same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from kdcli.data import Batch
from kdcli.data.base import Loader
from kdcli.data.instruct import answer_split, prompt_lengths, sequences
from kdcli.engine import precision as numerics
from kdcli.engine.precision import Precision
from kdcli.tasks.lm import draw_tokens


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The CPU generator of one training step's coin and samples."""
    return torch.Generator().manual_seed(
        (seed * 1_000_003 + epoch * 7_919 + step * 104_729) % 2**63
    )


class OnPolicyBatches:
    """`loader`'s batches, a `lmbda()` share of them rewritten by `student` (see the module;
    `lmbda` is read as each epoch starts, after the loss's schedule has set it)."""

    def __init__(
        self,
        loader: Loader,
        student: nn.Module,
        lmbda: Callable[[], float],
        prompt_fraction: float,
        temperature: float,
        seed: int,
        precision: Precision,
        answers: tuple[int, int] | None = None,
    ) -> None:
        self.loader, self.student, self.lmbda = loader, student, lmbda
        self.answers = answers  # instruction data: (end-of-sequence id, padding id)
        self.prompt_fraction, self.temperature = prompt_fraction, temperature
        self.seed, self.precision = seed, precision

    @property
    def num_samples(self) -> int:
        return self.loader.num_samples

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        share = self.lmbda()
        for step, batch in enumerate(self.loader.epoch(epoch, start), start=start):
            generator = step_generator(self.seed, epoch, step)
            if float(torch.rand((), generator=generator)) < share:
                batch = self.rewrite(batch, generator)
            yield batch

    @torch.no_grad()
    def rewrite(self, batch: Batch, generator: torch.Generator) -> Batch:
        """`batch` with its text rewritten by the student: each window's prompt kept and the
        rest sampled, or (instruction data) each answer written anew after its prompt, up to
        the end-of-sequence token."""
        was_training = self.student.training
        self.student.eval()  # no dropout while writing
        try:
            with numerics.autocast(self.precision, batch.x.device):
                if self.answers is None:
                    x, y = self._windows(batch, generator)
                else:
                    x, y = self._answers(batch, generator, *self.answers)
        finally:
            self.student.train(was_training)
        return Batch(x, y, batch.index, labelled=False)

    def _windows(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        length = batch.x.shape[1]
        prompt = max(1, min(length - 1, round(self.prompt_fraction * length)))
        tokens = draw_tokens(
            self.student, batch.x[:, :prompt], length + 1, length, self.temperature, generator
        )
        return tokens[:, :-1], tokens[:, 1:]

    def _answers(
        self, batch: Batch, generator: torch.Generator, eos: int, pad: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        length = batch.x.shape[1]
        whole = sequences(batch.x, batch.y, pad)
        prompts = prompt_lengths(batch.y)
        written = torch.full_like(whole, pad)
        for size in sorted(set(prompts.tolist())):
            rows = (prompts == size).nonzero().flatten()
            drawn = draw_tokens(
                self.student, whole[rows, :size], length + 1, length, self.temperature,
                generator, stop=eos,
            )  # fmt: skip
            written[rows, : drawn.shape[1]] = drawn
        split = answer_split(written, prompts, eos, pad)
        return split.images, split.labels
