"""Rich progress bars and the console that stages print to (stderr; results go to stdout)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def stage_progress(visible: bool = True) -> Progress:
    """A bar per stage showing epoch, loss, accuracy and images/s (hidden when not `visible`)."""
    return Progress(
        TextColumn("[bold]{task.description:<12}"),
        BarColumn(),
        TextColumn("epoch {task.fields[epoch]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("acc {task.fields[acc]}"),
        TextColumn("{task.fields[speed]} img/s"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not visible,
    )


def add_bar(progress: Progress, label: str, total: int, completed: int) -> TaskID:
    """A stage's bar, `completed` of `total` batches done (a resumed stage starts there)."""
    return progress.add_task(
        label, total=total, completed=completed, epoch="-", loss="-", acc="-", speed="-"
    )


def show(
    progress: Progress,
    bar: TaskID,
    completed: int,
    epoch: str,
    loss: float,
    score: float,
    rate: float,
) -> None:
    """The bar at `completed` batches, with the running loss, score and images/s."""
    progress.update(
        bar,
        completed=completed,
        epoch=epoch,
        loss=f"{loss:.4f}",
        acc=f"{score:.3f}",
        speed=f"{rate:,.0f}",
    )
