"""Benchmark: distillation throughput with stored soft labels against training the student alone.

    python scripts/bench_soft_labels.py                 # CPU: 2,048 CIFAR-shaped images
    python scripts/bench_soft_labels.py --samples 50000 --online-batches 50   # on a GPU

A resnet50 teacher (untrained: only its cost matters here) and a smallcnn student on random
CIFAR-shaped data (3x32x32, 100 classes, crop + flip), batch 256, through the real training
loop (`kdcli.engine.loop.fit`) and the real knowledge providers (`kdcli.knowledge.teacher`):

- alone:  the student with cross-entropy, no teacher knowledge;
- static: KD from stored logits, one clean view per sample;
- views:  KD from stored logits of every epoch's exact view ([E, N, K]);
- online: KD with the teacher run on every batch (measured on `--online-batches` batches).

Storing the soft labels is a one-off cost shared by every run of a sweep, so it is not timed.
Each mode trains one warm-up epoch and then `--epochs` timed epochs; the script prints
images/s and the ratio to `alone`, measured in this one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import torch
from omegaconf import OmegaConf

from kdcli.config.build import training_recipe
from kdcli.data import Batch, DatasetInfo, InMemoryDataset, Split
from kdcli.data.augment import ShiftFlip
from kdcli.engine.loop import Job, Trainee, fit
from kdcli.knowledge.format import SoftLabels
from kdcli.knowledge.predict import predict_views
from kdcli.knowledge.teacher import OnlineTeacher, StoredKnowledge
from kdcli.losses import CrossEntropy, SoftTargetKD
from kdcli.models.smallcnn import SmallCNN
from kdcli.models.torchvision_models import torchvision_classifier
from kdcli.tasks.classify import TASK

CLASSES = 100
INFO = DatasetInfo("cifar-shaped", CLASSES, 3, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


class FirstBatches:
    """The first `count` batches of each epoch of a loader (to time a slow mode briefly)."""

    def __init__(self, loader, count: int) -> None:
        self.loader, self.count = loader, count

    @property
    def num_samples(self) -> int:
        return self.loader.num_samples

    def __len__(self) -> int:
        return min(self.count, len(self.loader))

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        for step, batch in enumerate(self.loader.epoch(epoch, start), start=start):
            if step == self.count:
                return
            yield batch


def random_cifar(samples: int, device: torch.device) -> InMemoryDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (samples, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, CLASSES, (samples,), generator=generator)
    split = Split(images, labels)
    return InMemoryDataset(INFO, split, split, ShiftFlip(max_shift=4, flip=True)).to(device)


def stage(epochs: int):
    return OmegaConf.create(
        {
            "epochs": epochs,
            "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01},
            "scheduler": {
                "_target_": "torch.optim.lr_scheduler.ConstantLR",
                "_partial_": True,
                "factor": 1.0,
                "total_iters": 0,
            },
        }
    )


def throughput(loader, loss, knowledge, epochs: int, device: torch.device) -> float:
    """Images/s of the timed epochs (after one warm-up epoch), through the real loop."""
    torch.manual_seed(0)
    trainee = Trainee(SmallCNN(CLASSES, 3, 32), loader, loss)
    fit(trainee, training_recipe(stage(1), "student"), Job("warm-up", TASK, device), knowledge)
    recipe = training_recipe(stage(epochs), "student")
    return fit(trainee, recipe, Job("timed", TASK, device), knowledge).images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per mode")
    parser.add_argument("--online-batches", type=int, default=2)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = random_cifar(args.samples, device)
    loader = data.train_loader(batch_size=256, seed=0)
    teacher = torchvision_classifier("resnet50", CLASSES, 3, 32).to(device).eval()

    epochs = args.epochs + 1  # the warm-up epoch is epoch 0 of its own fit; views cover all
    views = torch.zeros(epochs, args.samples, CLASSES, dtype=torch.float16, device=device)

    def write(epoch: int, index: torch.Tensor, logits: torch.Tensor) -> None:
        views[epoch, index] = logits.half()

    started = time.perf_counter()
    predict_views(teacher, loader, epochs, write)
    store_seconds = time.perf_counter() - started
    static = views[0].clone()  # stands in for the clean view: same size, same lookup

    kd = SoftTargetKD(alpha=0.9, temperature=4.0)
    results = {
        "alone": throughput(loader, CrossEntropy(), None, args.epochs, device),
        "static": throughput(loader, kd, StoredKnowledge(SoftLabels(static)), args.epochs, device),
        "views": throughput(
            loader, kd, StoredKnowledge(SoftLabels(views, per_epoch=True)), args.epochs, device
        ),
        "online": throughput(
            FirstBatches(loader, args.online_batches), kd, OnlineTeacher(teacher, []), 1, device
        ),
    }
    print(
        f"\nresnet50 -> smallcnn, {args.samples} CIFAR-shaped images, batch 256, {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"storing views for {epochs} epochs took {store_seconds:.1f} s (once per sweep)")
    for mode, rate in results.items():
        print(f"  {mode:<7} {rate:>9,.0f} img/s   {rate / results['alone']:5.2f}x alone")


if __name__ == "__main__":
    main()
