"""Random files for the readers of files from outside, in this process: `kd report`'s (a run's
report.json, .hydra/overrides.yaml and config.yaml) and the ImageFolder scanner. Whatever the
bytes, the outcome is a result or a `UserError` (`kd report` exits 0 or 2), never another
exception, and nothing is written outside the folder the reader was given."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from bad_files import bomb_png, write_small_imagefolder
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from kdcli.cli.main import main
from kdcli.data.imagefolder import ImageFolder
from kdcli.errors import UserError

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TEXT = st.text(max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
FIGURES = ("name", "top1", "ece", "params", "checkpoint_bytes", "reused", "seconds")
# report-shaped objects: the keys kd report reads, with any values
REPORTS = st.fixed_dictionaries(
    {},
    optional={
        "teacher": st.dictionaries(st.sampled_from(FIGURES), JSON, max_size=4) | JSON,
        "student": st.dictionaries(st.sampled_from(FIGURES), JSON, max_size=4) | JSON,
        "stages": st.dictionaries(TEXT, st.dictionaries(st.just("seconds"), JSON)) | JSON,
        "metric": JSON,
        "kd_gain": JSON,
        "kd_gain_ci": JSON,
        "warnings": JSON,
        "seed": JSON,
    },
)
CONTENT = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda value: json.dumps(value).encode()),
    REPORTS.map(lambda value: json.dumps(value).encode()),
    JSON.map(lambda value: yaml.safe_dump(value).encode()),
    st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
)


def files_below(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def run_report(root: Path, contents: dict[str, bytes]) -> int:
    """`kd report` over one run whose files hold `contents`; its exit code (output dropped)."""
    run = root / "given" / "run"
    (run / ".hydra").mkdir(parents=True)
    for name, content in contents.items():
        (run / name).write_bytes(content)
    outside = files_below(root) - files_below(root / "given")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["report", str(root / "given")])
    assert files_below(root) - files_below(root / "given") == outside, "wrote outside PATH"
    return code


@FUZZ
@given(report=CONTENT, overrides=CONTENT, config=CONTENT)
@example(report=b'{"student": 3}', overrides=b"- seed=1", config=b"a: 1")
@example(report=b"{}", overrides=b"a: &x [1]\nb: *x", config=b"- [")
def test_kd_report_exits_0_or_2_on_any_files(report, overrides, config):
    contents = {"report.json": report, ".hydra/overrides.yaml": overrides, "config.yaml": config}
    with tempfile.TemporaryDirectory() as scratch:
        assert run_report(Path(scratch), contents) in (0, 2)


def image_bytes(kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buffer, kind)
    return buffer.getvalue()


IMAGE_STARTS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"P6\n", b"II*\x00"]
WHOLE = [image_bytes(kind) for kind in ("PNG", "JPEG", "GIF", "BMP", "TIFF")]
IMAGES = st.one_of(
    st.builds(lambda start, rest: start + rest, st.sampled_from(IMAGE_STARTS), st.binary()),
    # a real image cut short, with junk after: headers that open, pixels that may not decode
    st.builds(
        lambda whole, cut, junk: whole[:cut] + junk,
        st.sampled_from(WHOLE),
        st.integers(0, 300),
        st.binary(max_size=16),
    ),
)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's "Corrupt EXIF data" and such
@FUZZ
@given(st.lists(IMAGES, min_size=1, max_size=3), st.sampled_from([".png", ".jpg", ".gif"]))
@example([bomb_png()], ".png")
@example([b"\x89PNG\r\n\x1a\n"], ".png")
def test_the_imagefolder_scanner_takes_any_bytes_or_refuses_them(contents, suffix):
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "given"
        write_small_imagefolder(root)
        for i, content in enumerate(contents):
            (root / "a" / f"fuzz{i}{suffix}").write_bytes(content)
        before = files_below(Path(scratch))
        folder = ImageFolder(str(root), image_size=8, channels=3, workers=0, test_fraction=0.5)
        try:
            data = folder.load()  # scans every header, decodes images for the statistics
            for _ in data.eval_loader("train", 4).epoch(0):  # decodes every training image
                pass
        except UserError:
            pass
        assert files_below(Path(scratch)) == before, "the scanner writes nothing"
