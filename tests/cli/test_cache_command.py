"""`kd cache ls | rm | verify` (kdcli/cli/cache_command.py, kdcli/store/inventory.py), run
through the command's entry point on a cache built by the store itself."""

import io
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kdcli.cli.cache_command import cutoff
from kdcli.cli.main import main
from kdcli.store.cache import ArtifactCache, file_lock
from kdcli.store.inventory import scan


def write(content: bytes):
    def make(tmp: Path) -> dict:
        (tmp / "data.bin").write_bytes(content)
        return {"name": "x"}

    return make


@pytest.fixture
def cache(tmp_path) -> Path:
    """Two teachers (one last used long ago), soft labels and an in-progress student state."""
    store = ArtifactCache(tmp_path, made_by={"command": "kd train seed=1"})
    store.get_or_make("teachers", "resnet8", "aaaa", write(b"t" * 2048))
    old = store.get_or_make("teachers", "resnet8", "bbbb", write(b"o" * 10))
    store.get_or_make("soft_labels", "resnet8", "cccc", write(b"s" * 100))
    state = store.state_path("students", "mlp", "dddd")
    state.parent.mkdir(parents=True)
    state.write_bytes(b"state")
    long_ago = time.time() - 90 * 86400
    os.utime(old.path / "manifest.json", (long_ago, long_ago))
    return tmp_path


def kd_cache(capsys, cache: Path, *args: str) -> tuple[int, str, str]:
    code = main(["cache", "--cache-dir", str(cache), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_ls_lists_entries_and_states_with_size_last_use_and_what_made_them(cache, capsys):
    code, out, _ = kd_cache(capsys, cache, "ls")
    assert code == 0
    lines = out.splitlines()
    assert (cache / "teachers" / "resnet8-aaaa.use").is_file(), "use and lock files: no items"
    assert lines[0].startswith(f"{cache}: 4 item(s), ") and lines[0].endswith(" KiB")
    teacher = next(line for line in lines if line.startswith("teachers/resnet8-aaaa"))
    assert " KiB " in teacher and "complete" in teacher and "kd train seed=1" in teacher
    assert any(line.startswith("students/mlp-dddd") and "in progress" in line for line in lines)


def test_rm_by_name_and_by_age_leaves_the_rest(cache, capsys):
    code, out, _ = kd_cache(capsys, cache, "rm", "--older-than", "30d", "--dry-run")
    assert code == 0 and out.startswith("would remove teachers/resnet8-bbbb (")
    assert len(out.splitlines()) == 1
    assert (cache / "teachers" / "resnet8-bbbb").is_dir()

    code, out, _ = kd_cache(capsys, cache, "rm", "--older-than", "30d", "soft_labels/", "--yes")
    assert code == 0
    assert not (cache / "teachers" / "resnet8-bbbb").exists()
    assert not (cache / "soft_labels" / "resnet8-cccc").exists()
    code, _, _ = kd_cache(capsys, cache, "rm", "mlp-dddd")
    assert code == 0 and not (cache / "students" / "mlp-dddd.state.pt").exists()
    assert (cache / "teachers" / "resnet8-aaaa" / "data.bin").is_file()
    assert not [p for p in cache.rglob(".*") if p.is_dir()], "nothing half-removed"


def test_rm_leaves_an_item_that_a_running_job_holds(cache, capsys):
    with file_lock(cache / "teachers" / "resnet8-aaaa.lock"):
        code, _, err = kd_cache(capsys, cache, "rm", "teachers/resnet8-aaaa")
    assert code == 1 and "kept teachers/resnet8-aaaa: a running job holds it" in err
    assert (cache / "teachers" / "resnet8-aaaa").is_dir()


def test_rm_and_verify_leave_an_entry_that_a_running_job_uses(cache, capsys):
    data = cache / "teachers" / "resnet8-aaaa" / "data.bin"
    data.write_bytes(b"x" * 2048)  # fails verify; a run that checked it earlier may still use it
    with ArtifactCache(cache) as running:  # a run's cache holds what it reused until it ends
        running.get_or_make("soft_labels", "resnet8", "cccc", write(b"s" * 100))
        code, _, err = kd_cache(capsys, cache, "rm", "soft_labels/resnet8-cccc")
        assert code == 1 and "kept soft_labels/resnet8-cccc: a running job holds it" in err
        assert (cache / "soft_labels" / "resnet8-cccc" / "data.bin").is_file()
        running.hold("teachers", "resnet8", "aaaa")
        code, _, err = kd_cache(capsys, cache, "verify", "--remove")
        assert "teachers/resnet8-aaaa: fails its checksums; kept: a running job holds it" in err
        assert data.is_file()
    code, _, _ = kd_cache(capsys, cache, "rm", "soft_labels/resnet8-cccc")
    assert code == 0 and not (cache / "soft_labels" / "resnet8-cccc").exists()


def test_verify_rehashes_everything_and_removes_what_fails_when_asked(cache, capsys):
    data = cache / "teachers" / "resnet8-aaaa" / "data.bin"
    stat = data.stat()
    data.write_bytes(b"x" * 2048)  # silent corruption: same size, time put back
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    code, out, err = kd_cache(capsys, cache, "verify")
    assert code == 1 and "teachers/resnet8-aaaa: fails its checksums" in err
    assert "2 of 3 entries verified" in out
    code, _, err = kd_cache(capsys, cache, "verify", "--remove")
    assert code == 0 and "teachers/resnet8-aaaa: removed" in err
    assert not data.parent.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["rm"], "needs NAME(s), --older-than WHEN or --all"),
        (["rm", "nothing-here"], "kd cache rm nothing-here: no such item"),
        (
            ["rm", "--older-than", "last week"],
            "--older-than=last week: not a date, a time or an age",
        ),
    ],
)
def test_bad_input_exits_2_naming_what_to_fix(cache, capsys, args, message):
    code, _, err = kd_cache(capsys, cache, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_a_missing_cache_dir_exits_2(tmp_path, capsys):
    code, _, err = kd_cache(capsys, tmp_path / "nowhere", "ls")
    assert code == 2 and "--cache-dir=" in err and "no such directory" in err


def test_older_than_takes_dates_and_ages():
    now = datetime(2026, 11, 30, 12, 0).astimezone()
    assert cutoff("2026-11-01", now) == datetime(2026, 11, 1).astimezone()
    assert cutoff("30d", now) == now - timedelta(days=30)
    assert cutoff("12h", now) == now - timedelta(hours=12)


@pytest.mark.parametrize(
    "when, utc",
    [
        ("2026-11-01T12:00Z", datetime(2026, 11, 1, 12, 0)),
        ("2020-01-01T00:00+00:00", datetime(2020, 1, 1)),
        ("2026-11-01T12:00+02:00", datetime(2026, 11, 1, 10, 0)),
    ],
)
def test_older_than_takes_times_with_a_zone(when, utc):
    assert cutoff(when) == utc.replace(tzinfo=timezone.utc)


def test_rm_older_than_a_time_with_a_zone_compares_with_the_items_times(cache, capsys):
    month_ago = datetime.now(timezone.utc) - timedelta(days=30)
    when = month_ago.strftime("%Y-%m-%dT%H:%MZ")
    code, out, _ = kd_cache(capsys, cache, "rm", "--older-than", when)
    assert code == 0 and out.startswith("removed teachers/resnet8-bbbb (")
    assert len(out.splitlines()) == 1


def names(cache: Path) -> list[str]:
    return [item.label for item in scan(cache)]


RESNET8 = ["soft_labels/resnet8-cccc", "teachers/resnet8-aaaa", "teachers/resnet8-bbbb"]


@pytest.mark.parametrize("name", ["", "/", ".", "./", " "])
def test_rm_refuses_a_name_that_would_match_the_whole_cache(cache, capsys, name):
    before = names(cache)
    code, _, err = kd_cache(capsys, cache, "rm", name)
    assert code == 2 and f'kd cache rm "{name}": not the name of an item' in err
    assert "--all" in err and names(cache) == before


def test_rm_refuses_a_prefix_of_every_item_unless_all(tmp_path, capsys):
    store = ArtifactCache(tmp_path)
    store.get_or_make("teachers", "resnet8", "aaaa", write(b"a"))
    store.get_or_make("teachers", "resnet8", "bbbb", write(b"b"))
    store.release()
    code, _, err = kd_cache(capsys, tmp_path, "rm", "teachers/resnet8")
    assert code == 2 and "matches every item in the cache (2)" in err and len(names(tmp_path)) == 2
    code, _, err = kd_cache(capsys, tmp_path, "rm", "--all", "teachers/resnet8")
    assert code == 2 and "--all removes every item: give it without NAME(s)" in err
    code, out, _ = kd_cache(capsys, tmp_path, "rm", "--all", "--yes")
    assert code == 0 and out.count("removed teachers/") == 2 and names(tmp_path) == []


class Terminal(io.StringIO):
    """What a user types at a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("answer, removed", [("y\n", True), ("yes\n", True), ("\n", False)])
def test_rm_of_several_items_asks_at_a_terminal(cache, capsys, monkeypatch, answer, removed):
    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    code, out, _ = kd_cache(capsys, cache, "rm", "teachers/")
    assert code == 0 and "will remove teachers/resnet8-aaaa (" in out
    assert "remove these 2 items? [y/N]" in out
    assert ("teachers/resnet8-bbbb" not in names(cache)) is removed
    assert ("nothing removed" in out) is not removed


def test_rm_of_several_items_without_a_terminal_needs_yes(cache, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # a pipe: no one to ask
    before = names(cache)
    code, out, err = kd_cache(capsys, cache, "rm", "resnet8-")
    assert code == 2 and "3 items match (listed above)" in err and "Add --yes" in err
    assert [line.split()[2] for line in out.splitlines()] == RESNET8
    assert names(cache) == before
    code, out, _ = kd_cache(capsys, cache, "rm", "--all", "--dry-run")
    assert code == 0 and out.count("would remove") == 4 and names(cache) == before
    code, _, _ = kd_cache(capsys, cache, "rm", "teachers/resnet8-aaaa")  # one: no question
    assert code == 0 and "teachers/resnet8-aaaa" not in names(cache)
