"""The run's objects (kdcli.pipeline.objects.Objects), each built once from the config and
checked as it is built, before any training: the dataset (its files), the loss, the teacher,
student and baseline models (the layers a feature loss taps, and their shapes), and each
stage's optimizer and scheduler."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from kdcli.config.build import build_model, instantiate_config, lora_settings, training_recipe
from kdcli.config.checks import flat_keys
from kdcli.config.endpoint import check_endpoint
from kdcli.config.from_files import model_record
from kdcli.config.tokenizers import paired_sources
from kdcli.data import Dataset, DatasetInfo, DataSource, InMemoryDataset
from kdcli.engine.ranks import launched_by_torchrun
from kdcli.engine.state import Built, seed_everything
from kdcli.errors import UserError, did_you_mean
from kdcli.knowledge.format import stored_topk
from kdcli.knowledge.teacher import build_feature_loss, example_batch
from kdcli.losses import DistillationLoss
from kdcli.models.lm.endpoint import EndpointLM
from kdcli.models.lm.hf import check_shared_tokenizer
from kdcli.models.lora import adaptable_layers, short_names, target_problem
from kdcli.pipeline.objects import Objects
from kdcli.pipeline.tokenizers import data_tokenizer, teacher_tokenizer
from kdcli.store.checkpoint import load_model

log = logging.getLogger(__name__)


# (the dataset's settings, device) -> its data, decoded once per process: the points of a
# `-m` sweep (one process) that share `dataset.*` share it (in-memory splits, never changed)
LOADED: dict[tuple[str, str], InMemoryDataset] = {}


def loaded(source: DataSource, cfg: DictConfig, device: torch.device) -> Dataset:
    """`source`'s data on `device`, decoded once per process for in-memory datasets."""
    settings = json.dumps(OmegaConf.to_container(cfg.dataset, resolve=True), sort_keys=True)
    key = (settings, str(device))
    if key in LOADED:
        return LOADED[key]
    data = source.load().to(device)
    if type(data) is InMemoryDataset:  # (text and instruction data hold more state)
        LOADED.clear()  # one dataset kept: a sweep over datasets holds one at a time
        LOADED[key] = data
    return data


def build_seeded(cfg: DictConfig, role: str, info: DatasetInfo) -> Built:
    """`cfg[role].model`, built right after seeding every RNG with `cfg.seed`."""
    seed_everything(cfg.seed)
    module = build_model(cfg, role, info)
    return Built(module, torch.get_rng_state(), model_record(cfg, role))


def build(cfg: DictConfig, device: torch.device) -> Objects:
    """Load the data and build the loss and both models (in the order, and from the seeds,
    that the stages used to build them in, so results do not change)."""
    source: DataSource = instantiate_config(cfg.dataset, "dataset")
    source.check()
    source, teacher_source = paired_sources(source, cfg)  # two tokenizers: the text read twice
    data = loaded(source, cfg, device) if teacher_source is None else source.load().to(device)
    teacher_data = None if teacher_source is None else teacher_source.load().to(device)
    teacher = build_seeded(cfg, "teacher", (teacher_data or data).info)
    if isinstance(teacher.module, EndpointLM):  # the server, before any work
        k = max(stored_topk(cfg.soft_labels.topk, data.info.num_classes) or 0, 1)
        check_endpoint(cfg, teacher.module, data, max(k, teacher.module.logprobs))
    if cfg.teacher.checkpoint:  # loaded here, so that a checkpoint that does not fit is caught
        path = Path(cfg.teacher.checkpoint).expanduser()
        described = f"{cfg.teacher.name} on {data.info.describe()}"
        load_model(teacher.module, path, "teacher.checkpoint", described)
    loss_fn: DistillationLoss = instantiate_config(cfg.loss, "loss")
    student = build_seeded(cfg, "student", data.info)
    check_lora_layers(cfg, student.module)
    models = {"teacher": teacher.module, "student": student.module}
    check_model_tokenizers(cfg, models)
    student.module.to(device)
    if loss_fn.uses_features:
        check_layers(cfg, loss_fn, models)
        # sizes the loss's adapters (their init draws from the student's RNG stream)
        build_feature_loss(loss_fn, student.module, teacher.module.to(device), example_batch(data))
        student.rng = torch.get_rng_state()
    training = {role: training_recipe(cfg[role], role) for role in ("teacher", "student")}
    # the student and its baseline train under distributed.strategy; the teacher under DDP
    training["student"] = replace(training["student"], strategy=student_strategy(cfg, loss_fn))
    return Objects(
        data,
        loss_fn,
        teacher,
        student,
        lambda: build_seeded(cfg, "student", data.info),
        training,
        instantiate_config(cfg.logger, "logger"),
        instantiate_config(cfg.compress, "compress"),
        instantiate_config(cfg.task, "task"),
        teacher_data,
    )


def check_model_tokenizers(cfg: DictConfig, models: dict[str, nn.Module]) -> None:
    """Hugging Face models read the ids of the tokenizer their side of the data is read with:
    the student `dataset.tokenizer`'s, the teacher `teacher.tokenizer`'s when that is set."""
    own = teacher_tokenizer(cfg)
    if own is None:
        check_shared_tokenizer(models, cfg.dataset.get("tokenizer"))
        return
    check_shared_tokenizer({"student": models["student"]}, cfg.dataset.get("tokenizer"))
    check_shared_tokenizer({"teacher": models["teacher"]}, data_tokenizer(own), "teacher.tokenizer")


def check_layers(cfg: DictConfig, loss: Any, models: dict[str, Any]) -> None:
    """The layer paths a feature loss names exist in the student and the teacher."""
    for role, paths in (("student", loss.student_layers), ("teacher", loss.teacher_layers)):
        names = [name for name, _ in models[role].named_modules() if name]
        for path in paths:
            if path not in names:
                raise UserError(
                    f"{_layer_key(cfg.loss, role, path)}={path!r}: the {role} "
                    f"({cfg[role].name}) has no layer '{path}'.{did_you_mean(path, names)} "
                    f"`kd list {role} --layers {cfg[role].name}` shows the layers that can be "
                    "tapped."
                )


def check_lora_layers(cfg: DictConfig, student: nn.Module) -> None:
    """The layers `student.lora.target_modules` names exist in the student and LoRA can adapt
    them (the baseline is built from the same config: the same layers)."""
    lora = lora_settings(cfg.student)
    if lora is None:
        return
    problem = target_problem(student, lora.targets)
    if problem is not None:
        names = short_names(adaptable_layers(student))
        wrong = next((t for t in lora.targets if t not in names), "")
        raise UserError(
            f"student.lora.target_modules={list(lora.targets)}: in the student "
            f"({cfg.student.name}), {problem}.{did_you_mean(wrong, names)} The layers it can "
            f"adapt: {', '.join(names) or 'none'} (a name adapts every layer whose path ends "
            "with it)."
        )


def _layer_key(loss: DictConfig, role: str, path: str) -> str:
    """The config key that names `path` for `role` (e.g. loss.terms.fitnet.student_layer)."""
    for key in flat_keys(loss, "loss."):
        if not key.rsplit(".", 1)[-1].startswith(f"{role}_layer"):
            continue
        value = OmegaConf.select(loss, key.removeprefix("loss."))
        if value == path or (not isinstance(value, str) and path in list(value or [])):
            return key
    return f"loss.{role}_layers"


def student_strategy(cfg: DictConfig, loss_fn: DistillationLoss) -> str:
    """`distributed.strategy` (its value checked by values.py), once what FSDP does not train
    is refused: a feature loss (FSDP's units do not expose the student's layers whole), the
    student writing its own text (on-policy: its generation is not sharded), LoRA,
    torch.compile and fp16 (its loss scaler's overflow check would be each rank's own)."""
    strategy = str(OmegaConf.select(cfg, "distributed.strategy", default="ddp"))
    if strategy != "fsdp":
        return strategy
    refused = {
        "the loss taps the student's layers (a feature loss)": loss_fn.uses_features,
        "the student writes its own text (loss.lmbda)": loss_fn.on_policy,
        "student.lora is set": bool(cfg.student.get("lora")),
        "compile=true": bool(cfg.compile),
        "precision=fp16": cfg.precision == "fp16",
    }
    for what, applies in refused.items():
        if applies:
            raise UserError(
                f"distributed.strategy=fsdp does not train this run: {what}. Use "
                "distributed.strategy=ddp (the default), or change that setting "
                "(docs/clusters-and-sweeps.md#fsdp)."
            )
    if not launched_by_torchrun():
        log.warning(
            "distributed.strategy=fsdp in one process: nothing to shard the student over, so it "
            "trains whole; start it with `torchrun --nproc_per_node=N -m kdcli train ...`"
        )
    return strategy
