"""Stage 4, evaluation: every model the run produced, with the task's metrics and its cost."""

from __future__ import annotations

import time
from typing import Any, TypedDict

import numpy as np
import torch
from omegaconf import DictConfig

from kdcli.data import Dataset
from kdcli.engine import stats
from kdcli.engine.infer import predict
from kdcli.engine.measure import count_params, cpu_latency_ms, flops_per_image
from kdcli.engine.precision import FP32
from kdcli.pipeline.common import Context, Model, eval_batch_size
from kdcli.pipeline.stored_eval import STORED_ROLES, read_stored, store
from kdcli.store.evaluation import StoredEvaluation
from kdcli.tasks import Answers, Task, teacher_kl
from kdcli.tasks.lm import IGNORE

CPU = torch.device("cpu")
SHOWN = 5  # prompts report.md shows with every model's answer

ModelFigures = dict[str, Any]
"""One model's figures (report.json's `teacher`, `student`, ...; `measure` makes them): name,
the task's metrics (e.g. top1, nll, ece), params, flops, latency_ms, checkpoint_bytes,
checkpoint, source, reused, precision; evaluation_reused (its logits and costs read from the
cache, kdcli/pipeline/stored_eval.py) and evaluation_seconds; sparsity (compressed); agreement
and teacher_kl (all but the teacher); val_<metric> (a validation split); generation_nll
(text)."""


class GainImages(TypedDict):
    """The test items behind the KD gain's p-value."""

    student_only: int  # the student gets right and the baseline wrong
    baseline_only: int
    total: int


class EvaluationSummary(TypedDict, total=False):
    """The run's figures beside each model's (report.json keys): with a baseline, the KD gain's
    95% paired bootstrap interval, exact McNemar p-value and the items behind it; for text,
    the test prompt and each model's continuation of it (`samples`)."""

    kd_gain_ci: list[float]
    kd_gain_p: float
    kd_gain_images: GainImages
    samples: dict[str, str]
    answers: list[dict[str, str]]  # instruction following: prompts, references, answers


def measure(
    model: Model,
    data: Dataset,
    task: Task,
    test_logits: torch.Tensor,
    cfg: DictConfig,
    size_of: ModelFigures | None = None,
    costs: dict[str, float] | None = None,
) -> ModelFigures:
    """The report's figures for one model. `size_of`: the figures of the model it was
    compressed from, whose parameters and FLOPs it keeps (pruning zeroes weights, int8 narrows
    them; neither removes any); its own share of zero weights is then reported too. `costs`:
    its parameters, FLOPs and latency as stored with its cached evaluation."""
    module = model.module
    size = costs or size_of
    figures = {
        "name": model.name,
        **task.metrics(test_logits, data.labels("test")),
        "params": size["params"] if size else count_params(module),
    }
    if model.sparsity is not None:
        figures["sparsity"] = model.sparsity
    latency = costs["latency_ms"] if costs else None
    return {
        **figures,
        "flops": size["flops"] if size else flops_per_image(module, data.info),
        "latency_ms": cpu_latency_ms(module, data.info, cfg.eval.latency_runs)
        if latency is None
        else latency,
        "checkpoint_bytes": model.checkpoint.stat().st_size,
        "checkpoint": str(model.checkpoint),
        "source": model.source,
        "reused": model.source in ("cache", "checkpoint"),
        "precision": model.precision.describe(),  # its forward passes' in training (and
        # the teacher's soft labels); evaluation itself runs in fp32
    }


def eval_splits(data: Dataset) -> list[str]:
    """The splits every model is evaluated on: test, and validation when there is one."""
    return ["test", *(["val"] if "val" in data.splits else [])]


def evaluate_stage(
    ctx: Context,
    models: dict[str, Model],
    known: dict[str, dict[str, torch.Tensor]] | None = None,
    looked_up: dict[str, StoredEvaluation | None] | None = None,
) -> tuple[dict[str, ModelFigures], EvaluationSummary, dict[str, torch.Tensor]]:
    """Stage 4: every model's figures on the test split, with agreement with the teacher and
    KL(teacher || model); the run's summary: the KD gain's interval and p-value (student vs
    baseline on the same test images) and, for text, each model's continuation of one test
    prompt (`samples`); and each model's test logits (for the plots).
    `known`: outputs already computed (role -> split -> logits), e.g. the teacher's;
    `looked_up`: stored evaluations already read from the cache (None: none stored), e.g. the
    teacher's, which are not read again.

    With a validation split (`dataset.val_fraction > 0`) each model's `val_<metric>` is
    reported too, so sweeps can be compared on validation and the test split kept for the end.

    The teacher's and the baseline's outputs and costs are read from the cache when stored
    there by an earlier run, else stored for later runs (kdcli/pipeline/stored_eval.py).
    """
    cfg, data, task = ctx.cfg, ctx.data, ctx.task
    stored = _stored(ctx, models, looked_up or {})
    known = {role: dict(outputs) for role, outputs in (known or {}).items()}
    for role, evaluation in stored.items():
        known[role] = {**evaluation.logits, **known.get(role, {})}
    seconds: dict[str, float] = dict.fromkeys(models, 0.0)
    logits = _outputs(ctx, models, known, seconds)
    results = {}
    for role, m in models.items():
        if role != "compressed":
            started = time.perf_counter()
            costs = stored[role].figures if role in stored else None
            results[role] = measure(
                m, ctx.data_of(role), task, logits[role]["test"], cfg, None, costs
            )
            seconds[role] += time.perf_counter() - started
            results[role]["evaluation_reused"] = role in stored
    if "compressed" in models:
        results["compressed"] = measure(
            models["compressed"], data, task, logits["compressed"]["test"], cfg, results["student"]
        )
    for role in STORED_ROLES:
        if role in models and role not in stored:
            store(ctx, models[role], logits[role], results[role])
    for role, spent in seconds.items():
        results[role]["evaluation_seconds"] = spent
    if "val" in data.splits:
        for role, m in models.items():
            headline = task.headline(m.module, logits[role]["val"], ctx.data_of(role), "val")
            results[role][f"val_{task.metric}"] = headline
    # two tokenizers: the teacher's distributions are over other tokens, so the figures that
    # compare them with the student's, and its judgement of their text, are left out
    shared = ctx.teacher_data is None
    if shared:
        _compare_with_teacher(task, logits, results, data.labels("test"))
    answers = _answers(ctx, task, models)
    for role, written in answers.items():
        results[role].update(written.figures)
    for role in results:  # text: how the teacher judges what each model writes
        if role == "compressed" or not (shared or role == "teacher"):  # (the int8 model runs
            continue  # on the CPU only; its figures say how it compares)
        teacher = models["teacher"].module
        judged = task.generation_nll(models[role].module, teacher, ctx.data_of(role), cfg.seed)
        if judged is not None:
            results[role]["generation_nll"] = judged
    summary: EvaluationSummary = {}
    if "baseline" in logits and answers:
        summary = gain_of(answers["student"].scores, answers["baseline"].scores)
    elif "baseline" in logits:
        summary = gain_figures(task, logits["student"]["test"], logits["baseline"]["test"], data)
    if answers:
        summary["answers"] = side_by_side(answers)
    samples = text_samples(ctx, task, models, cfg.seed)
    if samples:
        summary["samples"] = samples
    return results, summary, {role: split["test"] for role, split in logits.items()}


def _stored(
    ctx: Context, models: dict[str, Model], looked_up: dict[str, StoredEvaluation | None]
) -> dict[str, StoredEvaluation]:
    """The stored evaluations of the run's cached models (role -> evaluation): those
    `looked_up` already, and the others read from the cache."""
    splits = eval_splits(ctx.data)
    found = dict(looked_up)
    for role in STORED_ROLES:
        if role in models and role not in found:
            found[role] = read_stored(ctx, models[role], splits)
    return {role: evaluation for role, evaluation in found.items() if evaluation is not None}


def _outputs(
    ctx: Context,
    models: dict[str, Model],
    known: dict[str, dict[str, torch.Tensor]],
    seconds: dict[str, float],
) -> dict[str, dict[str, torch.Tensor]]:
    """Every model's outputs on every evaluation split (role -> split -> logits), computing
    those not `known` (the time each model's passes take added to `seconds`)."""
    logits: dict[str, dict[str, torch.Tensor]] = {}
    for role, m in models.items():
        started = time.perf_counter()
        logits[role] = dict(known.get(role, {}))
        # an int8 model runs on the CPU only
        data = ctx.data_of(role)
        where, split_data = (CPU, data.to(CPU)) if role == "compressed" else (ctx.device, data)
        for split in eval_splits(data):
            if split not in logits[role]:
                loader = split_data.eval_loader(split, eval_batch_size(ctx, m.module, FP32))
                logits[role][split] = predict(m.module, loader, where).to(ctx.device)
        seconds[role] += time.perf_counter() - started
    return logits


def _compare_with_teacher(
    task: Task,
    logits: dict[str, dict[str, torch.Tensor]],
    results: dict[str, ModelFigures],
    labels: torch.Tensor,
) -> None:
    """Each model's agreement with the teacher and KL(teacher || model) on the test split."""
    for role in results:
        if role != "teacher":
            test, reference = logits[role]["test"], logits["teacher"]["test"]
            results[role]["agreement"] = task.agreement(test, reference, labels)
            flat, flat_reference, flat_labels = task.flatten(test, reference, labels)
            assert flat_reference is not None  # given the teacher's logits, flatten keeps them
            counted = flat_labels != IGNORE  # instruction data: the answers' tokens alone
            if not bool(counted.all()):  # (a copy of the rows only where some do not count)
                flat, flat_reference = flat[counted], flat_reference[counted]
            results[role]["teacher_kl"] = teacher_kl(flat, flat_reference)


def _answers(ctx: Context, task: Task, models: dict[str, Model]) -> dict[str, Answers]:
    """Each model's answers to the test prompts (instruction following; else none), with the
    teacher's NLL of them where it reads their tokens. The int8 model runs on the CPU only,
    so it is left out."""
    answers = {}
    for role, m in models.items():
        shared = ctx.teacher_data is None or role == "teacher"
        teacher = models["teacher"].module if shared else None
        data = ctx.data_of(role)
        written = None if role == "compressed" else task.answers(m.module, teacher, data, "test")
        if written is not None:
            answers[role] = written
    return answers


def side_by_side(answers: dict[str, Answers], shown: int = SHOWN) -> list[dict[str, str]]:
    """The first `shown` test prompts with the reference and every model's answer."""
    first = next(iter(answers.values()))
    rows = []
    for number in range(min(shown, len(first.prompts))):
        row = {"prompt": first.prompts[number], "reference": first.references[number]}
        row.update({role: written.texts[number] for role, written in answers.items()})
        rows.append(row)
    return rows


def gain_of(student: np.ndarray, baseline: np.ndarray) -> EvaluationSummary:
    """The KD gain's interval and p-value from per-item scores, paired (0/1 or in [0, 1])."""
    gain = stats.compare_scores(student, baseline)
    return {
        "kd_gain_ci": list(gain.ci),
        "kd_gain_p": gain.p,
        "kd_gain_images": {
            "student_only": gain.a_only,
            "baseline_only": gain.b_only,
            "total": gain.n,
        },
    }


def text_samples(
    ctx: Context, task: Task, models: dict[str, Model], seed: int
) -> dict[str, str] | None:
    """The test prompt and each model's continuation of it (text tasks), else None. The
    int8 model runs on the CPU only, so it is left out (its figures say how it compares)."""
    samples: dict[str, str] = {}
    for role, model in models.items():
        if role == "compressed":
            continue
        drawn = task.sample(model.module, ctx.data_of(role), seed)
        if drawn is None:
            return None
        samples["prompt"], samples[role] = drawn
    return samples


def gain_figures(
    task: Task, student_logits: torch.Tensor, baseline_logits: torch.Tensor, data: Dataset
) -> EvaluationSummary:
    """The KD gain's 95% paired bootstrap interval and exact McNemar p-value (report keys)."""
    labels = data.labels("test")
    student = task.correct(student_logits, labels).cpu().numpy()
    baseline = task.correct(baseline_logits, labels).cpu().numpy()
    return gain_of(student, baseline)
