"""`kd export RUN_DIR_OR_CHECKPOINT [--format F] [--output DIR] [--model ROLE]`."""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from kdcli.errors import UserError

if TYPE_CHECKING:  # torch is imported when an export runs, not for `kd --help`
    import torch

log = logging.getLogger(__name__)
ROLES = ("student", "teacher", "baseline", "compressed")
VERIFY_IMAGES = 32


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        help="write a trained model as TorchScript, ONNX or safetensors, verified against PyTorch",
        description="The exported model takes raw images (NCHW, float in [0, 1]; TorchScript "
        "also uint8) and normalises them itself. Each file is reloaded and compared with the "
        "PyTorch model on test images before the command returns; a JSON file beside it "
        "describes the input.",
    )
    parser.add_argument("source", type=Path, metavar="RUN_DIR_OR_CHECKPOINT")
    parser.add_argument("--format", default="torchscript", help="torchscript (default), onnx "
                        "or safetensors")  # fmt: skip
    parser.add_argument("--output", type=Path, metavar="DIR", help="default: <run dir>/export")
    parser.add_argument("--model", default="student", help="which model of a run directory: "
                        "student (default), teacher, baseline or compressed")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from kdcli.config.eval_config import build_from_checkpoint
    from kdcli.config.from_files import model_option
    from kdcli.pipeline.eval_checkpoint import model_info
    from kdcli.pipeline.export import FORMATS, description_path, export, missing_package
    from kdcli.store.checkpoint import read_model_file

    if args.format not in FORMATS:
        raise UserError(f"--format {args.format}: kd export writes {', '.join(FORMATS)}.")
    package = missing_package(args.format)
    if package:
        raise UserError(
            f"--format {args.format} needs the {package} package: `pip install kdcli[export]`."
        )
    checkpoint, run_dir = _checkpoint(args.source.expanduser(), args.model)
    file = read_model_file(checkpoint)
    info = model_info(file)
    if info.modality == "text":
        raise UserError(
            f"kd export {args.source}: {checkpoint.name} is a language model (dataset "
            f"{info.name}); kd export writes image classifiers only (their inputs are raw "
            f"images). Use {checkpoint} itself (kd eval loads it)."
        )
    model = build_from_checkpoint(file, info)
    output = args.output or (run_dir or checkpoint.parent) / "export"
    name = args.model if run_dir is not None else checkpoint.stem
    source = {
        "source_checkpoint": str(checkpoint),
        "source_run": str(run_dir or ""),
        "model": model_option(file),  # with model_config, what kd eval rebuilds the model from
        "model_config": file.values,
        "dataset_info": asdict(info),
    }
    images = _raw_test_images(checkpoint, info)
    path, difference = export(model, info, images, args.format, output, name, source)
    checked = "not run (install onnxruntime)" if difference != difference else f"{difference:.2g}"
    print(f"wrote {path} and {description_path(path).name}; max |difference| from PyTorch "
          f"on {len(images)} test images: {checked}")  # fmt: skip
    return 0


def _checkpoint(source: Path, role: str) -> tuple[Path, Path | None]:
    """The checkpoint to export, and the run directory it came from (None for a file)."""
    from kdcli.store.plain import read_json

    if source.is_file():
        return source, None
    report = source / "report.json"
    if not report.is_file():
        raise UserError(
            f"kd export {source}: neither a checkpoint file nor a run directory (no "
            "report.json); give a run directory or a model file such as student.pt."
        )
    if role not in ROLES:
        raise UserError(f"--model {role}: choose {', '.join(ROLES)}.")
    fix = "Give the model file itself (e.g. RUN/student.pt)."
    facts = read_json(report, fix)
    if not isinstance(facts, dict):
        raise UserError(f"{report} is not a kdcli report (not a mapping). {fix}")
    entry = facts.get(role)
    if entry is None:
        raise UserError(
            f"--model {role}: the run at {source} has no {role} (baseline=false, or no "
            "compress=...?)."
        )
    if not isinstance(entry, dict) or not isinstance(entry.get("checkpoint"), str):
        raise UserError(f"{report}: {role}.checkpoint is not a path; not a kdcli report. {fix}")
    recorded = Path(entry["checkpoint"])
    for base in (Path.cwd(), *source.resolve().parents):  # a relative path is the run's cwd's
        if (base / recorded).is_file():
            return base / recorded, source
    raise UserError(f"--model {role}: its checkpoint {recorded} is gone (cache removed?).")


def _raw_test_images(checkpoint: Path, info) -> torch.Tensor:
    """Up to 32 test images as float in [0, 1] (random ones when the dataset is not found)."""
    import torch

    from kdcli.config.eval_config import eval_config, load_dataset

    try:
        data = load_dataset(eval_config(checkpoint, [], info.name), torch.device("cpu"))
        batch = next(data.eval_loader("test", VERIFY_IMAGES).epoch(0)).x
    except UserError as error:
        log.warning("verifying on random images: the dataset is not available (%s)", error)
        generator = torch.Generator().manual_seed(0)
        shape = (VERIFY_IMAGES, info.channels, info.image_size, info.image_size)
        return torch.rand(shape, generator=generator)
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    return (batch * std + mean).clamp(0, 1)
