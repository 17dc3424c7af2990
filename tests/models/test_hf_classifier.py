"""Hugging Face sequence classifiers read from local directories (models/text/hf.py): a tiny
BERT with a character tokenizer, built offline from a config (nothing is downloaded), given
the data's classes, masked by the data's padding id, and distilled end to end into the
built-in text classifier."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from kd_settings import TINY_TEXT

from kdcli.data.text_classify import TextClassification
from kdcli.errors import UserError
from kdcli.models.lm.hf import check_shared_tokenizer
from kdcli.models.text.hf import SequenceClassifier, hf_classifier

if importlib.util.find_spec("transformers") is None:  # found without importing it (6 s)
    pytest.skip("kdcli[hf] absent", allow_module_level=True)

CHARACTERS = "abcdefghijklmnopqrstuvwxyz ,"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def save_bert(
    directory: Path, labels: int = 2, positions: int = 64, characters: str = CHARACTERS
) -> Path:
    """A tiny random BertForSequenceClassification and a character tokenizer with BERT's
    special tokens ([CLS] text [SEP], [PAD] = 0), saved in `directory`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocabulary = {token: i for i, token in enumerate([*SPECIAL, *sorted(characters)])}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.decoder = decoders.Fuse()
    special = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token"), SPECIAL, strict=True))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special).save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(vocabulary), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=positions, num_labels=labels,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


def write_texts(path: Path) -> Path:
    words = {"good": "pos", "great": "pos", "bad": "neg", "dull": "neg", "fine": "ok"}
    lines = [
        json.dumps({"text": f"{subject} was {word}", "label": label})
        for subject in ("the film", "a plot", "this cast", "that song") * 10
        for word, label in words.items()
    ]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def bert(tmp_path: Path) -> Path:
    return save_bert(tmp_path / "bert")


def test_a_classifier_gets_the_datas_classes_and_ignores_padding(bert, caplog):
    with caplog.at_level(logging.INFO):
        model = hf_classifier(str(bert), num_classes=3, image_size=24, vocabulary=32, padding=0)
    assert isinstance(model, SequenceClassifier)
    assert "a new classification head for 3 classes (classifier.bias" in caplog.text
    text = [2, 20, 11, 8, 3]  # [CLS] t h e [SEP]
    short = model.eval()(torch.tensor([text]))
    assert short.shape == (1, 3)
    assert torch.allclose(model(torch.tensor([text + [0] * 20])), short, atol=1e-5)


def test_texts_longer_than_the_model_reads_are_refused(tmp_path):
    directory = save_bert(tmp_path / "bert", positions=16)
    with pytest.raises(UserError, match=r"dataset.max_length=32: .* at most 16 positions"):
        hf_classifier(str(directory), num_classes=3, image_size=32, vocabulary=32)


def test_a_vocabulary_larger_than_the_model_reads_is_refused(bert):
    with pytest.raises(UserError, match="reads 32 token ids, fewer than the 40"):
        hf_classifier(str(bert), num_classes=3, vocabulary=40)


def test_a_classifier_on_character_data_is_refused(bert):
    student = hf_classifier(str(bert), num_classes=3, image_size=24, vocabulary=32)
    with pytest.raises(UserError, match=r"student.path=.*bert reads the ids of its tokenizer"):
        check_shared_tokenizer({"teacher": torch.nn.Linear(1, 1), "student": student}, None)


def test_classifiers_with_different_tokenizers_are_refused(bert, tmp_path):
    other = save_bert(tmp_path / "other", characters=CHARACTERS + "!")
    teacher = hf_classifier(str(bert), num_classes=3, image_size=24, vocabulary=32)
    student = hf_classifier(str(other), num_classes=3, image_size=24, vocabulary=32)
    with pytest.raises(UserError, match="use different tokenizers") as refused:
        check_shared_tokenizer({"teacher": teacher, "student": student}, str(bert))
    assert str(other) in str(refused.value) and "student=text_transformer_tiny" in str(
        refused.value
    )
    same = hf_classifier(str(bert), num_classes=3, image_size=24, vocabulary=32)
    check_shared_tokenizer({"teacher": teacher, "student": same}, str(bert))


def test_the_data_is_cut_into_the_tokenizers_ids(bert, tmp_path):
    path = write_texts(tmp_path / "texts.jsonl")
    source = TextClassification(path=str(path), tokenizer=str(bert), max_length=24)
    data = source.load()
    assert (data.info.vocabulary, data.info.padding) == (32, 0)
    first = data.train.images[0].tolist()
    assert first[0] == 2 and 3 in first and first[-1] == 0, "[CLS] text [SEP] [PAD]..."


def test_a_directory_whose_config_names_its_own_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "MARKER"
    (tmp_path / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (tmp_path / "config.json").write_text(
        '{"model_type": "kd_evil", "architectures": ["Evil"], '
        '"auto_map": {"AutoConfig": "modeling_evil.EvilConfig", '
        '"AutoModelForSequenceClassification": "modeling_evil.Evil"}}'
    )
    with pytest.raises(UserError, match="no sequence classifier could be loaded"):
        hf_classifier(str(tmp_path), num_classes=2)
    assert not marker.exists()


def test_kd_train_distills_an_hf_classifier_into_the_built_in_one(kd, bert, tmp_path):
    path = write_texts(tmp_path / "texts.jsonl")
    result = kd(
        "train",
        *TINY_TEXT,
        f"dataset.path={path}",
        "dataset.max_length=24",
        "teacher=hf_classifier",
        f"teacher.path={bert}",
        "teacher.optimizer.lr=1e-3",
    )
    assert result.returncode == 0, result.stderr
    report = result.report()
    assert report["teacher"]["name"] == "hf_classifier"
    assert report["student"]["name"] == "text_transformer_tiny"
    dataset = report["dataset"]
    assert dataset["classes"] == ["neg", "ok", "pos"] and dataset["vocabulary"] == 32
    assert "a new classification head for 3 classes" in result.stderr
    assert report["soft_labels"]["bytes"] > 0 and "kd_gain_ci" in report
