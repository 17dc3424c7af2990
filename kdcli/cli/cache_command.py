"""`kd cache ls | rm | verify`: manage the artifact cache (teachers, soft labels, baselines and
in-progress training states) without `rm -rf`."""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

from kdcli.errors import UserError
from kdcli.store.inventory import Item, remove, scan, verify

DEFAULT_CACHE = "outputs/cache"  # train.yaml's cache_dir when KD_CACHE_DIR is not set


def add_cache_parser(commands: argparse._SubParsersAction) -> None:
    cache = commands.add_parser(
        "cache",
        help="list, remove or verify cached teachers, soft labels, baselines and training states",
        description="The cache holds what runs share: teachers, soft labels and baselines, "
        "named by a fingerprint of what determines them, and the saved state of training "
        "stages that did not finish (a rerun of the same command resumes from it).",
    )
    cache.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("KD_CACHE_DIR", DEFAULT_CACHE)),
        help="the cache (default: $KD_CACHE_DIR, else outputs/cache, as kd train)",
    )
    actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("ls", help="entries and states: size, last use, what made them")
    rm = actions.add_parser(
        "rm",
        help="remove entries or states by name, or those unused since a date",
        description="Remove items by name (a prefix of <kind>/<name>-<fingerprint> or of "
        "<name>-<fingerprint>, as `kd cache ls` shows them) or all items last used before "
        "--older-than. Items that a running job holds (building, training or using them) are "
        "left alone. An empty name, `/`, `.` or a name that matches every item is refused: "
        "--all removes everything. More than one item is removed only after a yes (--yes).",
    )
    rm.add_argument("names", nargs="*", metavar="NAME")
    rm.add_argument(
        "--older-than",
        metavar="WHEN",
        help="last used before WHEN: a date (2026-11-01), a time (2026-11-01T12:00, local "
        "unless it names a zone: 2026-11-01T12:00Z, ...+02:00) or an age (30d, 12h)",
    )
    rm.add_argument("--all", action="store_true", help="remove every item (give no NAME)")
    rm.add_argument("--yes", action="store_true", help="remove more than one item without asking")
    rm.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    verify_parser = actions.add_parser(
        "verify", help="re-hash every file of every entry (kd train checks sizes and times)"
    )
    verify_parser.add_argument(
        "--remove", action="store_true", help="also remove the entries that fail"
    )


def run(args: argparse.Namespace) -> int:
    root: Path = args.cache_dir
    if not root.is_dir():
        raise UserError(
            f"--cache-dir={root}: no such directory. Give the cache_dir that kd train used "
            "(--cache-dir DIR or KD_CACHE_DIR)."
        )
    items = scan(root)
    if args.action == "ls":
        return _list(items, root)
    if args.action == "rm":
        return _remove(items, args)
    return _verify(items, args.remove)


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


def _list(items: list[Item], root: Path) -> int:
    """One line an item (plain text, for grep): name, size, last use, state, what made it."""
    print(f"{root}: {len(items)} item(s), {_size(sum(i.bytes for i in items))}")
    width = max((len(i.label) for i in items), default=0)
    for item in items:
        state = "in progress" if item.in_progress else "complete"
        when = item.last_used.strftime("%Y-%m-%d %H:%M")
        print(
            f"{item.label:<{width}}  {_size(item.bytes):>10}  {when}  {state:<11}  "
            f"{item.made_by()}".rstrip()
        )
    return 0


def cutoff(when: str, now: datetime | None = None) -> datetime:
    """`--older-than`: a date or time (ISO 8601, in local time unless it names a time zone),
    or an age such as 30d / 12h / 45m before now. Time-zone aware, as the items' times are."""
    now = (now or datetime.now()).astimezone()
    text = when.strip()
    age = re.fullmatch(r"(\d+)([dhm])", text)
    try:
        if age:
            unit = {"d": "days", "h": "hours", "m": "minutes"}[age.group(2)]
            return now - timedelta(**{unit: int(age.group(1))})
        if text[-1:] in ("Z", "z"):  # UTC; Python 3.10's fromisoformat does not read the Z
            text = f"{text[:-1]}+00:00"
        return datetime.fromisoformat(text).astimezone()  # a naive time: local
    except (ValueError, OverflowError):
        raise UserError(
            f"--older-than={when}: not a date, a time or an age. Give e.g. 2026-11-01, "
            "2026-11-01T12:00Z or 30d."
        ) from None


def _remove(items: list[Item], args: argparse.Namespace) -> int:
    chosen = _chosen(items, args)
    if not chosen:
        print("nothing to remove")
        return 0
    if args.dry_run:
        for item in chosen:
            print(f"would remove {_described(item)}")
        return 0
    if len(chosen) > 1 and not args.yes and not _confirmed(chosen):
        print("nothing removed")
        return 0
    kept = 0
    for item in chosen:
        if remove(item):
            print(f"removed {_described(item)}")
        else:
            kept += 1
            print(f"kept {item.label}: a running job holds it", file=sys.stderr)
    return 1 if kept else 0


def _chosen(items: list[Item], args: argparse.Namespace) -> list[Item]:
    """The items that `kd cache rm` was asked to remove; refuses names that would match
    everything by accident."""
    if args.all:
        if args.names or args.older_than:
            raise UserError(
                "kd cache rm --all removes every item: give it without NAME(s) and without "
                "--older-than, or drop --all to remove only what they select."
            )
        return items
    if not args.names and not args.older_than:
        raise UserError(
            "kd cache rm needs NAME(s), --older-than WHEN or --all; `kd cache ls` shows the names."
        )
    for name in args.names:
        _check_name(name, items)
    chosen = [i for i in items if any(_matches(i, n) for n in args.names)]
    if args.older_than:
        before = cutoff(args.older_than)
        chosen += [i for i in items if i.last_used < before and i not in chosen]
    return chosen


def _check_name(name: str, items: list[Item]) -> None:
    """Refuse a NAME that matches nothing, or everything (an empty one, `/`, `.`, a prefix
    of every item): an unset shell variable must not empty the cache."""
    if name.strip().rstrip("/") in ("", ".", ".."):
        raise UserError(
            f'kd cache rm "{name}": not the name of an item (an unset shell variable?); it '
            "would match the whole cache, so nothing was removed. Give a name that "
            "`kd cache ls` shows, or --all to remove every item."
        )
    matched = [i for i in items if _matches(i, name)]
    if not matched:
        raise UserError(f"kd cache rm {name}: no such item; `kd cache ls` shows the names.")
    if len(matched) == len(items) > 1:
        raise UserError(
            f"kd cache rm {name}: matches every item in the cache ({len(items)}), so nothing "
            "was removed. Give a longer name (`kd cache ls` shows them), or --all to remove "
            "every item."
        )


def _confirmed(chosen: list[Item]) -> bool:
    """Whether to remove `chosen` (more than one item): listed, then asked at a terminal; from
    a script or a pipe, only --yes says so."""
    for item in chosen:
        print(f"will remove {_described(item)}")
    if sys.stdin is None or not sys.stdin.isatty():
        raise UserError(
            f"kd cache rm: {len(chosen)} items match (listed above) and stdin is not a "
            "terminal to ask whether to remove them, so nothing was removed. Add --yes to "
            "remove them all, or --dry-run to only list them."
        )
    try:
        answer = input(f"remove these {len(chosen)} items? [y/N] ")
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def _described(item: Item) -> str:
    return f"{item.label} ({_size(item.bytes)})"


def _matches(item: Item, name: str) -> bool:
    name = name.rstrip("/")
    return item.label.startswith(name) or item.name.startswith(name) or str(item.path) == name


def _verify(items: list[Item], remove_failed: bool) -> int:
    entries = [i for i in items if not i.in_progress]
    failed = [i for i in entries if not verify(i)]
    for item in failed:
        what = "fails its checksums"
        if remove_failed:
            what = "removed" if remove(item) else f"{what}; kept: a running job holds it"
        print(f"{item.label}: {what}", file=sys.stderr)
    print(f"{len(entries) - len(failed)} of {len(entries)} entries verified")
    return 1 if failed and not remove_failed else 0
