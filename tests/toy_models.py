"""Stand-in models for tests (a module name no other test folder uses)."""

import torch


class Always(torch.nn.Module):
    """A 'language model' that puts all its mass on one token."""

    def __init__(self, token: int, vocabulary: int = 5) -> None:
        super().__init__()
        self.token, self.vocabulary = token, vocabulary

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = torch.full((*tokens.shape, self.vocabulary), -30.0)
        logits[..., self.token] = 30.0
        return logits
