"""Distillation across two tokenizers, end to end: a character-level GPT teacher and a
student that reads a byte-level BPE (trained offline with `tokenizers` on the bundled text in
the test's tmp dir), with `loss=uld` from the stored top-k (tests/knowledge/test_align.py
reads the online teacher's logits alike); and the same-vocabulary losses refused (exit 2)
with a message that names `loss=uld`."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from kd_settings import TINY_LM

from kdcli.data.text import BUNDLED, TextCorpus

if (
    importlib.util.find_spec("tokenizers") is None
    or importlib.util.find_spec("transformers") is None
):
    pytest.skip("kdcli[hf] absent", allow_module_level=True)

CHARACTERS = 6000  # TINY_LM's dataset.max_chars


def train_bpe(directory: Path, vocabulary: int = 300) -> Path:
    """A byte-level BPE of `vocabulary` tokens learnt from the bundled text, saved as a
    Hugging Face tokenizer directory (nothing downloaded)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    with gzip.open(BUNDLED, "rt", encoding="utf-8") as handle:
        text = handle.read()[:20000]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocabulary,
        special_tokens=["[UNK]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([text], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(
        directory
    )
    return directory


@pytest.fixture(scope="module")
def bpe(tmp_path_factory) -> Path:
    return train_bpe(tmp_path_factory.mktemp("bpe"))


def cross(bpe: Path, *more: str) -> list[str]:
    return [*TINY_LM, f"dataset.tokenizer={bpe}", "teacher.tokenizer=chars", *more]


def test_both_tokenizers_read_the_same_text_in_each_window(bpe):
    corpus = TextCorpus(max_chars=CHARACTERS, block_size=32, windows="characters")
    chars, tokens = corpus.with_tokenizer(None).load(), corpus.with_tokenizer(str(bpe)).load()
    assert chars.num_train == tokens.num_train > 100
    assert chars.info.image_size == 32, "characters: the usual windows"
    assert tokens.info.image_size < 32, "BPE: fewer tokens than characters, padded"
    assert torch.equal(
        chars.train.images, TextCorpus(max_chars=CHARACTERS, block_size=32).load().train.images
    )
    for i in (0, 7, 50):  # window i: the same characters under both tokenizers
        y = tokens.train.labels[i]
        counted = int((y != -100).sum())
        assert (y[counted:] == -100).all(), "the padding is on the right, and masked"
        ids = [int(tokens.train.images[i, 0]), *y[:counted].tolist()]
        text = chars.vocabulary.decode(
            [int(chars.train.images[i, 0]), *chars.train.labels[i].tolist()]
        )
        assert tokens.vocabulary.decode(ids) == text


def test_uld_distils_a_character_teacher_into_a_bpe_student(kd, bpe, tmp_path):
    stored = kd("train", *cross(bpe, "loss=uld"))
    assert stored.returncode == 0, stored.stderr
    report = stored.report()
    assert report["soft_labels"]["mode"] == "static" and report["soft_labels"]["topk"] == 32
    assert report["dataset"]["num_classes"] == 300, "the student's (BPE) vocabulary"
    assert report["student"]["perplexity"] > 1 and report["teacher"]["perplexity"] > 1
    # the teacher's tokens are not the student's: no agreement or KL between them
    assert "agreement" not in report["student"] and "teacher_kl" not in report["student"]
    rows = (stored.runs()[0] / "metrics.jsonl").read_text().splitlines()
    student = [json.loads(row) for row in rows if '"student"' in row]
    assert student and all(math.isfinite(row["loss"]) for row in student)
    # the run's config holds how its text was cut: kd eval reads the student's windows again
    evaluated = kd("eval", str(stored.runs()[0] / "student.pt"), "--json", cwd=stored.cwd)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["test"]["top1"] == report["student"]["top1"]


def test_same_vocabulary_losses_refuse_two_tokenizers_naming_uld(kd, bpe):
    # (tests/config/test_tokenizers.py: the other losses, before anything runs, in process)
    result = kd("train", *cross(bpe, "loss=token_kd"))
    assert result.returncode == 2
    assert "loss=uld" in result.stderr and "teacher.tokenizer=chars" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(result.cwd.glob("outputs/**/report.json"))
