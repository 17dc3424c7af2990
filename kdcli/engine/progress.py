"""Rich progress bars and the console that stages print to (stderr; results go to stdout)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

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
