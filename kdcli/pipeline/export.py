"""`kd export`: a trained model as a file that runs without kdcli, verified before it is kept.

TorchScript and ONNX fold each conv's BatchNorm into its weights (when torch.fx can trace
the model). Every format wraps the model in `Deployable`, which takes raw images (NCHW,
float in [0, 1]; TorchScript also takes uint8 in [0, 255]) and applies the dataset's
normalisation itself, so a user never copies mean and std. Formats:

- `torchscript`: `<name>.pt`, `torch.jit.load` (no kdcli, no model code);
- `onnx`: `<name>.onnx` (opset 17, dynamic batch), through PyTorch's TorchScript-based ONNX
  exporter (`dynamo=False`: it needs no onnxscript); checked with onnxruntime when installed;
- `safetensors`: `<name>.safetensors`, the weights (normalisation included) with the model
  config and dataset facts in its metadata; loading it needs the model's code (kdcli).

Beside each goes `<file>.json` (e.g. `student.onnx.json`): classes, input shape and dtype,
normalisation, the source checkpoint and run, kdcli's version, and the verification's
maximum difference.

No `from __future__ import annotations` here: TorchScript reads `Deployable`'s class
annotations (its buffers') as types, and it cannot read them as strings.
"""

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdcli import __version__
from kdcli.data import DatasetInfo
from kdcli.engine.compress import fold_batchnorm
from kdcli.errors import RunError, UserError
from kdcli.store.atomic import atomic_path, write_json_atomic

FORMATS = ("torchscript", "onnx", "safetensors")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx", "safetensors": ".safetensors"}
TOLERANCE = 1e-4  # max |exported - PyTorch| allowed, relative to the logits' scale


class Deployable(nn.Module):
    """Raw images in, logits out: scales uint8 to [0, 1] and normalises, then the model."""

    mean: torch.Tensor  # buffers [1, C, 1, 1]
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.clone().view(1, -1, 1, 1))
        self.register_buffer("std", std.clone().view(1, -1, 1, 1))

    @classmethod
    def for_dataset(cls, model: nn.Module, info: DatasetInfo) -> "Deployable":
        return cls(model, torch.tensor(info.mean), torch.tensor(info.std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        return self.model((images - self.mean) / self.std)


def export(
    model: nn.Module,
    info: DatasetInfo,
    raw_images: torch.Tensor,
    fmt: str,
    output: Path,
    name: str,
    source: dict[str, Any],
) -> tuple[Path, float]:
    """Write `model` in `fmt` to `output/<name><suffix>`, reload it, compare its outputs on
    `raw_images` (float, [0, 1]) with PyTorch's, and write the JSON beside it; the file and
    the largest difference. A file whose outputs differ is removed (RunError)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: not a format kd export writes; use one of {FORMATS}.")
    model = model.float().eval().cpu()
    raw_images = raw_images.float().cpu()
    with torch.no_grad():
        expected = Deployable.for_dataset(model, info)(raw_images)  # the model as trained
    # safetensors keeps the trained architecture's weights: its users rebuild the model
    folded = model if fmt == "safetensors" else fold_batchnorm(model)
    deployable = Deployable.for_dataset(folded, info).eval()
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"{name}{SUFFIX[fmt]}"
    writer, reader = {"torchscript": (_write_torchscript, _run_torchscript),
                      "onnx": (_write_onnx, _run_onnx),
                      "safetensors": (_write_safetensors, _run_safetensors)}[fmt]  # fmt: skip
    with atomic_path(path) as tmp:
        try:
            writer(deployable, raw_images, tmp, source)
        except Exception as error:  # exporters raise many types for what they cannot handle
            raise UserError(
                f"--format {fmt}: this model cannot be exported in that format "
                f"({type(error).__name__}: {str(error).strip().splitlines()[0][:200]}); try "
                "another --format (torchscript takes the most models)."
            ) from None
        got = reader(tmp, raw_images, model, info)
        difference = float((got - expected).abs().max()) if got is not None else float("nan")
        scale = max(1.0, float(expected.abs().max()))
        if got is not None and difference > TOLERANCE * scale:
            raise RunError(
                f"the exported {fmt} model's outputs differ from PyTorch's by up to "
                f"{difference:.3g} (allowed {TOLERANCE * scale:.3g}); nothing was written."
            )
    facts = {
        "format": fmt,
        "file": path.name,
        "classes": info.num_classes,
        "input": {
            "shape": ["batch", info.channels, info.image_size, info.image_size],
            "dtype": "float32 in [0, 1]"
            + (" or uint8 in [0, 255]" if fmt == "torchscript" else ""),
            "layout": "NCHW",
        },
        "normalisation": {"mean": list(info.mean), "std": list(info.std), "inside": True},
        "dataset": info.name,
        "verified": {"images": len(raw_images), "max_abs_difference": difference},
        "kdcli_version": __version__,
        **source,
    }
    write_json_atomic(description_path(path), facts)
    return path, difference


def description_path(path: Path) -> Path:
    """The JSON that describes the exported file at `path`."""
    return path.with_name(path.name + ".json")


class FromNormalised(nn.Module):
    """An exported model (raw images in) fed the normalised batches kdcli's loaders give:
    what `kd eval` evaluates an exported TorchScript file through."""

    mean: torch.Tensor  # buffers [1, C, 1, 1]
    std: torch.Tensor

    def __init__(self, exported: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.exported = exported
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, normalised: torch.Tensor) -> torch.Tensor:
        return self.exported(normalised * self.std + self.mean)


def load_torchscript(path: Path) -> nn.Module:
    with warnings.catch_warnings():  # TorchScript's deprecation notice: it still loads anywhere
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu")


def _write_torchscript(model: Deployable, images: torch.Tensor, path: Path, source: dict) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.model, ((images - model.mean) / model.std,))
        # the wrapper scripted around the traced model, so TorchScript keeps the uint8 branch
        scripted = torch.jit.script(Deployable(traced, model.mean, model.std))
    scripted.save(str(path))


def _run_torchscript(path: Path, images: torch.Tensor, model: nn.Module, info: DatasetInfo):
    loaded = load_torchscript(path)
    with torch.no_grad():
        return loaded(images)


def _write_onnx(model: Deployable, images: torch.Tensor, path: Path, source: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (images,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )


def _run_onnx(path: Path, images: torch.Tensor, model: nn.Module, info: DatasetInfo):
    try:
        import onnxruntime
    except ImportError:
        return None  # written, not run: `pip install kdcli[export]` adds the check
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])


def _write_safetensors(model: Deployable, images: torch.Tensor, path: Path, source: dict) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "kdcli-deployable/1", **{k: json.dumps(v) for k, v in source.items()}}
    save_file(state, str(path), metadata=metadata)


def _run_safetensors(path: Path, images: torch.Tensor, model: nn.Module, info: DatasetInfo):
    import copy

    from safetensors.torch import load_file

    rebuilt = Deployable.for_dataset(copy.deepcopy(model), info)
    for parameter in rebuilt.parameters():  # nothing left from the original weights
        parameter.data.zero_()
    rebuilt.load_state_dict(load_file(str(path)))
    with torch.no_grad():
        return rebuilt.eval()(images)


def missing_package(fmt: str) -> str | None:
    """The package `fmt` needs that is not installed (None when all are there)."""
    needed = {"onnx": "onnx", "safetensors": "safetensors"}.get(fmt)
    if needed is None:
        return None
    try:
        __import__(needed)
    except ImportError:
        return needed
    return None
