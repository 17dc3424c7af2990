"""`kd train task=instruct` through the real command: the four stages on instruction data,
the answers in the report, sequence-level and on-policy distillation on prompts."""

from __future__ import annotations

import json

from kd_settings import TINY_INSTRUCT


def test_kd_train_task_instruct_reports_answers_judged_by_exact_match(kd):
    result = kd("train", *TINY_INSTRUCT, "dataset.test_fraction=0.1")
    assert result.returncode == 0, result.stderr
    report = result.report()
    assert report["metric"] == "exact_match" and report["metric_label"] == "exact match"
    for role in ("teacher", "student", "baseline"):
        figures = report[role]
        assert 0 <= figures["exact_match"] <= 1 and 0 <= figures["rouge_l"] <= 1
        assert figures["perplexity"] > 1 and figures["generation_nll"] >= 0
        assert "val_exact_match" in figures
    assert report["kd_gain"] == report["student"]["exact_match"] - report["baseline"]["exact_match"]
    assert report["kd_gain_images"]["total"] == 30, "paired by the 30 test prompts"
    answers = report["answers"]
    assert len(answers) == 5 and {"prompt", "reference", "teacher", "student", "baseline"} <= set(
        answers[0]
    )
    run = result.runs()[0]
    assert "## Answers" in (run / "report.md").read_text()
    assert "test prompts" in result.stdout


def test_the_teacher_writes_answers_and_the_student_its_own_on_prompts(kd):
    generated = kd("train", *TINY_INSTRUCT, "soft_labels.mode=generate", "baseline=false")
    assert generated.returncode == 0, generated.stderr
    assert (
        json.loads((generated.runs()[0] / "report.json").read_text())["soft_labels"]["mode"]
        == "generate"
    )
    on_policy = kd(
        "train",
        *TINY_INSTRUCT,
        "soft_labels.mode=online",  # the student writes: no store holds its answers
        "loss.lmbda=1.0",
        "baseline=false",
        cwd=generated.cwd / "p",
    )
    assert on_policy.returncode == 0, on_policy.stderr
    assert on_policy.report()["soft_labels"]["on_policy"] == 1.0
