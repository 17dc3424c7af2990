"""Hugging Face causal LMs read from local directories (models/lm/hf.py, data/tokenizer.py):
built offline from tiny configs, distilled end to end, and refused when the teacher's and the
student's tokenizers differ (unless each reads its own, with loss=uld)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from kdcli.errors import UserError
from kdcli.models.lm.hf import CausalLM, check_shared_tokenizer, hf_causal_lm

if importlib.util.find_spec("transformers") is None:  # found without importing it (6 s)
    pytest.skip("kdcli[hf] absent", allow_module_level=True)

TEXT = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune.\n"
) * 40


def char_tokenizer(text: str):
    """A character-level tokenizer built offline (a WordLevel model over single characters)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = {c: i for i, c in enumerate(sorted(set(text)))}
    vocabulary["[UNK]"] = len(vocabulary)
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]")


def save_gpt2(directory: Path, tokenizer, rows: int, width: int = 16, layers: int = 1) -> Path:
    """A tiny random GPT-2 with `rows` vocabulary rows, and its tokenizer, in `directory`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=rows, n_positions=64, n_embd=width, n_layer=layers, n_head=2,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def hf_dirs(tmp_path: Path) -> dict[str, Path]:
    tokenizer = char_tokenizer(TEXT)
    (tmp_path / "corpus.txt").write_text(TEXT)
    other = char_tokenizer(TEXT + "XYZ")
    return {
        "corpus": tmp_path / "corpus.txt",
        # padded to 64 rows, as models often are; the tokenizer has 26 tokens
        "teacher": save_gpt2(tmp_path / "teacher", tokenizer, 64, width=32, layers=2),
        "student": save_gpt2(tmp_path / "student", tokenizer, len(tokenizer)),
        "other": save_gpt2(tmp_path / "other", other, len(other)),
    }


def test_a_padded_vocabulary_is_cut_to_the_tokenizers(hf_dirs):
    model = hf_causal_lm(str(hf_dirs["teacher"]), num_classes=26, image_size=32)
    assert isinstance(model, CausalLM) and model.padded_rows == 38
    assert model(torch.zeros(2, 8, dtype=torch.long)).shape == (2, 8, 26)


def test_a_window_longer_than_the_model_reads_is_refused(hf_dirs):
    with pytest.raises(
        UserError, match=r"dataset.block_size=100 \(dataset.max_length .* at most 64 positions"
    ):
        hf_causal_lm(str(hf_dirs["student"]), num_classes=26, image_size=100)


def test_a_vocabulary_larger_than_the_model_is_refused(hf_dirs):
    with pytest.raises(UserError, match="26 output rows, fewer than the 30 tokens"):
        hf_causal_lm(str(hf_dirs["student"]), num_classes=30, image_size=32)


def test_different_tokenizers_name_both_directories(hf_dirs):
    teacher = hf_causal_lm(str(hf_dirs["teacher"]), num_classes=26, image_size=32)
    other = hf_causal_lm(str(hf_dirs["other"]), num_classes=29, image_size=32)
    with pytest.raises(UserError) as error:
        check_shared_tokenizer({"teacher": teacher, "student": other}, str(hf_dirs["teacher"]))
    message = str(error.value)
    assert f"teacher.path={hf_dirs['teacher']}" in message
    assert f"student.path={hf_dirs['other']}" in message and "26 and 29 tokens" in message


def test_an_hf_model_on_character_data_is_refused(hf_dirs):
    student = hf_causal_lm(str(hf_dirs["student"]), num_classes=26, image_size=32)
    with pytest.raises(UserError, match="dataset.tokenizer is null"):
        check_shared_tokenizer({"teacher": torch.nn.Linear(1, 1), "student": student}, None)


def hf_run(dirs: dict[str, Path], student: str) -> list[str]:
    return [
        "task=lm",
        "dataset=text",
        f"dataset.path={dirs['corpus']}",
        "dataset.block_size=32",
        "teacher=hf",
        f"teacher.path={dirs['teacher']}",
        "student=hf",
        f"student.path={dirs[student]}",
        "teacher.epochs=1",
        "student.epochs=1",
        "eval.latency_runs=2",
        "plots=false",
    ]


def test_kd_train_distills_one_hf_model_into_another(kd, hf_dirs):
    # a store over soft_labels.max_gb: the teacher runs online, on token windows too
    result = kd("train", *hf_run(hf_dirs, "student"), "soft_labels.max_gb=1e-6")
    assert result.returncode == 0, result.stderr
    report = result.report()
    assert report["dataset"]["num_classes"] == 26, "the tokenizer's vocabulary, not the 64 rows"
    assert report["teacher"]["name"] == "hf" and report["student"]["perplexity"] > 1
    assert "the 38 padded rows are ignored" in result.stderr
    assert set(report["samples"]) == {"prompt", "teacher", "student", "baseline"}
    assert report["soft_labels"]["mode"] == "online" and report["soft_labels"]["bytes"] == 0


def test_kd_train_refuses_a_student_with_another_tokenizer(kd, hf_dirs):
    result = kd("train", *hf_run(hf_dirs, "other"))
    assert result.returncode == 2
    assert "use different tokenizers" in result.stderr and str(hf_dirs["other"]) in result.stderr
    assert not list(result.cwd.glob("outputs/**/report.json"))


def test_kd_train_distils_across_two_tokenizers_with_uld(kd, hf_dirs):
    # the refused pair above, each model reading its own tokenizer: the teacher
    # teacher.tokenizer's, the student (and the data it learns) dataset.tokenizer's
    own = [f"teacher.tokenizer={hf_dirs['teacher']}", f"dataset.tokenizer={hf_dirs['other']}"]
    result = kd("train", *hf_run(hf_dirs, "other"), *own, "loss=uld", "baseline=false")
    assert result.returncode == 0, result.stderr
    report = result.report()
    assert report["dataset"]["num_classes"] == 29, "the student's tokenizer sizes the data"
    assert report["student"]["perplexity"] > 1 and "agreement" not in report["student"]


def test_a_teacher_is_checked_against_its_own_tokenizer(hf_dirs):
    teacher = hf_causal_lm(str(hf_dirs["teacher"]), num_classes=26, image_size=32)
    check_shared_tokenizer({"teacher": teacher}, str(hf_dirs["teacher"]), "teacher.tokenizer")
    with pytest.raises(UserError, match=f"teacher.tokenizer={hf_dirs['other']}"):
        check_shared_tokenizer({"teacher": teacher}, str(hf_dirs["other"]), "teacher.tokenizer")
    with pytest.raises(UserError, match="teacher.tokenizer is null or chars"):
        check_shared_tokenizer({"teacher": teacher}, None, "teacher.tokenizer")


def test_kd_train_hf_without_a_path_names_the_key(kd):
    result = kd("train", "task=lm", "teacher=hf")
    assert result.returncode == 2 and "teacher.path is not set" in result.stderr


def test_a_directory_whose_config_names_its_own_code_is_refused_without_running_it(tmp_path):
    """`auto_map` makes transformers import a Python file from the model's directory, only
    with trust_remote_code, which kdcli never gives."""
    marker = tmp_path / "MARKER"
    (tmp_path / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (tmp_path / "config.json").write_text(
        '{"model_type": "kd_evil", "architectures": ["Evil"], '
        '"auto_map": {"AutoConfig": "modeling_evil.EvilConfig", '
        '"AutoModelForCausalLM": "modeling_evil.Evil"}}'
    )
    with pytest.raises(UserError, match="no causal LM could be loaded"):
        hf_causal_lm(str(tmp_path), num_classes=10)
    assert not marker.exists()
