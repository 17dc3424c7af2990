"""Hugging Face tokenizers read from local directories (`dataset.tokenizer=DIR`, and the
tokenizers saved beside `teacher=hf` / `student=hf` models), with the optional extra
`kdcli[hf]`, and their chat templates. Nothing is downloaded (`local_files_only`,
`HF_HUB_OFFLINE=1`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from kdcli.errors import UserError

INSTALL = "pip install 'kdcli[hf]' (transformers and tokenizers)"


def transformers_module() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub
    try:
        import transformers
    except ImportError:
        raise UserError(f"Hugging Face models need transformers: {INSTALL}.") from None
    transformers.logging.set_verbosity_error()  # its notices
    transformers.logging.disable_progress_bar()  # "Loading weights" on every model read
    return transformers


@runtime_checkable
class ReadsTokenizer(Protocol):
    """A model read from a directory that reads the ids of the tokenizer saved beside it
    (`teacher=hf`, `hf_classifier`): `path`, the tokenizer's `vocabulary`, and the rows of the
    model's vocabulary past it that it ignores (`padded_rows`)."""

    path: Path
    vocabulary: int
    padded_rows: int


def load_tokenizer(path: str | Path, what: str) -> Any:
    """The tokenizer saved in `path` (`what`: the config key that named it, for errors)."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise UserError(f"{what}={path}: no such directory. Give a tokenizer's directory.")
    try:
        return transformers_module().AutoTokenizer.from_pretrained(
            directory, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError) as error:
        raise UserError(
            f"{what}={path}: no tokenizer could be read there ({str(error).splitlines()[0]}). "
            "Save one with tokenizer.save_pretrained(DIR)."
        ) from None


class Tokens:
    """Text <-> token ids with a Hugging Face tokenizer (the text dataset's `vocabulary`)."""

    def __init__(self, path: str | Path, what: str = "dataset.tokenizer") -> None:
        self.tokenizer = load_tokenizer(path, what)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)


def chat_template_tokens(
    messages: list[dict[str, str]], tokenizer: Any, eos: int, path: str
) -> tuple[list[int], list[bool]]:
    """A conversation's token ids as `tokenizer`'s chat template renders it (the tokenizer of
    `dataset.tokenizer=path`), and for each whether it is part of an assistant's answer.

    Each assistant turn is what the template adds between the conversation before it (with
    the generation prompt) and the conversation through it; a template that does not render
    the one as a prefix of the other is refused. The answer runs through the first `eos` the
    template writes there (what it writes after that, such as ChatML's newline, is not the
    answer's); a template that writes none gets one after the answer, to learn to end with."""
    rendered: list[int] = []  # the template's tokens so far (without any eos added)
    ids: list[int] = []
    answer: list[bool] = []
    for end, message in enumerate(messages, start=1):
        if message["role"] != "assistant":
            continue
        before = _chat(tokenizer, messages[: end - 1], True, path)
        through = _chat(tokenizer, messages[:end], False, path)
        if before[: len(rendered)] != rendered or through[: len(before)] != before:
            shown = json.dumps(messages)
            raise UserError(
                f"dataset.tokenizer={path}: its chat template does not render a conversation "
                "as the turns before an answer (with the generation prompt) followed by the "
                f"answer (messages[{end - 1}] of {shown[:200]}{'...' * (len(shown) > 200)}), "
                "so the answer's tokens cannot be told apart. Save the tokenizer with a "
                "template that does (tokenizer.chat_template = ...; "
                "tokenizer.save_pretrained(DIR)) and set dataset.tokenizer=DIR."
            )
        said, after = through[len(before) :], []
        if eos in said:
            said, after = said[: said.index(eos) + 1], said[said.index(eos) + 1 :]
        else:
            said.append(eos)
        ids += before[len(rendered) :] + said + after
        answer += [False] * (len(before) - len(rendered)) + [True] * len(said)
        answer += [False] * len(after)
        rendered = through
    return ids, answer


def _chat(tokenizer: Any, messages: list[dict[str, str]], prompt: bool, path: str) -> list[int]:
    """`messages` rendered by the chat template (with the generation prompt: `prompt`), as
    text, then encoded like any text: the template writes its special tokens (bos) itself.
    (`apply_chat_template(tokenize=True)` returns a list in transformers 4, a dict in 5.)"""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
    except Exception as error:  # the template's own error (jinja2's, or raise_exception)
        raise UserError(
            f"dataset.tokenizer={path}: its chat template could not render a conversation "
            f"({type(error).__name__}: {error})."
        ) from None
    return list(tokenizer(str(text), add_special_tokens=False)["input_ids"])
