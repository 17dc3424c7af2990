"""Causal language modelling: logits [B, T, V] for next-token targets [B, T].

The losses see one row per token ([B*T, V] and [B*T]; a target of -100 does not count). The
headline metric is next-token top-1 accuracy (higher is better, per token, so the KD gain's
bootstrap and McNemar test run over held-out tokens); perplexity and bits per character are
reported beside it, and each model continues the same test prompt (`sample`) so people can
read what distillation changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from kdcli.data import DatasetInfo
from kdcli.data.base import IGNORE
from kdcli.tasks import Answers, Row

SAMPLE_TOKENS = 200  # how many tokens each model adds to the prompt
GENERATION_PROMPTS = 128  # test windows whose second half each model writes (generation_nll)


@runtime_checkable
class CachedDecoding(Protocol):
    """A model that samples with a key-value cache (the built-in GPT, kdcli/models/lm/gpt.py):
    `decode(tokens)` gives the next-token logits [B, V] after `tokens` [B, n] and a cache;
    `decode(token, cache)` the logits after one more token, and the cache grown by it."""

    def decode(self, tokens: torch.Tensor, past: Any = None) -> tuple[torch.Tensor, Any]: ...


class LanguageModel:
    metric = "top1"
    metric_label = "next-token top-1"
    score_name = "top1"
    score_label = "next-token top-1"

    def output_shape(self, info: DatasetInfo) -> tuple[int, ...]:
        return (info.image_size, info.num_classes)

    def flatten(
        self, logits: torch.Tensor, teacher: torch.Tensor | None, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        # (the teacher's vocabulary is its own: another tokenizer's, under loss=uld)
        flat_teacher = None if teacher is None else teacher.reshape(-1, teacher.shape[-1])
        return logits.reshape(-1, logits.shape[-1]), flat_teacher, targets.reshape(-1)

    def score(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return ((logits.argmax(-1) == targets) & (targets != IGNORE)).sum()

    def count(self, targets: torch.Tensor) -> torch.Tensor:
        """The tokens scored: the answers' alone in instruction data (prompt and padding are
        IGNORE), on the device, so that the count costs no host sync."""
        return (targets != IGNORE).sum()

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        flat, _, labels = self.flatten(logits.float(), None, targets)
        nll = F.cross_entropy(flat, labels, ignore_index=IGNORE).item()
        counted = labels != IGNORE
        top1 = (flat.argmax(-1)[counted] == labels[counted]).float().mean().item()
        return {"top1": top1, "nll": nll, "perplexity": math.exp(nll), "bpc": nll / math.log(2)}

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per counted token (padding, -100, left out): whether the top-1 is right."""
        flat, _, labels = self.flatten(logits, None, targets)
        counted = labels != IGNORE
        return flat.argmax(-1)[counted] == labels[counted]

    def agreement(
        self, logits: torch.Tensor, reference: torch.Tensor, targets: torch.Tensor
    ) -> float:
        same = logits.argmax(-1) == reference.argmax(-1)
        return same[targets != IGNORE].float().mean().item()

    @torch.no_grad()
    def sample(self, model: torch.nn.Module, data: Any, seed: int) -> tuple[str, str] | None:
        """(prompt, continuation): the first test window, then SAMPLE_TOKENS tokens drawn
        from the model's distribution (temperature 1) with a generator seeded by `seed`, the
        window sliding so the model never sees more than it was trained on."""
        window = data.info.image_size
        first = next(iter(data.eval_loader("test", 1).epoch(0)))
        # a window padded on the right (text read by two tokenizers) ends at its last token
        length = max(1, int((first.y[0] != IGNORE).sum()))
        prompt = first.x[:1, :length]
        generator = torch.Generator().manual_seed(seed)
        model.eval()
        tokens = draw_tokens(model, prompt, length + SAMPLE_TOKENS, window, 1.0, generator)
        decode = data.vocabulary.decode
        return decode(prompt[0].tolist()), decode(tokens[0, length:].tolist())

    @torch.no_grad()
    def generation_nll(
        self, model: torch.nn.Module, teacher: torch.nn.Module, data: Any, seed: int
    ) -> float | None:
        """The teacher's mean NLL per token of `model`'s continuations (temperature 1, seeded)
        of the first half of the first GENERATION_PROMPTS test windows. Perplexity scores a
        model on real text; this scores the text it writes itself, where a student's early
        mistakes compound (what on-policy distillation, `loss.lmbda`, trains against). Lower
        is closer to what the teacher would write; the teacher's own figure is about its
        entropy, the floor a faithful student approaches."""
        windows = next(iter(data.eval_loader("test", GENERATION_PROMPTS).epoch(0))).x
        length = windows.shape[1]
        prompt = length // 2
        generator = torch.Generator().manual_seed(seed)
        model.eval()
        teacher.eval()
        tokens = draw_tokens(model, windows[:, :prompt], length, length, 1.0, generator)
        log_p = F.log_softmax(teacher(tokens[:, :-1])[:, prompt - 1 :].float(), dim=-1)
        written = tokens[:, prompt:].unsqueeze(-1)
        return -log_p.gather(-1, written).mean().item()

    def headline(
        self, model: torch.nn.Module, logits: torch.Tensor, data: Any, split: str
    ) -> float:
        return self.metrics(logits, data.labels(split))[self.metric]

    def answers(
        self, model: torch.nn.Module, teacher: torch.nn.Module | None, data: Any, split: str
    ) -> Answers | None:
        return None

    def rows(self) -> tuple[Row, ...]:
        return (
            ("next-token top-1", "top1", lambda v: f"{100 * v:.2f}%"),
            ("validation top-1", "val_top1", lambda v: f"{100 * v:.2f}%"),
            ("perplexity", "perplexity", lambda v: f"{v:.3f}"),
            ("bits per character", "bpc", lambda v: f"{v:.3f}"),
            ("agreement with teacher", "agreement", lambda v: f"{100 * v:.2f}%"),
            ("KL(teacher || model), per token", "teacher_kl", lambda v: f"{v:.4f}"),
            ("teacher's NLL of its own text", "generation_nll", lambda v: f"{v:.3f}"),
        )


@torch.no_grad()
def draw_tokens(
    model: Callable[[torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    length: int,
    window: int,
    temperature: float,
    generator: torch.Generator,
    use_cache: bool = True,
    stop: int | None = None,
) -> torch.Tensor:
    """`tokens` [B, P] continued to `length` tokens, each drawn from `model`'s next-token
    distribution at `temperature` (0: the most likely token, greedy) with `generator`, on
    the generator's device (a CPU generator draws the same tokens wherever the model runs).
    The model reads at most the last `window` tokens. A model with a key-value cache
    (`decode`, the built-in GPT) reads each new token once while the text fits the window;
    otherwise, or with `use_cache=False`, every token costs a forward pass over the whole
    (sliding) window. With `stop` (an end-of-sequence id) drawing ends early once every row
    has drawn it, so the result may be shorter than `length`."""

    def draw(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float().to(generator.device)
        if temperature == 0:
            return logits.argmax(-1, keepdim=True).to(tokens.device)
        drawn = torch.multinomial(
            torch.softmax(logits / temperature, dim=-1), 1, generator=generator
        )
        return drawn.to(tokens.device)

    finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)

    def all_stopped(drawn: torch.Tensor) -> bool:
        if stop is None:
            return False
        finished.logical_or_(drawn[:, 0] == stop)
        return bool(finished.all())

    cached = model if isinstance(model, CachedDecoding) and use_cache else None
    # the last token is drawn from the `length - 1` before it: while those fit the window no
    # position slides out, and the keys and values can be kept
    if cached is not None and length - 1 <= window:
        logits, past = cached.decode(tokens)
        while tokens.shape[1] < length:
            drawn = draw(logits)
            tokens = torch.cat([tokens, drawn], dim=1)
            if tokens.shape[1] < length and not all_stopped(drawn):
                logits, past = cached.decode(drawn, past)
            elif stop is not None:
                break
        return tokens
    while tokens.shape[1] < length:
        drawn = draw(model(tokens[:, -window:])[:, -1])
        tokens = torch.cat([tokens, drawn], dim=1)
        if all_stopped(drawn):
            break
    return tokens


TASK = LanguageModel()
