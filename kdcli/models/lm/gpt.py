"""A small GPT in plain torch (nanoGPT-style): token and position embeddings, pre-norm
blocks of causal self-attention (`scaled_dot_product_attention`) and an MLP, a final norm,
and a head tied to the token embedding. Input [B, T] token ids, output [B, T, V] logits.

Built from the dataset's facts like every kdcli model: `num_classes` is the vocabulary and
`image_size` the window length (`in_channels` is unused).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

KeyValues = tuple[torch.Tensor, torch.Tensor]  # one block's keys and values [B, heads, T, d]


class Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(dropout)
        )
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.step(x)[0]

    def step(
        self, x: torch.Tensor, past: KeyValues | None = None, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, KeyValues]:
        """The block on `x`, and the keys and values of every position so far. With `past`
        (the earlier positions' keys and values), `x` is one new position. With `keep`
        ([B, T], True where a token is not padding), every position reads every kept one, before
        and after it (the text classifier, kdcli/models/text/transformer.py)."""
        batch, length, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        if past is not None:  # one new query reads every earlier position: no mask needed
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        drop = self.dropout if self.training else 0.0
        mask = None if keep is None else keep[:, None, None, :]
        causal = past is None and keep is None
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, dropout_p=drop
        )
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(self.norm2(x)), (k, v)


class GPT(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        image_size: int = 64,
        layers: int = 4,
        heads: int = 4,
        width: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width={width} must be a multiple of heads={heads}")
        self.block_size = image_size
        self.tokens = nn.Embedding(num_classes, width)
        self.positions = nn.Embedding(image_size, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(Block(width, heads, dropout) for _ in range(layers)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes, bias=False)
        self.head.weight = self.tokens.weight  # tied
        self.apply(_init)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.drop(self.tokens(tokens) + self.positions(positions))
        return self.head(self.norm(self.blocks(x)))

    def decode(
        self, tokens: torch.Tensor, past: list[KeyValues] | None = None
    ) -> tuple[torch.Tensor, list[KeyValues]]:
        """Next-token logits [B, V] after `tokens` [B, n], and every block's keys and values
        so far, for sampling one token at a time without recomputing the prefix (a key-value
        cache). With `past` (what the previous call returned), `tokens` is the one new token.
        The positions are absolute: the caller stops before the window's end."""
        start = 0 if past is None else past[0][0].shape[2]
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = self.drop(self.tokens(tokens) + self.positions(positions))
        kept = []
        for number, block in enumerate(self.blocks):
            # nn.Sequential types its items nn.Module: every one is a Block
            x, keys_values = cast(Block, block).step(x, None if past is None else past[number])
            kept.append(keys_values)
        return self.head(self.norm(x[:, -1])), kept


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
