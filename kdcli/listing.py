"""`kd list [group]`: what each config group offers, with the default marked."""

from __future__ import annotations

import difflib

import yaml
from rich.console import Console
from rich.table import Table

from kdcli.errors import UserError
from kdcli.paths import config_dir
from kdcli.validate import group_options, is_group


def groups() -> list[str]:
    return sorted(p.name for p in config_dir().iterdir() if p.is_dir() and is_group(p.name))


def description(group: str, option: str) -> str:
    """The first comment line of the option's YAML file (Hydra's `# @package` line skipped)."""
    for line in (config_dir() / group / f"{option}.yaml").read_text().splitlines():
        if line.startswith("#") and not line.startswith("# @package"):
            return line.lstrip("# ").strip()
    return ""


def defaults() -> dict[str, list[str]]:
    """group -> the options train.yaml picks by default (a group may be used more than once)."""
    picked: dict[str, list[str]] = {}
    for entry in yaml.safe_load((config_dir() / "train.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            for key, option in entry.items():
                picked.setdefault(key.split("@")[0], []).append(str(option))
    return picked


def show(group: str | None = None) -> int:
    known = groups()
    if group is not None and group not in known:
        close = difflib.get_close_matches(group, known, n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise UserError(f"no config group '{group}'.{hint} Groups: {', '.join(known)}.")
    chosen = defaults()
    table = Table(title="kd train config groups (pick one with group=option)")
    for column in ("group", "option", "description"):
        table.add_column(column)
    for name in [group] if group else known:
        for option in group_options(name):
            mark = " (default)" if option in chosen.get(name, []) else ""
            table.add_row(name, option + mark, description(name, option))
        table.add_section()
    Console().print(table)
    return 0
