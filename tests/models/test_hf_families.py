"""Hugging Face families (Llama, Qwen2, GPT-2): tiny models and tokenizers built offline from
configs (tests/models/hf_families.py), their chat templates rendered with the answers alone
counted, and chat data distilled between families end to end."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from hf_families import chats, save_model, tokenizer, write_chats

from kdcli.cli.main import main
from kdcli.data.instruct import IGNORE, HFTokens, Turn, encode, render
from kdcli.errors import UserError
from kdcli.models.lm.hf import check_shared_tokenizer, hf_causal_lm
from kdcli.tasks.instruct import words

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


def test_a_tokenizer_that_extends_the_teachers_with_a_token_of_its_own_is_shared(
    families, tmp_path, caplog
):
    """A fine-tune's added token (ids past the teacher's): the data never holds it, and the
    student's logits are cut to the data's tokenizer."""
    extended = tokenizer("chatml")
    extended.add_special_tokens({"additional_special_tokens": ["<|tool|>"]})
    vocabulary = len(HFTokens(str(families["qwen2"])))
    teacher = hf_causal_lm(str(families["qwen2"]), vocabulary, image_size=64)
    student_dir = save_model(tmp_path / "student", "gpt2", extended)
    student = hf_causal_lm(str(student_dir), vocabulary, image_size=64)
    with caplog.at_level(logging.INFO):
        check_shared_tokenizer({"teacher": teacher, "student": student}, str(families["qwen2"]))
    assert f"its tokenizer has {vocabulary + 1} tokens, teacher.path's {vocabulary}" in caplog.text
    assert student(torch.zeros(1, 4, dtype=torch.long)).shape[-1] == vocabulary


def chat_run(families: dict[str, Path], teacher: str, student: str) -> list[str]:
    return [
        "task=instruct",
        "dataset=instruct",
        f"dataset.path={families['chats']}",
        "dataset.max_length=64",
        "teacher=hf",
        f"teacher.path={families[teacher]}",
        "student=hf",
        f"student.path={families[student]}",
        "teacher.epochs=1",
        "student.epochs=1",
        "eval.latency_runs=2",
        "plots=false",
    ]


def test_chat_data_distils_from_a_llama_teacher_into_a_qwen2_student(kd, families):
    """The student's directory holds the Llama tokenizer (transformers 5 reads it as its model
    type's, Qwen2Tokenizer, which adds <|endoftext|>: a vocabulary that extends the data's)."""
    student = "qwen2 (llama's tokenizer)"
    on_policy = ["soft_labels.mode=online", "loss.lmbda=0.5"]  # the preset's mode: generate
    result = kd("train", *chat_run(families, "llama", student), *on_policy)
    assert result.returncode == 0, result.stderr
    report = result.report()
    assert report["soft_labels"]["on_policy"] == 0.5, "half the batches written by the student"
    vocabulary = len(HFTokens(str(families["llama"])))
    assert report["dataset"]["num_classes"] == vocabulary
    assert f"the {448 - vocabulary} padded rows are ignored" in result.stderr
    answers = report["answers"]
    assert answers and {"prompt", "reference", "teacher", "student", "baseline"} <= set(answers[0])
    assert all(a["reference"].startswith("it is ") for a in answers)
    assert all(a["prompt"].startswith("[INST]") for a in answers), "bos skipped, not cut"
    for role in ("teacher", "student", "baseline"):
        assert 0 <= report[role]["rouge_l"] <= 1 and report[role]["generation_nll"] > 0


def test_chat_data_distils_from_qwen2_into_gpt2_whose_answers_kd_eval_judges(kd, families, capsys):
    """The teacher trains long enough to answer, and its greedy answers (whole forward
    passes: a transformers model has no `decode`) stop at its end token, <|im_end|>; it
    writes the student's training answers too (sequence-level KD)."""
    teach = ["teacher.epochs=20", "teacher.batch_size=8", "teacher.optimizer.lr=1e-2"]
    run = [*chat_run(families, "qwen2", "gpt2"), *teach]
    result = kd("train", *run, "soft_labels.mode=generate")
    assert result.returncode == 0, result.stderr
    report = result.report()
    assert report["soft_labels"]["mode"] == "generate"
    assert report["teacher"]["rouge_l"] > 0.5
    for answer in report["answers"]:
        assert len(words(answer["teacher"])) <= 4, "stopped at <|im_end|>"
        assert "<|im_start|>" not in answer["prompt"] and "user\nwhat is" in answer["prompt"]
        assert answer["prompt"].endswith("assistant\n"), "not cut at the turns' <|im_end|>"
    student = result.runs()[0] / "student.pt"
    assert main(["eval", str(student), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["test"]["exact_match"] == report["student"]["exact_match"]
    assert figures["test"]["rouge_l"] == pytest.approx(report["student"]["rouge_l"])
    assert figures["test"]["answers"] == report["kd_gain_images"]["total"]
    assert figures["test"]["top1"] == pytest.approx(report["student"]["top1"])
    assert main(["eval", str(student)]) == 0  # the table: the answers' figures first
    rows = [line for line in capsys.readouterr().out.splitlines() if "%" in line]
    assert "exact match" in rows[0] and "ROUGE-L" in rows[1]


def test_a_chat_template_whose_answers_do_not_follow_its_prompt_exits_2(kd, families):
    result = kd("train", *chat_run(families, "unsplittable", "qwen2"))
    assert result.returncode == 2
    assert f"dataset.tokenizer={families['unsplittable']}: its chat template" in result.stderr
    assert "Traceback" not in result.stderr and not result.runs()
