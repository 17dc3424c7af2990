"""Labelled texts for text classification (data/text_classify.py, data/reviews.py): the JSON
Lines reader and what it refuses (exit 2, naming the file and the line), the classes, the
character tokens, the seeded stratified split, and the bundled generated reviews."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from kd_settings import TINY_TEXT

from kdcli.cli.main import main
from kdcli.data import DatasetInfo
from kdcli.data.reviews import CLASSES, NEGATIVE, POSITIVE, Reviews, reviews
from kdcli.data.text_classify import TextClassification
from kdcli.errors import UserError


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def labelled(tmp_path: Path, rows: list[tuple[str, object]], **settings) -> TextClassification:
    lines = [json.dumps({"text": text, "label": label}) for text, label in rows]
    path = write_lines(tmp_path / "texts.jsonl", lines)
    return TextClassification(path=str(path), **settings)


GOOD = '{"text": "a fine film", "label": "pos"}'


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("{not json", "line 2 is not JSON"),
        ('["a list", "pos"]', 'line 2 is a list, not a JSON object. Give one JSON object {"text"'),
        ('"just a string"', "line 2 is a string, not a JSON object"),
        ('{"label": "pos"}', 'line 2 has no "text"'),
        ('{"text": "no label"}', 'line 2 has no "label"'),
        ('{"text": 42, "label": "pos"}', 'line 2: "text" is a number; it must be a string'),
        ('{"text": null, "label": "pos"}', 'line 2: "text" is null; it must be a string'),
        ('{"text": "x", "label": 1.5}', 'line 2: "label" is 1.5 (a number); it must be a string'),
        ('{"text": "x", "label": true}', 'line 2: "label" is true (true or false)'),
        ('{"text": "x", "label": null}', 'line 2: "label" is null; it must be a string'),
        ('{"text": "x", "label": ["pos"]}', 'line 2: "label" is ["pos"] (a list)'),
        ('{"text": "x", "label": 3}', 'line 2: "label" is a number, but line 1 has a string'),
    ],
)
def test_a_bad_line_is_refused_naming_the_file_and_the_line(tmp_path, bad, expected):
    path = write_lines(tmp_path / "texts.jsonl", [GOOD, bad, GOOD])
    with pytest.raises(UserError) as refused:
        TextClassification(path=str(path)).load()
    assert UserError.exit_code == 2
    assert f"{path} line 2" in str(refused.value) and expected in str(refused.value)


def test_bytes_that_are_not_utf8_name_their_line(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"text": "\xff\xfe", "label": "pos"}\n')
    with pytest.raises(UserError, match=r"line 2 is not JSON \('utf-8' codec"):
        TextClassification(path=str(path)).load()


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_file_is_refused(tmp_path, content):
    path = tmp_path / "texts.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=r"texts.jsonl holds no labelled texts \(it is empty\)"):
        TextClassification(path=str(path)).load()


def test_a_single_class_is_refused(tmp_path):
    source = labelled(tmp_path, [("a", "pos"), ("b", "pos"), ("c", "pos")])
    with pytest.raises(UserError, match="every text has the label 'pos'; .* at least two classes"):
        source.load()


def test_a_missing_file_names_the_key(tmp_path):
    with pytest.raises(UserError, match=r"dataset.path=.*nothere.jsonl: no such file"):
        TextClassification(path=str(tmp_path / "nothere.jsonl")).check()


def test_classes_are_the_sorted_labels_and_characters_the_tokens(tmp_path):
    rows = [("ba", 10), ("ab", 2), ("", 2), ("aab", 10), ("b", 2), ("a", 10)]
    path = tmp_path / "texts.jsonl"
    # a byte-order mark and blank lines, as editors write them
    path.write_text("\ufeff" + "\n\n".join(json.dumps({"text": t, "label": y}) for t, y in rows))
    source = TextClassification(path=str(path), max_length=2, test_fraction=0.3, val_fraction=0)
    data = source.load()
    info = data.info
    assert info.classes == ("2", "10"), "numbers sort by value"
    assert (info.modality, info.num_classes, info.vocabulary, info.padding) == (
        "labelled_text",
        2,
        3,
        0,
    )
    every = torch.cat([data.train.images, data.test.images])
    labels = torch.cat([data.train.labels, data.test.labels]).tolist()
    texts = {
        data.vocabulary.decode(row.tolist()): label
        for row, label in zip(every, labels, strict=True)
    }
    assert texts == {"ba": 1, "ab": 0, "": 0, "aa": 1, "b": 0, "a": 1}, "cut to 2 tokens"
    assert every.shape == (6, 2) and every.dtype == torch.long
    assert model_record_round_trip(info) == info


def model_record_round_trip(info: DatasetInfo) -> DatasetInfo:
    """What a model file records of the dataset, read back (JSON, as kd eval reads it)."""
    return DatasetInfo.from_record(json.loads(json.dumps(asdict(info))), "student.pt")


def test_a_model_file_with_bad_text_facts_is_refused():
    record = asdict(Reviews(count=200).info)
    for key, value in (("padding", 99), ("classes", ["a"]), ("vocabulary", 0)):
        with pytest.raises(UserError, match=f"dataset.{key}"):
            DatasetInfo.from_record({**record, key: value}, "student.pt")


def test_the_split_is_seeded_stratified_and_covers_every_text(tmp_path):
    rows = [(f"text {i}", "abc"[i % 3]) for i in range(300)]
    settings = {"test_fraction": 0.2, "val_fraction": 0.1}
    data = labelled(tmp_path, rows, split_seed=0, **settings).load()
    sizes = [torch.bincount(data.labels(split)).tolist() for split in data.splits]
    assert data.splits == ("train", "val", "test")
    assert sizes == [[72, 72, 72], [8, 8, 8], [20, 20, 20]], "each class held out alike"
    seen = [
        data.vocabulary.decode(row.tolist()) for s in data.splits for row in data._split(s).images
    ]
    assert sorted(seen) == sorted(text for text, _ in rows), "disjoint, and nothing lost"
    again = labelled(tmp_path, rows, split_seed=0, **settings).load()
    other = labelled(tmp_path, rows, split_seed=1, **settings).load()
    assert torch.equal(again.test.images, data.test.images)
    assert not torch.equal(other.test.images, data.test.images)


def test_too_few_texts_for_a_test_split_are_refused(tmp_path):
    source = labelled(tmp_path, [("a", "x"), ("b", "y")], test_fraction=0.2)
    with pytest.raises(UserError, match="leave none for the test split"):
        source.load()


def test_the_generated_reviews_are_seeded_and_never_cut():
    assert reviews(50, seed=3) == reviews(50, seed=3) != reviews(50, seed=4)
    source = Reviews(count=2000)
    assert source.info.classes == tuple(sorted(CLASSES))
    data = source.load()
    every = torch.cat([data.train.images, data.val.images, data.test.images])
    assert bool((every[:, -1] == 0).all()), "every review fits max_length"
    assert len(data.train) + len(data.val) + len(data.test) == 2000


def test_a_review_is_labelled_by_its_opinions_with_negation():
    assert review_label("plot good") == "positive"
    assert review_label("plot not good") == "negative"
    assert review_label("plot not good, cast not bad") == "mixed"
    assert review_label("plot dull, cast fine, end not awful") == "positive"
    assert {label for _, label in reviews(500, seed=0)} == set(CLASSES)
    for text, label in reviews(500, seed=1):
        assert review_label(text) == label, text


def review_label(text: str) -> str:
    """The class a review's words give, read independently of the generator."""
    words, score = text.replace(",", "").split(), 0
    for i, word in enumerate(words):
        sign = (word in POSITIVE) - (word in NEGATIVE)
        score += -sign if i and words[i - 1] == "not" else sign
    return CLASSES[(score > 0) - (score < 0) + 1]


def test_noise_makes_training_labels_wrong_and_leaves_the_others_right():
    clean, noisy = Reviews(count=2000).load(), Reviews(count=2000, noise=0.3).load()
    for split in ("val", "test"):
        assert torch.equal(noisy.labels(split), clean.labels(split)), split
        assert torch.equal(noisy._split(split).images, clean._split(split).images), split
    assert torch.equal(noisy.train.images, clean.train.images)
    wrong = noisy.train.labels != clean.train.labels
    assert 0.25 < wrong.float().mean() < 0.35, "about the share asked for"
    again = Reviews(count=2000, noise=0.3).load()
    assert torch.equal(again.train.labels, noisy.train.labels), "drawn by the seed"
    assert set(noisy.train.labels.tolist()) == {0, 1, 2}


def test_kd_train_distills_a_text_classifier_that_kd_eval_reads(kd, tmp_path, capsys):
    path = write_lines(
        tmp_path / "reviews.jsonl",
        [json.dumps({"text": text, "label": label}) for text, label in reviews(400, seed=0)],
    )
    result = kd(
        "train", *TINY_TEXT, "teacher=text_transformer_tiny", f"dataset.path={path}", "loss=dkd"
    )
    assert result.returncode == 0, result.stderr
    report = result.report()
    dataset = report["dataset"]
    assert (dataset["modality"], dataset["classes"]) == ("labelled_text", sorted(CLASSES))
    assert dataset["image_size"] == 128 and dataset["padding"] == 0
    assert report["metric"] == "top1" and "kd_gain_ci" in report
    assert "test texts" in result.stdout
    student = result.runs()[0] / "student.pt"
    assert main(["eval", str(student), "--json"]) == 0, "the run's JSON Lines file, read again"
    figures = json.loads(capsys.readouterr().out)
    assert figures["test"]["top1"] == report["student"]["top1"]
    assert figures["val"]["top1"] == report["student"]["val_top1"]
