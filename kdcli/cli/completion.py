"""`kd completion bash|zsh`: shell completion for kd's commands, flags, config groups, keys and
paths.

`kd completion bash` prints a script (kdcli/cli/completion_scripts.py) that, on each Tab,
runs `kd completion bash --line "<the line up to the cursor>"`; this module answers with what
can come next. It reads the config directory's YAML files (config/key_tree.py), never
composes through Hydra and never imports torch: a Tab costs Python's start and kd's imports.

The answer: a first line `words`, `files` or `dirs`, then the words (or, for files and dirs,
the partial path the shell should complete itself). bash replaces only what follows the last
`=` or `:` of a word, so its words start there; zsh's are whole.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kdcli.cli.completion_scripts import SCRIPTS

SHELLS = tuple(SCRIPTS)
BASH_BREAKS = "\"'><=;|&(:"  # bash's COMP_WORDBREAKS, whitespace aside
HYDRA_FLAGS_REFUSED = ("--shell-completion", "-sc", "--experimental-rerun")
CHOICES = {  # values of Hydra's flags
    "--cfg": ("job", "hydra", "all"),
    "-c": ("job", "hydra", "all"),
    "--info": ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath"),
    "-i": ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath"),
}
DIR_FLAGS = ("--config-path", "-cp", "--config-dir", "-cd", "--cache-dir")
PATH_WORDS = ("checkpoint", "cache_dir", "path", "root", "dir", "file", "tokenizer")
SHELL_OPERATORS = ("&&", "||", ";", "|", "(", "{", "then", "do")
HYDRA_GROUPS = ("hydra/launcher", "hydra/sweeper")  # the Hydra groups a kd user picks from


@dataclass
class Completion:
    """What may come next: words, or a path the shell completes itself (`kind` files/dirs)."""

    words: list[str] = field(default_factory=list)
    kind: str = "words"
    partial: str = ""  # for files and dirs: the path typed so far


def add_completion_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "completion",
        help='print a shell completion script: eval "$(kd completion bash)" (or zsh)',
        description="Prints a script that completes kd's commands and flags, `group=option` "
        "for every config group, config keys (student.epochs=) and paths. Enable it with "
        'eval "$(kd completion bash)" in ~/.bashrc, or eval "$(kd completion zsh)" in ~/.zshrc.',
    )
    parser.add_argument("shell", choices=SHELLS)
    parser.add_argument("--line", help=argparse.SUPPRESS)  # the script's call, on each Tab


def run(args: argparse.Namespace, kd_parser: argparse.ArgumentParser) -> int:
    """Print the script, or (--line) the candidates for the line the script passes."""
    if args.line is None:
        print(SCRIPTS[args.shell], end="")
        return 0
    found = complete(args.line, kd_parser)
    words, partial = found.words, found.partial
    if args.shell == "bash":  # bash replaces only what follows the word's last = or :
        cut = _break_at(_split(args.line)[1])
        words, partial = [w[cut:] for w in words], partial[_break_at(partial) :]
    head = [found.kind] if found.kind == "words" else [found.kind, partial]
    print("\n".join([*head, *words]))
    return 0


def complete(line: str, kd_parser: argparse.ArgumentParser) -> Completion:
    """What may follow `line` (the command line up to the cursor, `kd` first)."""
    words, current = _split(line)
    args = _after_kd(words)
    commands = _subcommands(kd_parser)
    if not args:
        if current.startswith("-"):
            return _matching(_flags(kd_parser), current)
        return _matching(commands, current)
    command, rest = args[0], args[1:]
    if command == "train":
        return _train(rest, current)
    if command == "list":
        return _list(rest, current)
    if command == "completion":
        return _matching(SHELLS, current) if not rest else Completion()
    if command in commands:
        return _argparse(commands[command], rest, current)
    return Completion()


def _train(rest: list[str], current: str) -> Completion:
    from kdcli.config.hydra_shim import args_parser

    previous = rest[-1] if rest else ""
    if previous in CHOICES:
        return _matching(CHOICES[previous], current)
    if previous in DIR_FLAGS:
        return Completion(kind="dirs", partial=current)
    if previous in ("--config-name", "-cn"):
        return Completion()
    if current.startswith("-"):
        flags = [f for f in _flags(args_parser()) if f not in HYDRA_FLAGS_REFUSED]
        return _matching([*flags, "--debug"], current)
    return _override(rest, current)


def _list(rest: list[str], current: str) -> Completion:
    from kdcli.cli.listing import build_parser
    from kdcli.config.groups import group_options, groups

    previous = rest[-1] if rest else ""
    if previous == "--layers":
        return _matching(group_options("model"), current)
    if current.startswith("-"):
        return _matching(_flags(build_parser()), current)
    if "=" in current:
        return _override(rest, current)
    named = [w for w in rest if not w.startswith("-") and "=" not in w and w in groups()]
    if not named:
        return _matching(groups(), current)
    return _matching(group_options(named[0]), current)  # --details' options of that group


def _argparse(parser: argparse.ArgumentParser, rest: list[str], current: str) -> Completion:
    """A subcommand with an argparse parser (report, eval, export, cache, serve): its flags,
    a flag's choices, its sub-actions (cache ls/rm/verify), paths for the rest."""
    actions = _subcommands(parser)
    if actions:
        chosen = [w for w in rest if w in actions]
        if chosen:
            return _argparse(actions[chosen[0]], rest[rest.index(chosen[0]) + 1 :], current)
        if not current.startswith("-") and not (rest and _takes_value(parser, rest[-1])):
            return _matching(actions, current)
    previous = rest[-1] if rest else ""
    action = _option(parser, previous)
    if action is not None and action.nargs != 0:
        if action.choices:
            return _matching([str(c) for c in action.choices], current)
        if action.type is Path or previous in DIR_FLAGS:
            return Completion(kind="dirs" if previous in DIR_FLAGS else "files", partial=current)
        return Completion()
    if current.startswith("-"):
        return _matching(_flags(parser), current)
    if "=" in current and any(a.metavar == "KEY=VALUE" for a in parser._actions):
        return _override(rest, current)  # kd eval CHECKPOINT dataset=...
    return Completion(kind="files", partial=current)


def _override(rest: list[str], current: str) -> Completion:
    """`group=option`, `key=value` or the next part of a dotted key."""
    from kdcli.config.groups import group_options
    from kdcli.config.key_tree import config_keys, hydra_keys, root_groups

    specs = [spec for spec in root_groups() if spec != "_self_"]
    groups = {spec: group_options(spec.partition("@")[0]) for spec in specs}
    prefix = current[: len(current) - len(current.lstrip("+~"))]  # +key=, ++key=, ~key
    typed = current[len(prefix) :]
    if "=" in typed:
        key, value = typed.split("=", 1)
        done, _, partial = value.rpartition(",")  # a sweep: a,b,<Tab>
        start = f"{prefix}{key}={done}{',' if done else ''}"
        if key in groups or key.startswith("hydra/"):
            options = groups.get(key) or _hydra_options(key)
            return Completion([start + o for o in options if o.startswith(partial)])
        default = config_keys(_choices(rest)).get(key)
        if isinstance(default, bool):
            return Completion([start + v for v in ("true", "false") if v.startswith(partial)])
        if any(word in key.rsplit(".", 1)[-1] for word in PATH_WORDS):
            return Completion(kind="files", partial=current)
        return Completion()
    picked = _choices(rest)
    every = {**config_keys(picked), **hydra_keys(picked)}
    keys = [k for k in every if not k.rsplit(".", 1)[-1].startswith("_")]
    words = {f"{spec}=" for spec in [*groups, *HYDRA_GROUPS]}
    for key in keys:
        if key.startswith(typed):
            dot = key.find(".", len(typed))
            words.add(key[: dot + 1] if dot >= 0 else f"{key}=")
    return Completion(sorted(prefix + w for w in words if w.startswith(typed)))


def _choices(rest: Iterable[str]) -> dict[str, str]:
    """The `group=option` the line has picked so far."""
    picked = {}
    for word in rest:
        key, equals, value = word.lstrip("+").partition("=")
        if equals and "," not in value:
            picked[key] = value
    return picked


def _hydra_options(group: str) -> list[str]:
    """The options of a Hydra group: kdcli's files (configs/hydra/...) and what Hydra and its
    plugins register (hydra/launcher=basic, the Optuna sweeper). Hydra's plugins are scanned
    only here, when such a value is being completed."""
    from kdcli.config.groups import group_options

    options = set(group_options(group))
    try:
        from hydra.core.config_store import ConfigStore
        from hydra.core.plugins import Plugins

        Plugins.instance()  # imports hydra_plugins.*, which register their configs
        options |= {name.removesuffix(".yaml") for name in ConfigStore.instance().list(group)}
    except Exception:  # noqa: BLE001 - a broken plugin must not break completion
        pass
    return sorted(options)


def _matching(words: Iterable[str], current: str) -> Completion:
    return Completion(sorted(w for w in words if w.startswith(current)))


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [
        flag
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for flag in action.option_strings
    ]


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return parser._option_string_actions.get(flag) if flag.startswith("-") else None


def _takes_value(parser: argparse.ArgumentParser, flag: str) -> bool:
    action = _option(parser, flag)
    return action is not None and action.nargs != 0


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _split(line: str) -> tuple[list[str], str]:
    """The finished words and the one being typed ('' after a space)."""
    for closing in ("", '"', "'"):  # an open quote: the word being typed
        try:
            words = shlex.split(line + closing)
            break
        except ValueError:
            continue
    else:  # a trailing backslash, say
        words = line.split()
    if not line or line[-1].isspace():
        return words, ""
    return words[:-1], words[-1] if words else ""


def _after_kd(words: list[str]) -> list[str]:
    """The words after `kd` in the last command of the line (zsh passes the whole line:
    `cd runs && kd report ...`)."""
    for end in range(len(words) - 1, -1, -1):
        if words[end] in SHELL_OPERATORS:
            words = words[end + 1 :]
            break
    return words[1:]


def _break_at(word: str) -> int:
    """Where bash's part of `word` starts: after its last COMP_WORDBREAKS character."""
    return max(word.rfind(c) for c in BASH_BREAKS) + 1
