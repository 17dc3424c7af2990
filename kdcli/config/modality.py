"""What each part of a run reads, text or images, and the pre-flight check that they agree.

What a config reads is told by what its `_target_` builds, in one table: the language models
(kdcli/models/lm/: the built-in GPT and Hugging Face causal LMs), the text corpora
(kdcli/data/text.py), the instruction data (instruct.py, drills.py) and the lm and instruct
tasks read text (token windows; task=instruct also wants prompts); the text classifiers
(kdcli/models/text/) and the labelled texts (kdcli/data/text_classify.py, reviews.py) read
labelled text; every other model, dataset and task reads images. The classify task reads images
or labelled text, the lm task text; the teacher and the student read what the dataset holds. No
config says it a second time.
"""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig

from kdcli.config.endpoint import model_node
from kdcli.errors import UserError

# `_target_` prefix -> what it reads (kdcli.data.base.MODALITIES); anything else reads images
TARGETS = {
    "kdcli.models.lm.": "text",
    "kdcli.data.text.": "text",
    "kdcli.data.instruct.": "text",
    "kdcli.data.drills.": "text",
    "kdcli.tasks.lm.": "text",
    "kdcli.tasks.instruct.": "text",
    "kdcli.models.text.": "labelled_text",
    "kdcli.data.text_classify.": "labelled_text",
    "kdcli.data.reviews.": "labelled_text",
}
INSTRUCTION_DATA = ("kdcli.data.instruct.", "kdcli.data.drills.")
READS = {"text": "text", "image": "images", "labelled_text": "labelled texts"}
# what the task's own modality (modality(cfg.task)) lets the dataset hold
TASK_READS = {"text": ("text",), "image": ("image", "labelled_text")}
TASKS = {
    "text": "task=lm and task=instruct train language models on text",
    "image": "task=classify classifies images or labelled texts",
}
# a dataset and models that read each modality, shown as examples
EXAMPLES = {
    "text": {"dataset": "shakespeare", "teacher": "gpt_small", "student": "gpt_tiny"},
    "image": {"dataset": "digits", "teacher": "resnet8x4", "student": "smallcnn"},
    "labelled_text": {
        "dataset": "reviews",
        "teacher": "text_transformer",
        "student": "text_transformer_tiny",
    },
}


def modality(node: DictConfig) -> str:
    """ "text", "labelled_text" or "image": what the model, dataset or task that `node`
    builds reads."""
    target = str(node.get("_target_", ""))
    return next((kind for prefix, kind in TARGETS.items() if target.startswith(prefix)), "image")


def check_modalities(cfg: DictConfig, choices: Mapping[str, str | None]) -> None:
    """The task reads what the dataset holds, and the teacher and the student read that too;
    `choices` are the options picked for the config groups (Hydra's runtime choices), to name
    them."""
    task, holds = modality(cfg.task), modality(cfg.dataset)
    _check_instruction_data(cfg, choices)
    if holds not in TASK_READS[task]:
        other = "task=lm for text" if holds == "text" else "task=classify for " + READS[holds]
        raise UserError(
            f"dataset={choices.get('dataset')} reads {READS[holds]}, but {TASKS[task]}: pick a "
            f"dataset that reads {READS[TASK_READS[task][0]]}, e.g. "
            f"dataset={EXAMPLES[task]['dataset']} (`kd list dataset`), or {other}."
        )
    for role in ("teacher", "student"):
        reads = modality(model_node(cfg, role))
        if reads == holds:
            continue
        against = f"dataset={choices.get('dataset')} holds {READS[holds]}"
        if (
            reads not in TASK_READS[task]
        ):  # a causal LM under task=classify, an image model under lm
            against = TASKS[task]
        raise UserError(
            f"{role}={choices.get(role)} reads {READS[reads]}, but {against}: pick a {role} "
            f"that reads {READS[holds]}, e.g. {role}={EXAMPLES[holds][role]} (`kd list {role}`)."
        )


def _check_instruction_data(cfg: DictConfig, choices: Mapping[str, str | None]) -> None:
    """task=instruct learns answers to prompts: its data must have prompts."""
    instruct = str(cfg.task.get("_target_", "")).startswith("kdcli.tasks.instruct.")
    if instruct and not str(cfg.dataset.get("_target_", "")).startswith(INSTRUCTION_DATA):
        raise UserError(
            f"dataset={choices.get('dataset')} holds no prompts, but task=instruct learns "
            "answers to prompts: pick a dataset of prompts, dataset=drills (bundled) or "
            "dataset=instruct dataset.path=FILE.jsonl, or task=lm for plain text."
        )
