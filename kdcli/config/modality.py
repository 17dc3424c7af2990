"""What each part of a run reads, text or images, and the pre-flight check that they agree.

What a config reads is told by what its `_target_` builds, in one table: the language models
(kdcli/models/lm/: the built-in GPT and Hugging Face causal LMs), the text corpora
(kdcli/data/text.py) and the lm task read text; every other model, dataset and task reads
images. No config says it a second time.
"""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig

from kdcli.config.endpoint import model_node
from kdcli.errors import UserError

TEXT_TARGETS = (
    "kdcli.models.lm.",
    "kdcli.data.text.",
    "kdcli.data.instruct.",
    "kdcli.data.drills.",
    "kdcli.tasks.lm.",
    "kdcli.tasks.instruct.",
)
INSTRUCTION_DATA = ("kdcli.data.instruct.", "kdcli.data.drills.")
READS = {"text": "text", "image": "images"}
TASKS = {
    "text": "task=lm trains language models on text",
    "image": "task=classify classifies images",
}
# what train.yaml (images) and task=lm (text) pick, shown as examples
EXAMPLES = {
    "text": {"dataset": "shakespeare", "teacher": "gpt_small", "student": "gpt_tiny"},
    "image": {"dataset": "digits", "teacher": "resnet8x4", "student": "smallcnn"},
}


def modality(node: DictConfig) -> str:
    """ "text" or "image": what the model, dataset or task that `node` builds reads."""
    target = str(node.get("_target_", ""))
    return "text" if target.startswith(TEXT_TARGETS) else "image"


def check_modalities(cfg: DictConfig, choices: Mapping[str, str | None]) -> None:
    """The dataset, the teacher and the student read what the task does; `choices` are the
    options picked for the config groups (Hydra's runtime choices), to name them."""
    task = modality(cfg.task)
    _check_instruction_data(cfg, choices)
    teacher = model_node(cfg, "teacher")
    parts = {"dataset": cfg.dataset, "teacher": teacher, "student": cfg.student.model}
    for group, node in parts.items():
        reads = modality(node)
        if reads == task:
            continue
        other = ", or task=lm for text" if reads == "text" else ", or task=classify for images"
        raise UserError(
            f"{group}={choices.get(group)} reads {READS[reads]}, but {TASKS[task]}: pick a "
            f"{group} that reads {READS[task]}, e.g. {group}={EXAMPLES[task][group]} "
            f"(`kd list {group}`){other if group == 'dataset' else ''}."
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
