"""Issue 23, "every unreadable input exits 2": the real `kd` command on hostile inputs exits 2
with one short line naming the key or file, writes nothing, and never shows a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from bad_files import bomb_png, write_small_imagefolder
from kd_settings import TINY


def refused(done, *expected: str) -> str:
    """The one line of a bad-input refusal (exit 2, no traceback), checked for `expected`."""
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kd: error: "), done.stderr[-2000:]
    for part in expected:
        assert part in lines[0]
    return lines[0]


def written(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_decompression_bomb_in_an_imagefolder(kd, tmp_path):
    data = tmp_path / "data"
    write_small_imagefolder(data)
    (data / "b" / "bomb.png").write_bytes(bomb_png())  # 25 KB, 196 million pixels
    before = written(tmp_path)
    done = kd("train", *TINY, "dataset=imagefolder", f"dataset.root={data}", cwd=tmp_path)
    refused(done, f"{data / 'b' / 'bomb.png'}", "dataset.max_pixels=89478485")
    assert written(tmp_path) == before


def test_a_seed_numpy_cannot_take(kd, tmp_path):
    refused(kd("train", "seed=99999999999999999999"), "seed=99999999999999999999 must be")
    assert written(tmp_path) == []


def test_a_10000_character_key(kd, tmp_path):
    line = refused(kd("train", "k" * 10_000 + "=1"), "no setting has a name that long")
    assert len(line) < 1000
    assert written(tmp_path) == []


def test_a_10000_character_path_to_the_data(kd, tmp_path):
    """Found too long when the dataset is built, after Hydra has started: still one line."""
    done = kd("train", *TINY, "dataset=cifar10", "dataset.root=" + "d" * 10_000)
    line = refused(done, "File name too long; give a shorter path")
    assert len(line) < 1000
    assert written(tmp_path) == [], "the run directory Hydra made is removed"


def test_kd_report_on_a_report_of_the_wrong_shape(kd, tmp_path):
    report = tmp_path / "run" / "report.json"
    report.parent.mkdir()
    report.write_text('{"teacher": {"name": "t"}, "student": 3}')
    refused(kd("report", str(tmp_path)), f"{report}: student is 3, not an object")
    assert written(tmp_path) == ["run", "run/report.json"]


def test_names_and_paths_with_markup_print_as_written(kd, tmp_path):
    run = tmp_path / "run[v2]"
    run.mkdir()
    figures = {"teacher": {"name": "t[v2]", "top1": 0.9}, "student": {"name": "[/b]", "top1": 0.8}}
    (run / "report.json").write_text(json.dumps(figures))
    csv_path = tmp_path / "x[/b]" / "report.csv"
    done = kd("report", str(run), "--csv", str(csv_path))
    assert done.returncode == 0, done.stderr
    assert "t[v2] -> [/b]" in done.stdout and f"CSV: {csv_path}" in done.stdout
    assert csv_path.is_file()


def test_an_image_student_for_a_language_task_is_refused_at_once(kd, tmp_path):
    done = kd("train", "task=lm", "student=smallcnn")
    refused(done, "student=smallcnn reads images, but task=lm")
    assert "teacher " not in done.stderr and "epoch" not in done.stderr, "before the teacher"
    assert written(tmp_path) == []


def test_a_model_name_that_climbs_out_of_the_cache(kd, tmp_path):
    done = kd("train", *TINY, "student.name=../../x", f"cache_dir={tmp_path / 'a' / 'cache'}")
    refused(done, "student.name='../../x' must be a name")
    assert written(tmp_path) == [], "no lock file, in the cache or outside it"
