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


@torch.no_grad()
def generate_windows(
    model: nn.Module,
    windows: torch.Tensor,
    prompt: int,
    temperature: float,
    seed: int,
    batch_size: int,
    precision: Precision,
) -> torch.Tensor:
    """Token windows [N, T + 1] whose first `prompt` tokens are those of `windows` [N, T + 1]
    and whose rest the teacher `model` sampled; its input never exceeds T tokens."""
    device = windows.device
    length = windows.shape[1] - 1  # what the model reads at most
    numerics.prepare(model.eval(), precision)
    generator = torch.Generator(device=device).manual_seed(seed)
    written = []
    for start in range(0, windows.shape[0], batch_size):
        tokens = windows[start : start + batch_size, :prompt]
        while tokens.shape[1] < length + 1:
            with numerics.autocast(precision, device):
                logits = model(tokens[:, -length:])[:, -1].float()
            probabilities = torch.softmax(logits / temperature, dim=-1)
            drawn = torch.multinomial(probabilities, 1, generator=generator)
            tokens = torch.cat([tokens, drawn], dim=1)
        written.append(tokens)
    return torch.cat(written)
