"""`kd list [group]`: what each config group offers, with the default marked.

For the model groups (teacher, student, model) it also measures the models at a dataset's size:

    kd list teacher --details [--json] [OPTION ...] [dataset=NAME] [key=value ...]
    kd list teacher --layers resnet32x4 [dataset=NAME]

`--details` gives every model's parameters, FLOPs per image and CPU latency (batch 1);
`--layers` the module paths a feature loss can tap, with their output shapes.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kdcli.config.groups import defaults, description, group_options, groups
from kdcli.errors import UserError, did_you_mean

if TYPE_CHECKING:  # `kd list` alone imports neither torch nor the models
    from omegaconf import DictConfig

    from kdcli.data import DatasetInfo

MODEL_GROUPS = ("teacher", "student", "model")


def _check_group(group: str) -> None:
    known = groups()
    if group not in known:
        hint = did_you_mean(group, known, cutoff=0.6)
        raise UserError(f"no config group '{group}'.{hint} Groups: {', '.join(known)}.")


def show(group: str | None = None) -> int:
    """The options of every config group, or of one, with descriptions."""
    known = groups()
    if group is not None:
        _check_group(group)
    chosen = defaults()
    table = Table(title="kd train config groups (pick one with group=option)")
    for column in ("group", "option", "description"):
        table.add_column(column)
    for name in [group] if group else known:
        for option in group_options(name):
            mark = " (default)" if option in chosen.get(name, []) else ""
            table.add_row(name, option + mark, Text(description(name, option)))
        table.add_section()
    Console().print(table)
    return 0


# ---- models measured at a dataset's size ----------------------------------------------------


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose
    from hydra.errors import HydraException

    try:
        return compose("train", overrides=overrides)
    except HydraException as error:
        raise UserError(f"{' '.join(overrides)}: {str(error).strip().splitlines()[0]}") from None


def _build(cfg: DictConfig, role: str, info: DatasetInfo):
    """The model of `cfg[role]` on the CPU; build errors name the option."""
    from kdcli.config.build import build_model

    return build_model(cfg, role, info)


def _model_configs(
    group: str, options: list[str], overrides: list[str]
) -> tuple[DictConfig, DatasetInfo, list[tuple[str, DictConfig]]]:
    """The composed config, the dataset's facts and (option, composed config) for the options
    (all of the group's if none).

    Options that need more settings to build (`torchvision` needs `teacher.name`, `hf`
    `teacher.path`), and models of another modality than the dataset's (text models on
    digits), are left out when the whole group is listed.
    """
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from kdcli.config.build import instantiate_config
    from kdcli.config.checks import check_group_choices, parse_overrides
    from kdcli.config.paths import config_dir

    role = _role(group)
    chosen = options or group_options(group)
    unknown = [o for o in chosen if o not in group_options(group)]
    if unknown:
        raise UserError(
            f"no model {', '.join(unknown)} in config group '{group}' (`kd list {group}`)."
        )
    check_group_choices(parse_overrides(overrides))
    configs = []
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="list"):
        base = _compose(overrides)
        info = instantiate_config(base.dataset, "dataset").info
        for option in chosen:
            cfg = _compose([*overrides, f"{role}={option}"])
            if _modality(cfg, role) != info.modality:
                if not options:
                    continue
                raise UserError(
                    f"{role}={option} reads {_modality(cfg, role)}, the dataset is "
                    f"{info.modality}: measure it on a dataset it reads (task=lm for text)."
                )
            needs = [k for k in ("name", "path") if OmegaConf.is_missing(cfg[role], k)]
            if needs:
                if not options:
                    continue
                example = "efficientnet_b0" if needs[0] == "name" else "DIR"
                raise UserError(f"{role}={option} needs {role}.{needs[0]}=..., e.g. {example}.")
            configs.append((option, cfg))
    return base, info, configs


def _modality(cfg: DictConfig, role: str) -> str:
    """What a model reads (kdcli/config/modality.py)."""
    from kdcli.config.endpoint import model_node
    from kdcli.config.modality import modality

    return modality(model_node(cfg, role))


def _role(group: str) -> str:
    """The train.yaml key whose config a model group's option is composed into."""
    return "student" if group == "student" else "teacher"


def model_details(group: str, options: list[str], overrides: list[str]) -> list[dict[str, Any]]:
    """Parameters, FLOPs per image and median CPU latency (ms, batch 1) of each model."""
    from kdcli.engine.measure import count_params, cpu_latency_ms, flops_per_image

    base, info, configs = _model_configs(group, options, overrides)
    rows = []
    for option, cfg in configs:  # one model in memory at a time
        model = _build(cfg, _role(group), info)
        rows.append(
            {
                "name": option,
                "params": count_params(model),
                "flops": flops_per_image(model, info),
                "latency_ms": round(cpu_latency_ms(model, info, runs=base.eval.latency_runs), 3),
                "dataset": info.name,
                "input": list(info.example().shape[1:]),
            }
        )
    return rows


def model_layers(group: str, option: str, overrides: list[str]) -> list[dict[str, Any]]:
    """Every module path of one model with its type and output shape (batch 1), in call order.

    A module called more than once (a shared ReLU) shows its last output, the one a
    feature tap would hold.
    """

    from kdcli.models.features import layer_shapes

    _, info, [(_, cfg)] = _model_configs(group, [option], overrides)
    model = _build(cfg, _role(group), info)
    shapes = dict(layer_shapes(model, info.example()))
    modules = dict(model.named_modules())
    return [
        {"path": path, "type": type(modules[path]).__name__, "shape": list(shape)}
        for path, shape in shapes.items()
    ]


def _print_details(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    first = rows[0]
    size = "x".join(str(n) for n in first["input"])
    title = f"models at {first['dataset']} size ({size}), CPU latency at batch 1"
    table = Table(title=Text(title))  # Text: a dataset's name (its folder's) is not markup
    for column in ("model", "params (M)", "FLOPs/image (M)", "CPU latency (ms)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(
            Text(row["name"]),
            f"{row['params'] / 1e6:.2f}",
            f"{row['flops'] / 1e6:,.1f}",
            f"{row['latency_ms']:.2f}",
        )
    Console().print(table)


def _print_layers(option: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=Text(f"{option}: module paths a feature loss can tap (output at batch 1)"))
    for column in ("path", "module", "output shape"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["path"], row["type"], str(tuple(row["shape"])))
    Console().print(table)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kd list",
        description="What each config group offers. For the model groups (teacher, student, "
        "model): --details measures the models, --layers shows one model's tappable layers, "
        "at the dataset's size (dataset=NAME, default: train.yaml's).",
    )
    parser.add_argument(
        "items",
        nargs="*",
        metavar="GROUP [OPTION ...] [key=value ...]",
        help="a config group; with --details, options to limit it to; overrides such as "
        "dataset=cifar100",
    )
    parser.add_argument("--layers", metavar="OPTION", help="module paths and output shapes")
    parser.add_argument(
        "--details", action="store_true", help="params, FLOPs per image, CPU latency"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: list[str]) -> int:
    """`kd list ...`; returns the exit code."""
    args = build_parser().parse_intermixed_args(argv)
    overrides = [item for item in args.items if "=" in item]
    names = [item for item in args.items if "=" not in item]
    group = names[0] if names else None
    options = names[1:]
    if not (args.details or args.layers):
        if options or overrides:
            raise UserError(
                f"{' '.join(options + overrides)}: options and key=value go with --details "
                "or --layers."
            )
        return show(group)
    group = group or "teacher"
    _check_group(group)
    if group not in MODEL_GROUPS:
        raise UserError(f"--details and --layers measure models: use {', '.join(MODEL_GROUPS)}.")
    if args.layers:
        rows = model_layers(group, args.layers, overrides)
    else:
        rows = model_details(group, options, overrides)
    if args.json:
        print(json.dumps(rows, indent=1))
    elif args.layers:
        _print_layers(args.layers, rows)
    else:
        _print_details(rows)
    return 0
