"""A small transformer text classifier in plain torch: token and position embeddings, the
built-in GPT's pre-norm blocks (kdcli/models/lm/gpt.py) attending both ways, a final norm, the
mean over the text's tokens, and a linear head. Input [B, T] token ids, output [B, K] class
logits.

Built from the dataset's facts like every kdcli model: `num_classes` classes, `vocabulary`
token ids, texts of at most `image_size` tokens filled up with the id `padding`. Padding is
masked: no token attends to it and the mean leaves it out, so a text's logits do not depend on
how much padding follows it (tested). A text of padding alone is read as its first position.
"""

from __future__ import annotations

import torch
from torch import nn

from kdcli.models.lm.gpt import Block, _init


class EncoderBlock(Block):
    """A GPT block whose positions read every token of the text that is not padding."""

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.step(x, keep=keep)[0]


class TextTransformer(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        image_size: int = 128,
        vocabulary: int = 256,
        padding: int = 0,
        layers: int = 2,
        heads: int = 4,
        width: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width={width} must be a multiple of heads={heads}")
        self.padding = padding
        self.tokens = nn.Embedding(vocabulary, width)
        self.positions = nn.Embedding(image_size, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(EncoderBlock(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)
        self.apply(_init)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        keep = tokens != self.padding
        keep[:, 0] |= ~keep.any(1)  # a text of padding alone: its first position stands for it
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.drop(self.tokens(tokens) + self.positions(positions))
        for block in self.blocks:
            x = block(x, keep)
        weights = keep.unsqueeze(-1).to(x.dtype)
        pooled = (self.norm(x) * weights).sum(1) / weights.sum(1)
        return self.head(pooled)
