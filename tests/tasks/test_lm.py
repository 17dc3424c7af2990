"""`task=lm`: the character corpus (data/text.py), the GPT (models/lm/gpt.py), the language
modelling task (tasks/lm.py) and the pipeline end to end on text."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kd_settings import TINY_LM
from toy_models import Always

from kdcli.data.text import TextCorpus
from kdcli.engine.precision import FP32
from kdcli.knowledge.generate import generate_windows
from kdcli.losses import SoftTargetKD
from kdcli.models.lm.gpt import GPT
from kdcli.tasks.lm import LanguageModel, draw_tokens


def test_the_corpus_is_cut_into_shifted_windows_split_in_text_order(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("abcdefghij" * 66)  # 660 characters: 20 windows of 33
    data = TextCorpus(name="t", path=str(path), block_size=32).load()
    assert data.info.num_classes == 10 and data.info.image_size == 32
    assert data.info.modality == "text"
    assert (len(data.train), len(data.val), len(data.test)) == (16, 2, 2)
    x, y = data.train.images[0], data.train.labels[0]
    assert torch.equal(y[:-1], x[1:]), "y is x shifted by one character"
    assert data.vocabulary.decode(x[:4].tolist()) == "abcd"
    batch = next(data.train_loader(4, seed=0).epoch(0))
    assert batch.x.shape == (4, 32) and batch.x.dtype == torch.long


def test_the_bundled_corpus_loads_offline():
    data = TextCorpus(max_chars=20_000).load()
    assert data.info.name == "shakespeare" and 40 < data.info.num_classes < 80


def test_the_gpt_is_causal_and_its_head_is_tied():
    torch.manual_seed(0)
    model = GPT(20, 1, 16, layers=2, heads=2, width=32, dropout=0.0).eval()
    tokens = torch.randint(0, 20, (2, 16))
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 20
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert a.shape == (2, 16, 20)
    torch.testing.assert_close(a[:, :10], b[:, :10])  # the past does not see the future
    assert not torch.allclose(a[:, 10:], b[:, 10:])
    assert model.head.weight is model.tokens.weight


def test_the_task_flattens_tokens_and_reports_perplexity():
    task = LanguageModel()
    logits, targets = torch.randn(3, 5, 7), torch.randint(0, 7, (3, 5))
    flat, teacher, labels = task.flatten(logits, logits, targets)
    assert flat.shape == (15, 7) and teacher.shape == (15, 7) and labels.shape == (15,)
    figures = task.metrics(logits, targets)
    nll = F.cross_entropy(flat, labels).item()
    assert figures["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
    assert figures["bpc"] == pytest.approx(nll / math.log(2), rel=1e-5)
    assert task.count(targets) == 15 and task.correct(logits, targets).shape == (15,)
    targets[:, :2] = -100  # ignored (instruction data's prompts): neither scored nor counted
    assert task.count(targets) == 9 and int(task.score(logits, targets)) <= 9
    loss = SoftTargetKD(alpha=0.5, temperature=1.0)(flat, teacher, labels)
    assert torch.isfinite(loss)


def test_kd_train_task_lm_runs_the_four_stages_on_text(kd):
    result = kd("train", *TINY_LM)
    assert result.returncode == 0, result.stderr
    report = result.report()
    assert report["dataset"]["modality"] == "text" and report["metric"] == "top1"
    for role in ("teacher", "student", "baseline"):
        assert report[role]["perplexity"] > 1 and 0 <= report[role]["top1"] <= 1
    assert report["soft_labels"]["mode"] == "static", "text is not augmented"
    assert report["teacher"]["name"] == "gpt_tiny" and report["student"]["name"] == "gpt_tiny"
    assert "perplexity" in result.stdout and "bits per character" in result.stdout
    # each model continues one test prompt, shown on the terminal and in report.md
    samples = report["samples"]
    assert set(samples) == {"prompt", "teacher", "student", "baseline"}
    assert len(samples["prompt"]) == 32 and all(
        len(samples[r]) == 200 for r in samples if r != "prompt"
    )
    assert "## Samples" in (result.runs()[0] / "report.md").read_text()
    assert "KL(teacher || model)" in result.stdout and "test tokens" in result.stdout
    for role in ("student", "baseline"):
        assert report[role]["teacher_kl"] >= 0
    assert report["kd_gain_perplexity"] == pytest.approx(
        report["baseline"]["perplexity"] - report["student"]["perplexity"]
    )
    # kd eval re-evaluates the saved student on the same windows, as the report did
    evaluated = kd("eval", str(result.runs()[0] / "student.pt"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    test = json.loads(evaluated.stdout)["test"]
    assert test["perplexity"] == pytest.approx(report["student"]["perplexity"], rel=1e-4)
    assert test["top1"] == pytest.approx(report["student"]["top1"]) and test["tokens"] > 0


def test_a_sweep_over_token_losses_trains_one_teacher(kd):
    result = kd(
        "train", "-m", *TINY_LM, "loss=token_kd,rkl", "soft_labels.topk=8", "baseline=false"
    )
    assert result.returncode == 0, result.stderr
    reports = [json.loads((run / "report.json").read_text()) for run in result.runs()]
    assert sorted(r["loss"]["name"] for r in reports) == ["rkl", "token_kd"]
    assert all(r["soft_labels"]["topk"] == 8 for r in reports)
    teachers = list((result.cwd / "outputs" / "cache" / "teachers").glob("*/manifest.json"))
    assert len(teachers) == 1, "the second point reuses the first one's teacher"
    assert reports[0]["soft_labels"]["path"] == reports[1]["soft_labels"]["path"]


def test_decoding_with_kept_keys_and_values_matches_the_whole_forward_pass():
    torch.manual_seed(0)
    model = GPT(20, 1, 16, layers=2, heads=2, width=32, dropout=0.1).eval()
    tokens = torch.randint(0, 20, (3, 12))
    with torch.no_grad():
        whole = model(tokens)
        logits, past = model.decode(tokens[:, :8])
        torch.testing.assert_close(logits, whole[:, 7])
        for position in range(8, 12):  # one new token at a time, the prefix kept
            logits, past = model.decode(tokens[:, position : position + 1], past)
            torch.testing.assert_close(logits, whole[:, position])
    assert past[0][0].shape == (3, 2, 12, 16)


def test_the_key_value_cache_draws_the_tokens_a_whole_forward_pass_draws():
    torch.manual_seed(0)
    model = GPT(20, 1, 16, layers=2, heads=2, width=32, dropout=0.0).eval()
    prompt = torch.randint(0, 20, (4, 6))
    for length, window in ((17, 16), (24, 16)):  # within the window (cached), and sliding
        drawn = [
            draw_tokens(model, prompt, length, window, 1.0, torch.Generator().manual_seed(3), cache)
            for cache in (True, False)
        ]
        assert drawn[0].shape == (4, length)
        assert torch.equal(drawn[0], drawn[1])


def test_the_teacher_continues_each_prompt_and_reads_at_most_the_window():
    windows = torch.randint(0, 5, (7, 9))  # T + 1 = 9
    seen = []
    model = Always(3)
    model.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[1]))
    written = generate_windows(model, windows, 4, 1.0, seed=0, batch_size=3, precision=FP32)
    assert written.shape == (7, 9) and torch.equal(written[:, :4], windows[:, :4])
    assert (written[:, 4:] == 3).all() and max(seen) == 8


def test_generation_is_a_function_of_the_seed():
    gpt = GPT(11, image_size=16, layers=1, heads=1, width=8).eval()
    windows = torch.randint(0, 11, (6, 17))
    args = dict(prompt=8, temperature=1.0, batch_size=4, precision=FP32)
    first = generate_windows(gpt, windows, seed=1, **args)
    assert torch.equal(first, generate_windows(gpt, windows, seed=1, **args))
    assert not torch.equal(first, generate_windows(gpt, windows, seed=2, **args))


def test_kd_train_generate_distills_on_text_the_teacher_wrote(kd):
    result = kd("train", *TINY_LM, "soft_labels.mode=generate", "baseline=false")
    assert result.returncode == 0, result.stderr
    report = result.report()
    assert report["soft_labels"]["mode"] == "generate"
    written = np.load(result.cwd / report["soft_labels"]["path"] / "windows.npy")
    assert written.shape[1] == 33 and written.dtype == np.int32, "windows of block_size + 1"
    assert "the teacher wrote" in result.stderr and report["student"]["perplexity"] > 1


def test_generate_needs_a_language_model(kd):
    result = kd("train", "soft_labels.mode=generate")
    assert result.returncode == 2 and "add task=lm" in result.stderr
