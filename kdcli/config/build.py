"""The one place that instantiates `_target_` configs; every error names the config key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from kdcli.config.endpoint import model_node
from kdcli.errors import UserError, first_line

if TYPE_CHECKING:
    from kdcli.engine.loop import Recipe
    from kdcli.models.lora import Lora


def instantiate_config(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """Instantiate a config node, reporting a bad argument as the key's fault."""
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        cause = error.__cause__ or error
        raise UserError(f"{key} could not be built: {first_line(cause)}") from None


def build_model(cfg: DictConfig, role: str, info: Any) -> Any:
    """`cfg[role].model` for a dataset's facts (configs never hard-code them); errors name the
    role and the model."""
    try:
        node = model_node(cfg, role)
        return instantiate_config(node, f"{role}.model", **info.model_kwargs())
    except UserError as error:
        raise UserError(f"{role}={cfg[role].name}: {error}") from None


def training_recipe(stage: DictConfig, role: str) -> Recipe:
    """How the training loop trains a stage (`teacher`, `student`), from its config: its
    epochs, the optimizer and scheduler factories (partial `_target_` configs), the gradient
    clipping norm (`clip_grad_norm`, null: none), the batches per optimizer step
    (`accumulate`) and LoRA (`lora`, null: none); a stage without the last two keys (the
    teacher) has neither. The pipeline adds the model's precision."""
    from kdcli.engine.loop import Recipe

    clip = stage.get("clip_grad_norm")
    return Recipe(
        epochs=int(stage.epochs),
        optimizer=instantiate_config(stage.optimizer, f"{role}.optimizer"),
        scheduler=instantiate_config(stage.scheduler, f"{role}.scheduler"),
        clip_grad_norm=None if clip is None else float(clip),
        accumulate=int(stage.get("accumulate") or 1),
        lora=lora_settings(stage),
    )


def lora_settings(stage: DictConfig) -> Lora | None:
    """A stage's `lora` (null or absent: None), its defaults filled in."""
    from kdcli.models.lora import Lora

    node = stage.get("lora")
    return Lora.from_settings(
        OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    )
