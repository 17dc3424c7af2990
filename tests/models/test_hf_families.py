"""Hugging Face families (Llama, Qwen2, GPT-2): tiny models and tokenizers built offline from
configs (tests/models/hf_families.py), their chat templates rendered with the answers alone
counted, and chat data distilled between families end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from hf_families import chats, save_model, tokenizer, write_chats

from kdcli.data.instruct import IGNORE, HFTokens, Turn, encode, render
from kdcli.errors import UserError
from kdcli.models.lm.hf import hf_causal_lm

if importlib.util.find_spec("transformers") is None:  # found without importing it (6 s)
    pytest.skip("kdcli[hf] absent", allow_module_level=True)


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    llama, chatml = tokenizer("llama"), tokenizer("chatml")
    return {
        "chats": write_chats(root / "chats.jsonl"),
        # padded to a multiple of 64 rows, as models often are
        "llama": save_model(root / "llama", "llama", llama, rows=448),
        "qwen2 (llama's tokenizer)": save_model(root / "qwen2-llama", "qwen2", llama),
        "qwen2": save_model(root / "qwen2", "qwen2", chatml),
        "gpt2": save_model(root / "gpt2", "gpt2", chatml),
        "no_eos": save_model(root / "no-eos", "qwen2", tokenizer("no_eos")),
        "unsplittable": save_model(root / "unsplittable", "qwen2", tokenizer("unsplittable")),
    }


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_each_family_reads_right_padded_sequences_as_without_the_padding(families, family):
    """No attention mask: a token never attends to the padding after it, and positions
    count from the first token, so padding on the right changes no real token's logits."""
    vocabulary = len(HFTokens(str(families[family])))
    model = hf_causal_lm(str(families[family]), num_classes=vocabulary, image_size=64).eval()
    tokens = torch.randint(3, vocabulary, (2, 12), generator=torch.Generator().manual_seed(0))
    padded = torch.cat([tokens, torch.zeros(2, 20, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone, with_padding = model(tokens), model(padded)
    assert alone.shape == (2, 12, vocabulary), "a padded vocabulary's rows are dropped"
    torch.testing.assert_close(with_padding[:, :12], alone)


def conversation(line: int) -> list[Turn]:
    return [Turn(m["role"], m["content"]) for m in chats()[line]["messages"]]


def answers_counted(tokens: HFTokens, turns: list[Turn]) -> tuple[list[list[int]], list[int]]:
    """The targets the loss counts in one conversation, as runs of consecutive positions, and
    the conversation's rendered token ids."""
    ids, _ = render(turns, tokens)
    targets = encode([turns], tokens, max_length=200).y[0].tolist()
    runs: list[list[int]] = []
    for position, target in enumerate(targets):
        if target != IGNORE:
            if position == 0 or targets[position - 1] == IGNORE:
                runs.append([])
            runs[-1].append(target)
    return runs, ids


@pytest.mark.parametrize("style", ["chatml", "llama"])
def test_the_loss_counts_each_answer_and_its_end_token_alone(families, style):
    directory = families["qwen2" if style == "chatml" else "llama"]
    tokens = HFTokens(str(directory))
    turns = conversation(1)  # two questions, two answers
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    runs, ids = answers_counted(tokens, turns)
    answers = [t.content for t in turns if t.role == "assistant"]
    assert len(runs) == 2
    for run, answer in zip(runs, answers, strict=True):
        assert run[-1] == tokens.eos_id and tokens.eos_id not in run[:-1]
        assert tokens.decode(run).strip() == answer
    messages = [{"role": t.role, "content": t.content} for t in turns]
    template = tokens.tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokens.tokenizer.decode(ids) == template, "the template's own rendering, all of it"


def test_a_system_message_is_prompt_too(families):
    tokens = HFTokens(str(families["llama"]))
    turns = conversation(0)
    assert turns[0].role == "system"
    runs, ids = answers_counted(tokens, turns)
    assert [tokens.decode(run).strip() for run in runs] == [turns[-1].content]
    assert "<<SYS>>" in tokens.tokenizer.decode(ids)


def test_a_template_that_writes_no_end_token_gets_one_after_each_answer(families):
    """Qwen2's base models: eos `<|endoftext|>`, which the chat template never writes."""
    tokens = HFTokens(str(families["no_eos"]))
    runs, ids = answers_counted(tokens, conversation(1))
    assert [run.count(tokens.eos_id) for run in runs] == [1, 1]
    assert [tokens.decode(run).strip() for run in runs] == ["it is two", "it is seven"]
    without = [t for t in ids if t != tokens.eos_id]
    messages = [{"role": t.role, "content": t.content} for t in conversation(1)]
    assert tokens.tokenizer.decode(without) == tokens.tokenizer.apply_chat_template(
        messages, tokenize=False
    )


def test_the_llama_tokenizer_without_a_pad_token_pads_with_its_eos(families):
    tokens = HFTokens(str(families["llama"]))
    assert tokens.tokenizer.pad_token_id is None and tokens.pad_id == tokens.eos_id


def test_a_template_whose_answers_do_not_follow_its_prompt_is_refused(families):
    tokens = HFTokens(str(families["unsplittable"]))
    with pytest.raises(UserError, match="does not render a conversation as the turns before"):
        encode([conversation(2)], tokens, max_length=200)
