"""The config groups and their options, read from the YAML files (no torch, no composition)."""

from __future__ import annotations

import yaml

from kdcli.config.paths import config_dir


def group_options(group: str) -> list[str]:
    """The option names of a config group (the YAML files in its directory)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def is_group(name: str) -> bool:
    """Whether `name` is one of kdcli's config groups. Looked up in the list, not on the disk:
    a key given on the command line is never made into a path (a 10,000-character one is too
    long for the file system)."""
    return name in groups()


def groups() -> list[str]:
    return sorted(
        p.name for p in config_dir().iterdir() if p.is_dir() and not p.name.startswith("hydra")
    )


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
