"""Every cache key, in one place. A key is a fingerprint of `KEY_VERSION`, the artifact and the
named settings that determine it, so that runs and sweep points with the same settings share
the artifact and runs with other settings never do:

    teacher      its model and training settings, dataset, seed, precision, its tokenizer
                 (`teacher.tokenizer`, when not the student's: by its files' contents)
    baseline     the student's model and training settings (with accumulate and LoRA: the
                 baseline is trained as the student is), dataset, seed, precision, the
                 teacher's tokenizer (with two, text windows are cut by characters; no other
                 teacher setting, no loss settings: a sweep over the loss shares it)
    checkpoint   (a teacher loaded from teacher.checkpoint) its model, the file's contents
    endpoint     (a teacher behind a server) its model id there, the data's tokenizer's hash
    soft labels  the teacher's key, tokenizer and precision, dataset, mode, dtype, top-k,
                 tapped layers, encoding; `views`: the student's epochs, batch size and seed
                 (the views it draws); `generate`: how the teacher writes, and the seed
    student      (its resumable training state) its model and training settings, loss,
                 dataset, seed, soft_labels settings, the teacher's key and tokenizer,
                 precision
    evaluation   (a cached teacher's or baseline's outputs and costs) the model's key and its
                 weights' SHA-256, the dataset (its evaluation splits: val_fraction,
                 split_seed, files), the task, eval.batch_size, eval.latency_runs, the
                 device that predicts, the machine that times latency, the torch version

A dataset enters by its settings (`dataset.*`), files by their path: a dataset file changed
in place keeps its keys (`kd cache rm` drops what was built from it). tests/pipeline/test_keys.py
states, setting by setting, which keys each one changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from kdcli.engine.precision import Precision
from kdcli.knowledge.format import SOFT_LABEL_FORMAT, stored_topk
from kdcli.models.lora import Lora
from kdcli.pipeline.common import to_container
from kdcli.pipeline.tokenizers import tokenizer_identity
from kdcli.store.cache import file_sha256, fingerprint

KEY_VERSION = 2
"""Bump when what a key holds changes: every cache entry is then built anew, once.
1 (kdcli 0.1): positional parts, with settings left out at their defaults (fp32, no gradient
clipping, no on-policy share, no tapped layers) so that keys made before they existed stayed
what they were. 2: named settings, every one always present."""


def _key(artifact: str, **settings: Any) -> str:
    return fingerprint(KEY_VERSION, artifact, settings)


def training_settings(stage_cfg: DictConfig) -> dict[str, Any]:
    """What, besides model and data, determines a trained model."""
    keys = ("epochs", "batch_size", "optimizer", "scheduler", "clip_grad_norm")
    return {k: to_container(stage_cfg.get(k)) for k in keys}


def student_training(cfg: DictConfig) -> dict[str, Any]:
    """The student's training settings, which its baseline shares: with the batches per
    optimizer step and LoRA (with its defaults filled in, so that spelling one out keeps the
    key; the teacher has neither)."""
    adapters = Lora.from_settings(to_container(cfg.student.get("lora")))
    return {
        **training_settings(cfg.student),
        "accumulate": int(cfg.student.accumulate),
        "lora": asdict(adapters) if adapters is not None else None,
    }


def _trained(artifact: str, role: str, cfg: DictConfig, precision: Precision) -> str:
    training = student_training(cfg) if role == "student" else training_settings(cfg[role])
    return _key(
        artifact,
        model=to_container(cfg[role].model),
        training=training,
        dataset=to_container(cfg.dataset),
        seed=cfg.seed,
        precision=precision.name,
        # with two tokenizers text is cut into windows of characters, the student's too
        teacher_tokenizer=tokenizer_identity(cfg),
    )


def teacher_key(cfg: DictConfig, precision: Precision) -> str:
    """A teacher trained with cross-entropy, running in `precision`."""
    return _trained("teacher", "teacher", cfg, precision)


def baseline_key(cfg: DictConfig, precision: Precision) -> str:
    """The baseline: the student trained with plain cross-entropy, in `precision`."""
    return _trained("baseline", "student", cfg, precision)


def checkpoint_key(cfg: DictConfig) -> str:
    """A teacher loaded from `teacher.checkpoint`: by the file's contents, not its path."""
    weights = file_sha256(Path(cfg.teacher.checkpoint).expanduser())
    return _key("checkpoint", model=to_container(cfg.teacher.model), weights=weights)


def endpoint_key(cfg: DictConfig, tokenizer: str) -> str:
    """A teacher behind an inference server (`teacher=endpoint`): the model id it serves and the
    hash of the data's tokenizer, which the server was checked to share; not the URL, so the
    same model served elsewhere keeps its soft labels."""
    return _key("endpoint", model=str(cfg.teacher.model), tokenizer=tokenizer)


def soft_labels_key(
    cfg: DictConfig,
    *,
    teacher: str,
    mode: str,
    num_classes: int,
    precision: Precision,
    layers: Sequence[str] = (),
) -> str:
    """The stored outputs of the teacher with key `teacher`, computed in `precision`, in
    `mode` (resolved: static, views or generate), with `layers` tapped."""
    views = None
    if mode == "views":  # the exact views the student draws
        views = {
            "epochs": cfg.student.epochs,
            "batch_size": cfg.student.batch_size,
            "seed": cfg.seed,
        }
    generate = (
        {**to_container(cfg.soft_labels.generate), "seed": cfg.seed} if mode == "generate" else None
    )
    return _key(
        "soft_labels",
        encoding=SOFT_LABEL_FORMAT,
        teacher=teacher,
        teacher_tokenizer=tokenizer_identity(cfg),
        precision=precision.name,
        dataset=to_container(cfg.dataset),
        mode=mode,
        dtype=str(cfg.soft_labels.dtype),
        topk=stored_topk(cfg.soft_labels.topk, num_classes),
        layers=list(layers),
        views=views,
        generate=generate,
    )


def student_key(cfg: DictConfig, *, teacher: str, precision: Precision) -> str:
    """The distilled student's in-progress training state, learning from the teacher with key
    `teacher`, in `precision`."""
    return _key(
        "student",
        model=to_container(cfg.student.model),
        training=student_training(cfg),
        loss=to_container(cfg.loss),
        dataset=to_container(cfg.dataset),
        seed=cfg.seed,
        soft_labels=to_container(cfg.soft_labels),
        teacher=teacher,
        teacher_tokenizer=tokenizer_identity(cfg),
        precision=precision.name,
    )


def evaluation_key(cfg: DictConfig, *, model: str, weights: str, device: str, machine: str) -> str:
    """A cached model's stored evaluation (its logits on the evaluation splits, parameters,
    FLOPs, latency): the model with key `model` whose weights hash to `weights`, predicting on
    `device` (e.g. "cuda NVIDIA H200") and timed on `machine` (kdcli.pipeline.stored_eval)."""
    return _key(
        "evaluation",
        model=model,
        weights=weights,
        dataset=to_container(cfg.dataset),
        task=to_container(cfg.task),
        batch_size=str(cfg.eval.batch_size),
        latency_runs=int(cfg.eval.latency_runs),
        device=device,
        machine=machine,
    )
