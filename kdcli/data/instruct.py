"""Instruction data for language models: prompt/response pairs and chat conversations.

`dataset=instruct dataset.path=FILE.jsonl` reads one JSON object per line, either
`{"prompt": ..., "response": ...}` or `{"messages": [{"role": ..., "content": ...}, ...]}`.
`dataset=drills` is a bundled set with right answers (kdcli/data/drills.py).

Each sample becomes one token sequence, rendered with the tokenizer's chat template when
`dataset.tokenizer` names a Hugging Face tokenizer that has one, else with kdcli's plain
template: one `role: content` line per turn (`user: ...`, `assistant: ...`), and for a
prompt/response pair just `prompt`, a newline, and `response`. Every assistant turn ends
with the end-of-sequence token. The
targets are the next token at each position, -100 wherever the next token is not part of an
assistant's answer (the prompt, the template's words, padding), so every loss counts the
responses' tokens alone.

Padding: every sequence is padded on the right to one length, the longest sample's (at most
`dataset.max_length` tokens; longer samples are cut and counted in the log). Right padding
needs no attention mask in a causal model (a real token never attends to the padding after
it), and one length lets the soft-label store keep one array and the teacher or the student
rewrite responses in place (sequence-level and on-policy distillation). Samples are split
into train, validation and test by `dataset.split_seed`.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdcli.data.base import IGNORE, DatasetInfo
from kdcli.data.memory import InMemoryDataset, Split
from kdcli.data.text import text_info
from kdcli.data.tokenizer import Tokens, chat_template_tokens
from kdcli.errors import UserError
from kdcli.store.plain import MAX_BYTES
from kdcli.store.plain import read_jsonl as json_lines

log = logging.getLogger(__name__)

PAD, EOS = "<pad>", "<eos>"
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


Conversation = list[Turn]
"""One sample: the turns in order; the assistant's are what the model learns to write."""


# ---- reading ---------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[Conversation]:
    """The samples of a JSONL file; a UserError naming the file and line for a bad one."""
    if not path.is_file():
        raise UserError(f"dataset.path={path}: no such file. Give a JSONL file of samples.")
    if path.stat().st_size > 64 * MAX_BYTES:
        raise UserError(f"dataset.path={path} is larger than 1 GB; split it or sample it.")
    fix = f"Each line is one JSON object: {EXAMPLE}."
    samples = [_sample(value, f"{path} line {number}") for number, value in json_lines(path, fix)]
    if len(samples) < 10:
        raise UserError(
            f"dataset.path={path} holds {len(samples)} samples; give at least 10 (a train, "
            "validation and test split each need some)."
        )
    return samples


def _sample(record: Any, where: str) -> Conversation:
    if not isinstance(record, dict):
        raise UserError(f"{where} is not a JSON object; write {EXAMPLE}.")
    if "messages" in record:
        return _conversation(record["messages"], where)
    prompt, response = record.get("prompt"), record.get("response")
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise UserError(
            f'{where}: needs a text "prompt" and a text "response" (or "messages"); '
            f"write {EXAMPLE}."
        )
    return [Turn("user", prompt), Turn("assistant", response)]


EXAMPLE = (
    '{"prompt": "...", "response": "..."} or {"messages": [{"role": "user", "content": "..."}]}'
)


def _conversation(messages: Any, where: str) -> Conversation:
    if not isinstance(messages, list) or not messages:
        raise UserError(f'{where}: "messages" must be a non-empty list of {{role, content}}.')
    turns = []
    for number, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise UserError(
                f"{where}: messages[{number}] needs a role ({', '.join(ROLES)}) and a text content."
            )
        turns.append(Turn(role, content))
    if not any(t.role == "assistant" for t in turns):
        raise UserError(f"{where}: no assistant message, so nothing to learn; add one.")
    return turns


# ---- tokens ----------------------------------------------------------------------------------


class CharTokens:
    """Characters as tokens, with padding (id 0) and end-of-sequence (id 1) before them."""

    def __init__(self, characters: str) -> None:
        self.characters = characters
        self.index = {c: i + 2 for i, c in enumerate(characters)}
        self.pad_id, self.eos_id = 0, 1

    def __len__(self) -> int:
        return len(self.characters) + 2

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text]

    def decode(self, tokens: list[int], stop: bool = True) -> str:
        """The text of `tokens`, up to the first end-of-sequence (all of it without `stop`: a
        prompt's), without padding."""
        text = []
        for token in tokens:
            if token == self.eos_id and stop:
                break
            if token >= 2:
                text.append(self.characters[token - 2])
        return "".join(text)


class HFTokens:
    """A Hugging Face tokenizer (`dataset.tokenizer=DIR`), with its chat template if any."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tokenizer = Tokens(path).tokenizer
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise UserError(
                f"dataset.tokenizer={path} has no end-of-sequence token, which ends every "
                "answer; give a tokenizer with an eos_token."
            )
        self.eos_id = int(eos)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_id

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, tokens: list[int], stop: bool = True) -> str:
        """The text of `tokens` up to the first end-of-sequence (all of it without `stop`: a
        prompt, whose template may end turns with it), without special tokens."""
        if stop and self.eos_id in tokens:
            tokens = tokens[: tokens.index(self.eos_id)]
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


Tokenizer = CharTokens | HFTokens


def render(turns: Conversation, tokens: Tokenizer) -> tuple[list[int], list[bool]]:
    """A conversation's token ids and, for each, whether it is part of an assistant's answer
    (the answer's own tokens and the end-of-sequence after it)."""
    if isinstance(tokens, HFTokens) and tokens.has_chat_template:
        messages = [{"role": t.role, "content": t.content} for t in turns]
        return chat_template_tokens(messages, tokens.tokenizer, tokens.eos_id, tokens.path)
    ids: list[int] = []
    answer: list[bool] = []
    pair = [t.role for t in turns] == ["user", "assistant"]  # written without the roles
    for turn in turns:
        if turn.role == "assistant":
            head = tokens.encode("" if pair else "assistant: ")
            said = [*tokens.encode(turn.content), tokens.eos_id]
            ids += head + said
            answer += [False] * len(head) + [True] * len(said)
        else:
            line = tokens.encode(f"{turn.content}\n" if pair else f"{turn.role}: {turn.content}\n")
            ids += line
            answer += [False] * len(line)
    return ids, answer


# ---- answers as tensors ----------------------------------------------------------------------


def prompt_lengths(targets: torch.Tensor) -> torch.Tensor:
    """Per sample [N], how many input tokens come before its (first) answer: the position of
    the first counted target, plus one."""
    return (targets != IGNORE).float().argmax(1) + 1


def sequences(x: torch.Tensor, y: torch.Tensor, pad: int) -> torch.Tensor:
    """Samples as whole token sequences [N, T + 1]: the inputs and the last target (padding
    where it does not count)."""
    last = torch.where(y[:, -1:] == IGNORE, torch.full_like(y[:, -1:], pad), y[:, -1:])
    return torch.cat([x, last], dim=1)


def answer_split(written: torch.Tensor, prompts: torch.Tensor, eos: int, pad: int) -> Split:
    """Sequences [N, T + 1] whose answers were written after each sample's `prompts` tokens,
    as (inputs, targets): the targets count the answer through its first end-of-sequence
    token, and everything after that becomes padding."""
    position = torch.arange(written.shape[1], device=written.device)
    after_prompt = position[None, :] >= prompts[:, None]
    ends = (written == eos) & after_prompt
    end = torch.where(ends.any(1), ends.float().argmax(1), written.shape[1])
    answer = after_prompt & (position[None, :] <= end[:, None])
    written = torch.where(position[None, :] > end[:, None], torch.full_like(written, pad), written)
    targets = torch.where(answer[:, 1:], written[:, 1:], torch.full_like(written[:, 1:], IGNORE))
    return Split(written[:, :-1].contiguous(), targets.contiguous())


# ---- the dataset -----------------------------------------------------------------------------


@dataclass(eq=False)
class InstructDataset(InMemoryDataset):
    """Instruction samples in memory: answers, not windows, so the text a model writes
    (sequence-level and on-policy distillation) is an answer to each sample's prompt."""

    def written_split(self, written: torch.Tensor) -> Split:
        """The training split with its answers replaced by `written` [N, T + 1] (the same
        prompts, answers someone else wrote)."""
        tokens = self.vocabulary
        return answer_split(
            written, prompt_lengths(self.train.labels), tokens.eos_id, tokens.pad_id
        )


@dataclass
class Encoded:
    """Samples as padded tensors: inputs [N, T], next-token targets [N, T] (-100 outside the
    answers and on padding), and how many of the N were cut to fit."""

    x: torch.Tensor
    y: torch.Tensor
    truncated: int


def encode(samples: list[Conversation], tokens: Tokenizer, max_length: int) -> Encoded:
    """Each sample rendered, cut to `max_length` + 1 tokens, shifted into (inputs, targets)
    and padded on the right to the longest (see the module's docstring)."""
    rows, truncated = [], 0
    for turns in samples:
        ids, answer = render(turns, tokens)
        if len(ids) > max_length + 1:
            ids, answer, truncated = ids[: max_length + 1], answer[: max_length + 1], truncated + 1
        targets = [t if a else IGNORE for t, a in zip(ids[1:], answer[1:], strict=True)]
        rows.append((ids[:-1], targets))
    length = max(len(x) for x, _ in rows)
    x = torch.full((len(rows), length), tokens.pad_id, dtype=torch.long)
    y = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    for row, (ids, targets) in enumerate(rows):
        x[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        y[row, : len(targets)] = torch.tensor(targets, dtype=torch.long)
    return Encoded(x, y, truncated)


def split_samples(
    count: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample indices of train, validation and test, drawn by `seed`."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    test = max(1, round(count * test_fraction))
    val = round(count * val_fraction)
    return order[test + val :], order[test : test + val], order[:test]


class InstructData:
    """A dataset source (`configs/dataset/instruct.yaml`; kdcli/data/drills.py's `Drills`
    writes its samples itself)."""

    def __init__(
        self,
        name: str = "instruct",
        path: str | None = None,
        max_length: int = 256,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        tokenizer: str | None = None,
        headline: str = "rouge_l",
    ) -> None:
        self.name = name
        self.path = Path(path).expanduser() if path else None
        self.max_length = max_length
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.split_seed = split_seed
        self.tokenizer = tokenizer
        self.headline = headline  # what the task judges answers by (configs/task/instruct.yaml)

    def with_tokenizer(self, tokenizer: str | None) -> InstructData:
        """The samples as `tokenizer` (None: characters) reads them (`teacher.tokenizer`)."""
        other = copy.copy(self)  # sample i, its split and its answer: the same text
        other.tokenizer = tokenizer
        return other

    def check(self) -> None:
        if self.path is not None and not self.path.is_file():
            raise UserError(f"dataset.path={self.path}: no such file. Give a JSONL file.")

    def samples(self) -> list[Conversation]:
        if self.path is None:
            raise UserError("dataset.path is not set: give the JSONL file, dataset.path=FILE.")
        return read_jsonl(self.path)

    def tokens(self, samples: list[Conversation]) -> Tokenizer:
        """`dataset.tokenizer`'s, or the samples' distinct characters."""
        if self.tokenizer:
            return HFTokens(self.tokenizer)
        characters = {c for turns in samples for turn in turns for c in turn.content}
        characters |= set("abcdefghijklmnopqrstuvwxyz: \n")  # the plain template's words
        return CharTokens("".join(sorted(characters)))

    def training_answers(self, samples: list[Conversation], train: list[int]) -> list[Conversation]:
        """The samples with the training split's answers as they are to be learnt (as read;
        kdcli/data/drills.py puts mistakes in some)."""
        return samples

    @property
    def info(self) -> DatasetInfo:
        """The facts models are built from (`kd list`): without encoding the samples."""
        samples = self.samples()
        return text_info(self.name, len(self.tokens(samples)), self.max_length)

    def load(self) -> InMemoryDataset:
        samples = self.samples()
        tokens = self.tokens(samples)
        train, val, test = split_samples(
            len(samples), self.val_fraction, self.test_fraction, self.split_seed
        )
        samples = self.training_answers(samples, train.tolist())
        encoded = encode(samples, tokens, self.max_length)
        if encoded.truncated:
            log.warning(
                "dataset      %d of %d samples are longer than dataset.max_length=%d tokens and "
                "were cut (their answers lose their end)",
                encoded.truncated,
                len(samples),
                self.max_length,
            )
        if len(train) == 0:
            raise UserError(
                "dataset.val_fraction + dataset.test_fraction leave no training samples."
            )
        info = text_info(self.name, len(tokens), encoded.x.shape[1])
        split = lambda index: Split(encoded.x[index], encoded.y[index])  # noqa: E731
        val_split = split(val) if len(val) else None
        return InstructDataset(info, split(train), split(test), None, val_split, tokens)
