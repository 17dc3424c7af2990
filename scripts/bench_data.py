"""Images/s of the in-memory data path against a plain torchvision Dataset + DataLoader path.

Both deliver the same thing, normalised float batches of 256 CIFAR-shaped images on the
training device with pad-4 random crop + horizontal flip, from the same random uint8 data,
in one run; the ratio is printed (and the CUDA case when a GPU is visible). Then the memory
check: CIFAR-10-sized uint8 tensors plus one float batch, against what was measured.

    python scripts/bench_data.py [--batches 40] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from kdcli.data.augment import ShiftFlip
from kdcli.data.cifar import CIFAR10
from kdcli.data.memory import InMemoryDataset, Split

BATCH = 256
INFO = CIFAR10.info


class PlainCIFAR(Dataset):
    """What torchvision's CIFAR10 does per sample: uint8 HWC array -> PIL -> transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = images.transpose(0, 2, 3, 1)  # [N, 32, 32, 3], as torchvision keeps it
        self.labels = labels
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(INFO.mean, INFO.std),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def random_cifar(count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    return images, rng.integers(0, 10, count).astype(np.int64)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def in_memory_rate(images, labels, device: torch.device, batches: int) -> float:
    split = Split(torch.from_numpy(images), torch.from_numpy(labels))
    data = InMemoryDataset(INFO, split, split, ShiftFlip(max_shift=4, flip=True)).to(device)
    loader = data.train_loader(BATCH, seed=0)
    list(zip(range(2), loader.epoch(0), strict=False))  # warm-up
    synchronise(device)
    started = time.perf_counter()
    seen = 0
    for _, batch in zip(range(batches), loader.epoch(1), strict=False):
        seen += batch.x.shape[0]
    synchronise(device)
    return seen / (time.perf_counter() - started)


def dataloader_rate(images, labels, device: torch.device, batches: int, workers: int) -> float:
    loader = DataLoader(
        PlainCIFAR(images, labels),
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    iterator = iter(loader)
    for _ in range(2):  # warm-up: workers started, first batches made
        next(iterator)
    synchronise(device)
    started = time.perf_counter()
    seen = 0
    for _ in range(batches):
        x, y = next(iterator)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        seen += x.shape[0]
    synchronise(device)
    return seen / (time.perf_counter() - started)


def speed(device: torch.device, batches: int, workers: int) -> None:
    images, labels = random_cifar(BATCH * (batches + 4))
    memory = in_memory_rate(images, labels, device, batches)
    plain = dataloader_rate(images, labels, device, batches, workers)
    print(
        f"{device.type:>4}: in-memory {memory:>10,.0f} img/s | torchvision Dataset + DataLoader "
        f"({workers} workers) {plain:>8,.0f} img/s | ratio {memory / plain:.1f}x"
    )


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(device: torch.device) -> None:
    """CIFAR-10 in memory (50,000 + 10,000 uint8 images) plus one epoch of float batches.

    CUDA: exact allocator figures. CPU: resident-set growth, split into the data (measured
    after loading) and the working memory of one epoch (peak growth while iterating).
    """
    float_batch = BATCH * 3 * 32 * 32 * 4
    current = torch.cuda.memory_allocated if device.type == "cuda" else resident_bytes
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = current()
    train_x, train_y = random_cifar(50_000)
    test_x, test_y = random_cifar(10_000)
    train = Split(torch.from_numpy(train_x), torch.from_numpy(train_y)).to(device)
    test = Split(torch.from_numpy(test_x), torch.from_numpy(test_y)).to(device)
    data = InMemoryDataset(INFO, train, test, ShiftFlip(max_shift=4, flip=True))
    tensors = (train.images, train.labels, test.images, test.labels)
    tensor_bytes = sum(t.numel() * t.element_size() for t in tensors)
    loaded = current()
    peak = loaded
    for _batch in data.train_loader(BATCH, seed=0).epoch(0):
        peak = max(peak, current())
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    budget = tensor_bytes + float_batch
    mib = 2**20
    print(
        f"{device.type:>4}: CIFAR-10 in memory, one epoch at batch {BATCH}: data "
        f"{(loaded - before) / mib:.1f} MiB (its tensors: {tensor_bytes / mib:.1f} MiB uint8 "
        f"images + int64 labels), epoch working memory {(peak - loaded) / mib:.1f} MiB "
        f"(one float batch: {float_batch / mib:.1f} MiB); total {(peak - before) / mib:.1f} MiB "
        f"against {budget / mib:.1f} MiB = {100 * (peak - before) / budget:.1f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="timed batches per path")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU core(s), batch {BATCH}")
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
        print(f"GPU: {torch.cuda.get_device_name()}")
    for device in devices:
        speed(device, args.batches, args.workers)
    for device in devices:
        memory(device)


if __name__ == "__main__":
    main()
