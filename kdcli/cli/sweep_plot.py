"""`kd report --plot`: the student's headline metric (top-1) against each swept parameter, as a PNG.

matplotlib is an optional extra (`kdcli[plot]`), imported only when a plot is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdcli.errors import UserError


def pyplot() -> Any:
    """matplotlib's pyplot drawing into files, or a UserError naming the extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError(
            "--plot needs matplotlib, which is not installed; install it with "
            "`pip install kdcli[plot]` (or `pip install matplotlib`), or leave out --plot."
        ) from None
    return plt


def plot(
    path: Path,
    header: list[str],
    table: list[list[Any]],
    params: list[str],
    metric: str = "top1",
    label: str = "top-1",
) -> None:
    """One panel per swept parameter; over seed groups (a `student_<metric>_mean` column), the
    mean with the standard deviation over seeds as an error bar."""
    plt = pyplot()
    if not params:
        raise UserError(
            "--plot: the runs share all their settings (seeds aside); there is nothing to plot."
        )
    column = f"student_{metric}"
    grouped = f"{column}_mean" in header
    accuracy = header.index(f"{column}_mean" if grouped else column)
    spread = header.index(f"{column}_std") if grouped else None
    figure, axes = plt.subplots(1, len(params), figsize=(4 * len(params), 3.5), squeeze=False)
    for axis, param in zip(axes[0], params, strict=True):
        at = header.index(param)
        kept = [r for r in table if r[at] is not None and r[accuracy] is not None]
        xs = [r[at] for r in kept]
        ys = [100 * r[accuracy] for r in kept]
        errors = None if spread is None else [100 * (r[spread] or 0.0) for r in kept]
        if not all(isinstance(x, float) for x in xs):  # categories, e.g. loss=kd,hard
            labels = sorted({str(x) for x in xs})
            axis.set_xticks(range(len(labels)), [_literal(label) for label in labels])
            xs = [labels.index(str(x)) for x in xs]
        axis.errorbar(xs, ys, yerr=errors, fmt="o", capsize=4)
        axis.set_xlabel(_literal(param))
        axis.set_ylabel(f"student {label} (%)" + (", mean ± std over seeds" if grouped else ""))
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _literal(text: str) -> str:
    """`text` as matplotlib shows it as written: a `$` would start math, which text read from
    a run's files may not parse as."""
    return text.replace("$", r"\$")
