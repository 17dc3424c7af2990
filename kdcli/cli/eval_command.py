"""`kd eval CHECKPOINT [dataset=...] [eval.batch_size=...] [device=...] [--json]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kdcli.errors import UserError

if TYPE_CHECKING:  # torch is imported when a command needs it
    from torch import nn

SPLITS = {"test": "test", "val": "validation"}


def add_eval_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="evaluate a saved model (student.pt, a cache entry's model.pt) without training",
        description="Top-1, top-5, NLL, ECE, per-class accuracy and the confusion matrix of a "
        "kdcli model file on the test (and validation) split: by default on the dataset it "
        "was trained on, or on another with the same classes (dataset=..., dataset.root=...).",
    )
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dataset=..., dataset.<key>=..., "
        "eval.batch_size=..., device=..."
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args: argparse.Namespace) -> int:
    from kdcli.config.device import resolve_device
    from kdcli.config.eval_config import build_from_checkpoint, eval_config, load_dataset
    from kdcli.pipeline.eval_checkpoint import check_fits, evaluate_model, model_info, read_model
    from kdcli.pipeline.export import FromNormalised, load_torchscript

    path = args.checkpoint.expanduser()
    for override in args.overrides:
        if "=" not in override:
            raise UserError(f"kd eval {override}: expected KEY=VALUE, e.g. dataset=cifar10.")
    exported = _exported(path)
    if exported is not None:  # a `kd export --format torchscript` file and its description
        trained = {"name": exported["dataset"], "num_classes": exported["classes"],
                   "channels": exported["input"]["shape"][1]}  # fmt: skip
        cfg = eval_config(path, args.overrides, exported["dataset"], exported["source_run"])
    else:
        file = read_model(path)
        info = model_info(file)
        trained = {"name": info.name, "num_classes": info.num_classes, "channels": info.channels}
        cfg = eval_config(path, args.overrides, info.name)
    device = resolve_device(cfg.device)
    data = load_dataset(cfg, device)
    check_fits(path, trained, data)
    model: nn.Module
    if exported is not None:
        print(TORCHSCRIPT_NOTE.format(path=path), file=sys.stderr)
        norm = exported["normalisation"]
        model = FromNormalised(load_torchscript(path), norm["mean"], norm["std"])
    else:
        model = build_from_checkpoint(file, data.info)
    batch_size = 256 if cfg.eval.batch_size == "auto" else int(cfg.eval.batch_size)
    name = "exported TorchScript" if exported is not None else None
    result = evaluate_model(path, model, data, batch_size, device, name)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        Console().print(_table(result))
    return 0


TORCHSCRIPT_NOTE = (
    "kd: note: {path} is TorchScript, a program that runs when it is loaded; evaluate only "
    "TorchScript files you trust (kdcli model files and safetensors files hold data alone)."
)


def _exported(path: Path) -> dict[str, Any] | None:
    """The description `kd export` wrote beside a TorchScript file at `path`, if it is one
    (a TorchScript file without it is refused: kdcli cannot tell what it expects)."""
    from kdcli.store.plain import plain_data, read_json

    description = path.with_name(path.name + ".json")
    if not description.is_file():
        if _torchscript(path):
            raise UserError(
                f"checkpoint={path} is TorchScript, a program rather than a model file, without "
                f"the {description.name} that kd export writes beside one; kd eval runs only "
                "TorchScript files kd export wrote. Give a kdcli model file (student.pt) or a "
                "safetensors file instead."
            )
        return None
    facts = plain_data(read_json(description, "Remove it or export again."), str(description))
    if not isinstance(facts, dict) or facts.get("format") != "torchscript":
        return None
    try:
        shape, norm = facts["input"]["shape"], facts["normalisation"]
        checked = [facts["dataset"], facts["source_run"], norm["mean"], norm["std"]]
        kinds = [str, str, list, list]
        if len(shape) != 4 or not all(map(isinstance, checked, kinds)):
            raise TypeError
        int(facts["classes"]), int(shape[1])
    except (KeyError, TypeError, ValueError):
        raise UserError(
            f"{description} is not the description kd export writes; export again."
        ) from None
    return facts


def _torchscript(path: Path) -> bool:
    """Whether `path` is a TorchScript archive (a zip holding code/ and constants.pkl)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def _table(result: dict[str, Any]) -> Table:
    title = f"kd eval: {result['checkpoint']} ({result['model']}) on {result['dataset']}"
    table = Table(title=escape(title))  # a path may hold [brackets], which are not markup
    splits = [s for s in SPLITS if s in result]
    items = "tokens" if "tokens" in result[splits[0]] else "images"
    table.add_column("")
    for split in splits:
        table.add_column(f"{SPLITS[split]} ({result[split][items]} {items})", justify="right")
    rows = [("exact match", "exact_match"), ("ROUGE-L", "rouge_l"), ("top-1 accuracy", "top1"),
            ("top-5 accuracy", "top5"), ("NLL", "nll"), ("ECE", "ece"),
            ("perplexity", "perplexity"), ("bits per character", "bpc")]  # fmt: skip
    for label, key in rows:
        if key in result[splits[0]]:
            percent = key in ("exact_match", "rouge_l", "top1", "top5", "ece")
            cells = [f"{100 * result[s][key]:.2f}%" if percent else f"{result[s][key]:.4f}"
                     for s in splits]  # fmt: skip
            table.add_row(label, *cells)
    if items == "tokens":
        return table
    worst = min(range(len(result["test"]["per_class_top1"])),
                key=lambda c: result["test"]["per_class_top1"][c])  # fmt: skip
    table.caption = (
        f"weakest class on the test split: {worst} "
        f"({100 * result['test']['per_class_top1'][worst]:.1f}%); --json gives every class "
        "and the confusion matrix"
    )
    return table
