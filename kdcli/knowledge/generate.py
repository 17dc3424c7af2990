"""Sequence-level knowledge distillation (Kim & Rush 2016) for language models:
`soft_labels.mode=generate`.

The student learns from text the teacher writes, not only from its distributions on the
training text. Each training window keeps its first `prompt_fraction` of tokens (real text);
the teacher samples the rest, token by token, at `temperature`, from a generator seeded by
the run's seed, so the same settings always write the same windows. The teacher's
distributions are then stored for these windows like static soft labels: the student's
cross-entropy term learns the teacher's samples, and its KD term the teacher's
distributions on them (word-level KD on sequence-level data, the combination Kim & Rush
found best).
"""

from __future__ import annotations

import torch
from torch import nn

from kdcli.engine import precision as numerics
from kdcli.engine.precision import Precision
from kdcli.tasks.lm import draw_tokens


@torch.no_grad()
def generate_windows(
    model: nn.Module,
    windows: torch.Tensor,
    prompt: int | torch.Tensor,
    temperature: float,
    seed: int,
    batch_size: int,
    precision: Precision,
    stop: int | None = None,
    pad: int = 0,
) -> torch.Tensor:
    """Token sequences [N, T + 1] whose first `prompt` tokens (one length, or one per
    sequence) are those of `windows` [N, T + 1] and whose rest the teacher `model` sampled;
    its input never exceeds T tokens. With `stop` (instruction data: the end-of-sequence id) a
    sequence's writing may end early; what follows is `pad`."""
    device = windows.device
    length = windows.shape[1] - 1  # what the model reads at most
    numerics.prepare(model.eval(), precision)
    generator = torch.Generator(device=device).manual_seed(seed)
    prompts = torch.full((len(windows),), prompt) if isinstance(prompt, int) else prompt.cpu()
    written = torch.full_like(windows, pad)
    with numerics.autocast(precision, device):
        for size in sorted(set(prompts.tolist())):  # sequences with one prompt length at once
            rows = (prompts == size).nonzero().flatten().to(device)
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                drawn = draw_tokens(
                    model, windows[batch, :size], length + 1, length, temperature, generator,
                    stop=stop,
                )  # fmt: skip
                written[batch, : drawn.shape[1]] = drawn
    return written
