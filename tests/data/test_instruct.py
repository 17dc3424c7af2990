"""Instruction data (kdcli/data/instruct.py, kdcli/data/drills.py): JSONL lines read as
plain data, rendered with the plain template, the answers alone counted, bad lines named."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch

from kdcli.data.drills import Drills, drills
from kdcli.data.instruct import (
    IGNORE,
    CharTokens,
    InstructData,
    Turn,
    encode,
    read_jsonl,
    render,
)
from kdcli.errors import UserError


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


PAIRS = [{"prompt": f"say {i}", "response": f"ok {i}"} for i in range(12)]


def test_a_pair_is_its_prompt_a_newline_and_its_answer_which_alone_counts():
    tokens = CharTokens("0123456789 aknosy\n")
    ids, answer = render([Turn("user", "say 7"), Turn("assistant", "ok 7")], tokens)
    assert tokens.decode(ids) == "say 7\nok 7"  # decode stops at the end-of-sequence token
    assert ids[-1] == tokens.eos_id and sum(answer) == len("ok 7") + 1
    assert answer == [False] * len("say 7\n") + [True] * 5


def test_a_conversation_counts_every_assistant_turn_and_nothing_else():
    turns = [
        Turn("system", "be brief"),
        Turn("user", "hi"),
        Turn("assistant", "yo"),
        Turn("user", "bye"),
        Turn("assistant", "ok"),
    ]
    tokens = CharTokens(string.ascii_lowercase + " :\n")
    ids, answer = render(turns, tokens)
    text = "".join("|" if t == tokens.eos_id else tokens.characters[t - 2] for t in ids)
    assert text == "system: be brief\nuser: hi\nassistant: yo|user: bye\nassistant: ok|"
    counted = "".join(c for c, a in zip(text, answer, strict=True) if a)
    assert counted == "yo|ok|"


def test_targets_are_the_next_answer_token_and_minus_100_elsewhere():
    tokens = CharTokens("0123456789 aknosy\n")
    samples = [
        [Turn("user", "say 1"), Turn("assistant", "ok")],
        [Turn("user", "s"), Turn("assistant", "o")],
    ]
    encoded = encode(samples, tokens, max_length=64)
    x, y = encoded.x, encoded.y
    assert x.shape == y.shape == (2, len("say 1\nok"))  # the longest, less its last token
    counted = y[0][y[0] != IGNORE].tolist()
    assert tokens.decode(counted) == "ok" and counted[-1] == tokens.eos_id
    assert torch.equal(y[0, :-1][y[0, :-1] != IGNORE], x[0, 1:][y[0, :-1] != IGNORE])
    assert (x[1, 3:] == tokens.pad_id).all() and (y[1, 3:] == IGNORE).all(), "right padding"


def test_long_samples_are_cut_and_counted(caplog):
    tokens = CharTokens("0123456789 aknosy\n")
    encoded = encode([[Turn("user", "say 123456"), Turn("assistant", "ok")]], tokens, 8)
    assert encoded.x.shape[1] == 8 and encoded.truncated == 1


@pytest.mark.parametrize(
    "line, named",
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('{"prompt": "a"}', 'needs a text "prompt" and a text "response"'),
        ('{"prompt": 1, "response": "b"}', 'needs a text "prompt"'),
        ('{"messages": []}', "non-empty list"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', r"messages\[0\] needs a role"),
        ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant message"),
    ],
)
def test_a_bad_line_exits_2_naming_the_file_and_line(tmp_path, line, named):
    path = write_jsonl(tmp_path / "data.jsonl", [*PAIRS[:5], line, *PAIRS[5:]])
    with pytest.raises(UserError, match=named) as error:
        read_jsonl(path)
    assert f"{path} line 6" in str(error.value)


def test_too_few_samples_or_a_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="at least 10"):
        read_jsonl(write_jsonl(tmp_path / "few.jsonl", PAIRS[:3]))
    with pytest.raises(UserError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_the_split_is_by_sample_and_seeded(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", PAIRS * 5)
    data = InstructData(path=str(path), val_fraction=0.2, test_fraction=0.2, split_seed=3).load()
    assert (len(data.train), len(data.val), len(data.test)) == (36, 12, 12)
    again = InstructData(path=str(path), val_fraction=0.2, test_fraction=0.2, split_seed=3).load()
    assert torch.equal(data.test.images, again.test.images)
    other = InstructData(path=str(path), val_fraction=0.2, test_fraction=0.2, split_seed=4).load()
    assert not torch.equal(data.test.images, other.test.images)
    assert data.info.modality == "text" and data.info.image_size == data.train.images.shape[1]


def test_the_drills_are_distinct_right_and_the_same_for_a_seed():
    samples = drills(300, seed=1, kinds=("add", "rev", "sort"))
    assert samples == drills(300, seed=1, kinds=("add", "rev", "sort"))
    assert samples != drills(300, seed=2, kinds=("add", "rev", "sort"))
    prompts = [turns[0].content for turns in samples]
    assert len(set(prompts)) == 300
    for turns in samples:
        kind, argument = turns[0].content.split(" ")
        answer = turns[1].content
        if kind == "add":
            a, b = argument.split("+")
            assert int(answer) == int(a) + int(b)
        elif kind == "rev":
            assert answer == argument[::-1]
        else:
            assert answer == "".join(sorted(argument))
    data = Drills(count=300, seed=1).load()
    assert len(data.train) + len(data.val) + len(data.test) == 300


def test_a_noise_share_of_training_answers_is_shuffled_and_no_held_out_one():
    clean = Drills(count=600, seed=1, noise=0.0, test_fraction=0.2).load()
    noisy = Drills(count=600, seed=1, noise=0.5, test_fraction=0.2).load()
    assert torch.equal(clean.test.labels, noisy.test.labels), "test answers stay right"
    assert torch.equal(clean.val.labels, noisy.val.labels) if clean.val is not None else True
    changed = (clean.train.labels != noisy.train.labels).any(1).float().mean().item()
    assert 0.3 < changed < 0.5, "about half, less those whose shuffle is the answer itself"
    same = (clean.train.labels != IGNORE) == (noisy.train.labels != IGNORE)
    assert same.all(), "the same positions count: only the letters moved"
