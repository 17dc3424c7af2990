"""The keys `kd train` accepts, read from the YAML files alone: fast enough for shell completion
(a Tab press), where composing through Hydra takes a tenth of a second or more and fails on a
half-typed line.

It follows the defaults lists as Hydra does for what completion needs: which option of each
group is picked (train.yaml's, or the line's `group=option`, an experiment's `override`s) and
under which package its keys land (`group@package`, `# @package _global_`). Values are the
files' own, uninterpolated; `kd train --cfg job` is the one that shows the composed config.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from kdcli.config.paths import config_dir

SELF = "_self_"
OWN_KEYS_NOT = ("defaults", "hydra")  # train.yaml's keys that are not the job's config


def root_groups(root: Path | None = None) -> dict[str, str]:
    """The groups train.yaml picks an option of, as the command line names them
    (`loss`, `optimizer@student.optimizer`), each with its default option (None: none)."""
    picked = {}
    for spec, option in _defaults(_load(_root(root) / "train.yaml")):
        picked[spec] = option
    return picked


def config_keys(choices: Mapping[str, str] | None = None, root: Path | None = None) -> dict:
    """Dotted key -> default value for every leaf of the config `kd train` composes with
    `choices` (group spec -> option, as on the command line) over train.yaml's defaults."""
    root = _root(root)
    train = _load(root / "train.yaml")
    keys: dict[str, Any] = {}
    for spec, option in _picked(root, train, choices or {}).items():
        if spec == SELF:
            keys.update(_flatten({k: v for k, v in train.items() if k not in OWN_KEYS_NOT}))
        elif option is not None:
            group, _, package = spec.partition("@")
            keys.update(_option_keys(root, group, option, package or group))
    return keys


def hydra_keys(choices: Mapping[str, str], root: Path | None = None) -> dict[str, Any]:
    """The `hydra.launcher.*` / `hydra.sweeper.*` keys of the options the line picks from
    kdcli's own Hydra groups (hydra/sweeper=optuna: hydra.sweeper.n_trials, ...)."""
    root = _root(root)
    keys: dict[str, Any] = {}
    for spec, option in choices.items():
        if spec.startswith("hydra/") and _exists(root, spec, option):
            keys.update(_option_keys(root, spec, option, spec.replace("/", ".")))
    return keys


def _picked(root: Path, train: dict[str, Any], choices: Mapping[str, str]) -> dict[str, Any]:
    """Group spec -> the option composed: the line's, else an `override` in a picked option
    (an experiment's, task=lm's, a teacher's own optimizer), else train.yaml's."""
    picked = {spec: choices.get(spec, option) for spec, option in _defaults(train)}
    for _ in range(3):  # an override can pick an option that holds overrides of its own
        changed = False
        for spec, option in list(picked.items()):
            if spec == SELF or option is None or not _exists(root, spec.partition("@")[0], option):
                continue
            group, _, package = spec.partition("@")
            for target, chosen in _overrides(root, group, option, package or group):
                value = choices.get(target, chosen)
                changed |= picked.get(target) != value
                picked[target] = value
        if not changed:
            break
    return picked


def _overrides(root: Path, group: str, option: str, package: str) -> Iterator[tuple[str, str]]:
    """(group spec as the command line names it, option) for each `override` entry of a file."""
    path = root / group / f"{option}.yaml"
    if _package_line(path) == "_global_":
        package = ""
    for spec, chosen in _defaults(_load(path)):
        if not spec.startswith("override ") or chosen is None:
            continue
        target, _, at = spec.removeprefix("override ").lstrip("/").partition("@")
        full = _join(package, at) if at else target.rsplit("/", 1)[-1]
        yield (target if full == target.rsplit("/", 1)[-1] else f"{target}@{full}"), chosen


def _option_keys(root: Path, group: str, option: str, package: str) -> dict[str, Any]:
    """The leaves one option file brings, under its package, with those of its own defaults."""
    path = root / group / f"{option}.yaml"
    if not _exists(root, group, option):
        return {}
    header = _package_line(path)
    if header == "_global_":
        package = ""
    content = _load(path)
    keys: dict[str, Any] = {}
    for spec, child in _defaults(content):
        if spec == SELF or child is None or spec.startswith("override "):
            continue
        child_group, _, child_package = spec.partition("@")
        absolute = child_group.startswith("/")  # else relative to this file's group
        child_group = child_group[1:] if absolute else f"{group}/{child_group}"
        inner = child_package or child_group.rsplit("/", 1)[-1]
        if inner == "_global_":
            inner = ""
        keys.update(_option_keys(root, child_group, child, _join(package, inner)))
    own = {k: v for k, v in content.items() if k != "defaults"}
    keys.update(_flatten(own, package))
    return keys


def _defaults(content: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(group spec, option) for each entry of a defaults list; `_self_` as (SELF, None)."""
    for entry in content.get("defaults") or []:
        if entry == SELF:
            yield SELF, None
        elif isinstance(entry, dict):
            for spec, option in entry.items():
                yield str(spec), None if option is None else str(option)


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    leaves: dict[str, Any] = {}
    for key, value in node.items():
        name = _join(prefix, str(key))
        if isinstance(value, dict) and value:
            leaves.update(_flatten(value, name))
        else:
            leaves[name] = value
    return leaves


def _package_line(path: Path) -> str | None:
    """What a `# @package NAME` line at the top of the file says (None without one)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# @package"):
            return line.removeprefix("# @package").strip()
        if line.strip() and not line.startswith("#"):
            return None
    return None


def _exists(root: Path, group: str, option: str) -> bool:
    """Whether the option file is there; names come from a command line, so only plain ones
    are looked up (no path of someone's choosing, no name longer than a file name)."""
    plain = all(re.fullmatch(r"[\w-]{1,100}", part) for part in [*group.split("/"), option])
    return plain and (root / group / f"{option}.yaml").is_file()


def _load(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return content if isinstance(content, dict) else {}


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _root(root: Path | None) -> Path:
    return config_dir() if root is None else root
