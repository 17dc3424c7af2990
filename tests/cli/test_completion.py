"""`kd completion`: the bash script driven the way bash drives it on a Tab (COMP_LINE,
COMP_POINT, COMP_WORDS, COMP_CWORD set, the function called, COMPREPLY read back), and the
candidates it is given for each kind of word."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kd_command import kd_environment

from kdcli.cli import completion
from kdcli.cli.main import build_parser, main

BREAKS = "\"'><=;|&(:"

# What bash does on a Tab, minus readline: the words as bash splits them (at spaces and at
# COMP_WORDBREAKS, = and : among them), the cursor at the end, the function `complete -F`
# registered, called with the command, the word being completed and the one before it.
DRIVER = r"""
kd() { "$KD_PYTHON" -m kdcli "$@"; }
eval "$(kd completion bash)"
[[ "$(complete -p kd)" == "complete -F _kd_complete kd" ]] || { echo "not registered"; exit 3; }
COMP_LINE="$1"
COMP_POINT=${#COMP_LINE}
COMP_WORDS=()
word=""
for (( i = 0; i < ${#COMP_LINE}; i++ )); do
    c="${COMP_LINE:i:1}"
    if [[ "$c" == " " ]]; then
        [[ -n "$word" ]] && COMP_WORDS+=("$word"); word=""
    elif [[ "$BREAKS" == *"$c"* ]]; then
        [[ -n "$word" ]] && COMP_WORDS+=("$word"); COMP_WORDS+=("$c"); word=""
    else
        word+="$c"
    fi
done
COMP_WORDS+=("$word")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
_kd_complete kd "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


class Terminal:
    """A shell reading a pseudo-terminal: what is typed goes in, what it echoes comes back."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.seen = ""

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait_for(self, text: str, timeout: float = 60) -> bool:
        """Whether `text` appears in what the shell writes within `timeout` seconds."""
        start = len(self.seen)
        deadline = time.monotonic() + timeout
        while text not in self.seen[start:] and time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    self.seen += os.read(self.fd, 65536).decode(errors="replace")
                except OSError:
                    break
        return text in self.seen[start:]


@contextmanager
def interactive(*command: str, cwd: Path) -> Iterator[Terminal]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: the shell, on the terminal (never back into pytest)
        try:
            os.chdir(cwd)
            os.execvpe(command[0], list(command), kd_environment({"PS1": "> ", "TERM": "dumb"}))
        finally:
            os._exit(127)
    try:
        yield Terminal(fd)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


def bash_tab(line: str, cwd: Path) -> list[str]:
    """COMPREPLY after a Tab at the end of `line`, in `cwd`."""
    env = kd_environment({"KD_PYTHON": sys.executable, "BREAKS": BREAKS})
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", DRIVER, "bash", line],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [word for word in done.stdout.splitlines() if word]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
def test_bash_completes_commands_groups_keys_and_paths(tmp_path):
    (tmp_path / "outputs").mkdir()
    (tmp_path / "teacher.pt").write_bytes(b"")
    expected = {
        "kd tr": ["train"],
        "kd train loss=dk": ["dkd"],  # bash replaces what follows the =
        "kd train optimizer@student.optimizer=ad": ["adamw"],
        "kd train student.ep": ["student.epochs="],
        "kd train loss=dkd loss.be": ["loss.beta="],  # the keys of the option on the line
        "kd train -m loss=kd,dk": ["kd,dkd"],  # a sweep's next value
        "kd train --hydra-h": ["--hydra-help"],
        "kd train teacher.checkpoint=tea": ["teacher.pt"],
        "kd report out": ["outputs"],
        "kd cache r": ["rm"],
    }
    for line, words in expected.items():
        assert bash_tab(line, tmp_path) == words, line


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
def test_tab_in_an_interactive_bash_completes_the_line(tmp_path):
    """The whole way: bash reading a terminal, readline's Tab, the word replaced in place."""
    (tmp_path / "teacher.pt").write_bytes(b"")
    with interactive("bash", "--norc", "--noprofile", "-i", cwd=tmp_path) as shell:
        shell.send(f'kd() {{ "{sys.executable}" -m kdcli "$@"; }}; eval "$(kd completion bash)"\n')
        for typed, completed in [
            ("kd train loss=dk", "kd train loss=dkd "),
            ("kd train student.ep", "kd train student.epochs="),  # no space: a value follows
            ("kd train optimizer@student.optimizer=ad", "optimizer@student.optimizer=adamw "),
            ("kd train teacher.checkpoint=tea", "kd train teacher.checkpoint=teacher.pt "),
        ]:
            shell.send(f"\x15{typed}\t")  # Ctrl-U clears the line first
            assert shell.wait_for(completed), f"{typed!r}: {shell.seen[-300:]!r}"


def test_the_zsh_function_hands_zsh_whole_words_and_paths(tmp_path):
    """zsh's completion builtins stubbed (they need a terminal): what the function gives them."""
    if shutil.which("zsh") is None:
        pytest.skip("no zsh here")
    driver = r"""
    kd() { "$KD_PYTHON" -m kdcli "$@"; }
    compdef() { print -r -- "compdef $*" }
    compadd() { print -r -- "compadd $*" }
    compset() { print -r -- "compset $*" }
    _files() { print -r -- "_files $*" }
    eval "$(kd completion zsh)"
    BUFFER="$1"; CURSOR=${#BUFFER}
    _kd_complete
    """
    env = kd_environment({"KD_PYTHON": sys.executable})
    said = {}
    for line in ("kd train loss=dk", "kd train stu", "kd train teacher.checkpoint=x"):
        done = subprocess.run(
            ["zsh", "-f", "-c", driver, "zsh", line], env=env, capture_output=True, text=True
        )
        said[line] = done.stdout.splitlines()
    assert said["kd train loss=dk"] == ["compdef _kd_complete kd", "compadd -- loss=dkd"]
    assert said["kd train stu"][1:] == ["compadd -S  -- student. student="], "no space after"
    assert said["kd train teacher.checkpoint=x"][1:] == ["compset -P *=", "_files "]


def candidates(line: str, shell: str = "bash") -> list[str]:
    """What `kd completion SHELL --line LINE` prints (its first line is the kind)."""
    return printed(["completion", shell, f"--line={line}"])


def printed(argv: list[str]) -> list[str]:
    from contextlib import redirect_stdout
    from io import StringIO

    out = StringIO()
    with redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue().splitlines()


def test_the_subcommands_and_their_flags():
    assert candidates("kd ") == ["words", *sorted(completion._subcommands(build_parser()))]
    assert "completion" in candidates("kd ")
    assert candidates("kd cache rm --d") == ["words", "--dry-run"]
    assert candidates("kd serve --device c") == ["words", "cpu", "cuda"]
    assert candidates("kd list lo") == ["words", "logger", "loss"]
    models = ["resnet101", "resnet110", "resnet14", "resnet18"]
    assert candidates("kd list --layers resnet1") == ["words", *models]
    assert candidates("kd completion ") == ["words", "bash", "zsh"]


def test_train_offers_every_group_and_key_level_by_level():
    words = candidates("kd train ")[1:]
    for word in ("loss=", "dataset=", "optimizer@student.optimizer=", "hydra/launcher=",
                 "hydra/sweeper=", "student.", "seed=", "baseline="):  # fmt: skip
        assert word in words
    assert not [w for w in words if "_target_" in w], "what kd refuses is not offered"
    assert candidates("kd train student.")[1:] == [
        "student.accumulate=", "student.batch_size=", "student.clip_grad_norm=",
        "student.epochs=", "student.lora=", "student.model.", "student.name=",
        "student.optimizer.", "student.pretrained=", "student.scheduler.",
    ]  # fmt: skip
    assert candidates("kd train +student.ep") == ["words", "+student.epochs="]
    search = candidates("kd train -m hydra/sweeper=optuna hydra.sweeper.n_")
    assert search == ["words", "hydra.sweeper.n_jobs=", "hydra.sweeper.n_trials="]
    slurm = candidates("kd train hydra/launcher=slurm hydra.launcher.p")
    assert slurm == ["words", "hydra.launcher.partition="]
    sgd = candidates("kd train student.optimizer.")
    adamw = candidates("kd train optimizer@student.optimizer=adamw student.optimizer.")
    assert "student.optimizer.momentum=" in sgd and "student.optimizer.momentum=" not in adamw


def test_values_of_groups_flags_and_booleans():
    assert candidates("kd train loss=k") == ["words", "kd", "kd_ls"]
    assert candidates("kd train loss=k", "zsh") == ["words", "loss=kd", "loss=kd_ls"]
    assert candidates("kd train baseline=") == ["words", "true", "false"]
    assert candidates("kd train --cfg ") == ["words", "all", "hydra", "job"]
    assert "slurm" in candidates("kd train hydra/launcher=")
    assert "basic" in candidates("kd train hydra/launcher="), "Hydra's own"
    assert candidates("kd train -sc")[1:] == [], "refused by kd train: not offered"


def test_paths_are_left_to_the_shell():
    assert candidates("kd train teacher.checkpoint=runs/st") == ["files", "runs/st"]
    assert candidates("kd train teacher.checkpoint=runs/st", "zsh") == [
        "files", "teacher.checkpoint=runs/st",
    ]  # fmt: skip
    assert candidates("kd report outputs/mul") == ["files", "outputs/mul"]
    assert candidates("kd eval ") == ["files", ""]
    assert candidates("kd eval student.pt dataset=cifar1") == ["words", "cifar10", "cifar100"]
    assert candidates("kd cache --cache-dir ") == ["dirs", ""]


def test_a_half_typed_quote_or_an_unknown_command_is_no_error():
    assert candidates("kd train 'loss=d")[0] == "words"
    assert candidates('kd train "loss=d')[0] == "words"
    assert candidates("kd train loss\\")[0] == "words"
    assert candidates("kd nothing ") == ["words"]
    assert candidates("cd runs && kd tr", "zsh") == ["words", "train"], "zsh passes it all"
    assert candidates("kd train loss.alpha=0.") == ["words"]


def test_the_scripts_register_the_function():
    assert "complete -F _kd_complete kd" in "\n".join(printed(["completion", "bash"]))
    assert "compdef _kd_complete kd" in "\n".join(printed(["completion", "zsh"]))
