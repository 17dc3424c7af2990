"""The torchdistill side of scripts/bench_peer.py: online KD through its DistillationBox.

The config dict has the shape of torchdistill's sample CIFAR KD configs (`KDLoss` inside a
`WeightedSumLoss`, frozen teacher) and the loop is the one of its example
`examples/torchvision/image_classification.py` (`train_one_epoch`), without the per-epoch
validation. Images go one at a time through torchvision transforms and a DataLoader, as with
torchvision's CIFAR10 dataset.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf
from peer_data import build_model

PEER_VERSION = "1.1.5"


def load_peer(path: str | None):
    """torchdistill imported from `path` (or the environment), or (None, why not)."""
    if path:
        sys.path.insert(0, str(Path(path).expanduser()))
    try:
        import torchdistill
    except ImportError as error:
        return None, f"torchdistill cannot be imported ({error})"
    if torchdistill.__version__ != PEER_VERSION:
        return None, f"torchdistill {torchdistill.__version__} found, {PEER_VERSION} expected"
    return torchdistill, ""


class ImageArrays(torch.utils.data.Dataset):
    """uint8 [N, C, H, W] arrays served one PIL image at a time through torchvision
    transforms, as torchvision's CIFAR10 dataset serves its files."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        pixels = self.images[i]
        image = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
        return self.transform(image), int(self.labels[i])


def train_transform(dataset_cfg, info: dict[str, Any]):
    """torchvision's form of kdcli's training view: zero-padded random crop, optional flip."""
    from torchvision import transforms

    steps = []
    shift = int(dataset_cfg.get("max_shift", 0)) if dataset_cfg.get("augment", True) else 0
    if shift:
        steps.append(transforms.RandomCrop(info["image_size"], padding=shift))
    if dataset_cfg.get("augment", True) and dataset_cfg.get("flip", False):
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(info["mean"], info["std"])]
    return transforms.Compose(steps)


def registry_key(node, registry: dict, register) -> tuple[str, dict]:
    """torchdistill's (key, kwargs) for a partial `_target_` config of kdcli's."""
    spec = OmegaConf.to_container(node, resolve=True)
    target = spec.pop("_target_")
    spec.pop("_partial_", None)
    key = target.rsplit(".", 1)[-1]
    if registry.get(key) is not get_class(target):
        register(key=target)(get_class(target))
        key = target
    return key, spec


def peer_run(cfg, info: dict, teacher_state: dict, train: tuple, alpha: float, device, workers):
    """One torchdistill online-KD run: (seconds, images trained, the student)."""
    from torchdistill.common.main_util import set_seed
    from torchdistill.core.distillation import get_distillation_box
    from torchdistill.optim import registry

    teacher = build_model(cfg.teacher.model, info, teacher_state).to(device).eval()
    set_seed(int(cfg.seed))  # as kdcli seeds before building the student: the same initial weights
    student = build_model(cfg.student.model, info).to(device)
    optimizer, optimizer_kwargs = registry_key(
        cfg.student.optimizer, registry.OPTIM_DICT, registry.register_optimizer
    )
    scheduler, scheduler_kwargs = registry_key(
        cfg.student.scheduler, registry.SCHEDULER_DICT, registry.register_scheduler
    )
    scheduler_config = {"key": scheduler, "kwargs": scheduler_kwargs}
    if getattr(get_class(cfg.student.scheduler._target_), "per_batch", False):
        # kdcli steps such a scheduler after every batch; torchdistill does with scheduling_step 1
        scheduler_kwargs["steps_per_epoch"] = len(train[1]) // int(cfg.student.batch_size)
        scheduler_config["scheduling_step"] = 1
    kd_kwargs = {
        "student_module_path": ".",
        "student_module_io": "output",
        "teacher_module_path": ".",
        "teacher_module_io": "output",
        "temperature": float(cfg.loss.temperature),
        "alpha": 1.0 - alpha,  # torchdistill's alpha weighs cross-entropy
        "beta": alpha,
        "reduction": "batchmean",
    }
    train_config = {
        "num_epochs": int(cfg.student.epochs),
        "train_data_loader": {
            "dataset_id": "train",
            "sampler": {"class_or_func": torch.utils.data.RandomSampler, "kwargs": {}},
            "kwargs": {
                "batch_size": int(cfg.student.batch_size),
                "num_workers": workers,
                "pin_memory": device.type == "cuda",
                "drop_last": True,
            },
        },
        "teacher": {"forward_proc": "forward_batch_only", "requires_grad": False},
        "student": {"forward_proc": "forward_batch_only", "requires_grad": True},
        "optimizer": {"key": optimizer, "kwargs": optimizer_kwargs},
        "scheduler": scheduler_config,
        "criterion": {
            "key": "WeightedSumLoss",
            "kwargs": {
                "sub_terms": {
                    "kd": {"criterion": {"key": "KDLoss", "kwargs": kd_kwargs}, "weight": 1.0}
                }
            },
        },
    }
    dataset = ImageArrays(*train, train_transform(cfg.dataset, info))
    started = time.perf_counter()
    box = get_distillation_box(
        teacher, student, {"train": dataset}, train_config, device, None, False, 1
    )
    images = 0
    for epoch in range(box.num_epochs):  # the loop of torchdistill's example train_one_epoch
        box.pre_epoch_process(epoch=epoch)
        for sample_batch, targets, supp_dict in box.train_data_loader:
            sample_batch, targets = sample_batch.to(device), targets.to(device)
            loss = box.forward_process(sample_batch, targets, supp_dict)
            box.post_forward_process(loss=loss)
            if not math.isfinite(loss.item()):
                sys.exit(f"torchdistill's loss became {loss.item()} in epoch {epoch + 1}")
            images += sample_batch.shape[0]
        box.post_epoch_process()
    seconds = time.perf_counter() - started
    box.clean_modules()
    return seconds, images, student
