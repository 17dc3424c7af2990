"""`kd serve` and `kd train teacher=endpoint` end to end: the real commands in subprocesses, the
server on a free loopback port. Distilling through the server stores the in-process teacher's
top-k (to bf16 rounding) and trains the same student; a killed labelling pass continues; a
server that does not fit exits 2 naming the key and the fix, before any labelling."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from kd_command import run_kd, start_kd
from kd_server import free_port, kd_serve
from kd_settings import TINY_INSTRUCT, TINY_LM

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny task=lm run with its teacher in process, and that teacher behind kd serve."""
    cwd = tmp_path_factory.mktemp("serve")
    result = run_kd("train", *TINY_LM, cwd=cwd)
    assert result.returncode == 0, result.stderr
    [model] = (cwd / "outputs" / "cache" / "teachers").glob("*/model.pt")
    with kd_serve(model, "--max-logprobs", "32", "--name", "shakespeare-gpt", cwd=cwd) as (url, _):
        yield cwd, result.report(), url


def endpoint(url: str) -> list[str]:
    return [*TINY_LM, "teacher=endpoint", f"teacher.url={url}", "teacher.model=shakespeare-gpt"]


def dense(store: Path, vocabulary: int) -> np.ndarray:
    """A store's top-k as probabilities over the vocabulary (the order of tied tokens aside)."""
    probs = np.load(store / "topk_probs.npy").astype(np.float32)
    classes = np.load(store / "topk_classes.npy").astype(np.int64)
    full = np.zeros((*probs.shape[:-1], vocabulary), dtype=np.float32)
    np.put_along_axis(full, classes, probs, axis=-1)
    return full


def test_distilling_through_the_server_continues_when_killed_and_matches_in_process(
    served, tmp_path
):
    """The labelling pass is killed (kill -9) while a slow server answers; the same command,
    run again against a server at another address, continues it. The store then holds the
    in-process teacher's top-k to bf16's rounding, and the student is the same."""
    cwd, in_process, fast_url = served
    [model] = (cwd / "outputs" / "cache" / "teachers").glob("*/model.pt")
    cache = {"KD_CACHE_DIR": str(cwd / "outputs" / "cache")}
    options = ["teacher.batch_size=4", "teacher.concurrency=1"]
    slow = ("--max-logprobs", "32", "--name", "shakespeare-gpt", "--batch-wait-ms", "150")
    with kd_serve(model, *slow, cwd=cwd) as (slow_url, _):
        run = start_kd("train", *endpoint(slow_url), *options, cwd=tmp_path, env=cache)
        progress = _wait_for(cwd / "outputs" / "cache" / "soft_labels", run)
        run.kill()  # in the middle of the labelling
        run.communicate()
    done = json.loads(progress.read_text())["done"]
    assert 0 < len(done) < 37, done  # 145 windows, 4 a request
    result = run_kd("train", *endpoint(fast_url), *options, cwd=tmp_path, env=cache)
    assert result.returncode == 0, result.stderr
    assert f"continuing: {4 * len(done)} of 145 rows were labelled before" in result.stderr
    assert not progress.exists()
    report = result.report()
    assert report["teacher"]["source"] == "endpoint"
    assert report["soft_labels"]["mode"] == "static" and report["soft_labels"]["topk"] == 32
    vocabulary = report["dataset"]["num_classes"]
    ours = dense(Path(report["soft_labels"]["path"]), vocabulary)
    theirs = dense(cwd / in_process["soft_labels"]["path"], vocabulary)  # relative to cwd
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=2**-8, atol=2**-14)  # bf16's rounding
    for metric in ("perplexity", "top1"):
        assert report["student"][metric] == pytest.approx(in_process["student"][metric], rel=1e-3)
    record = json.loads((result.runs()[0] / "teacher-endpoint.json").read_text())
    assert record["model"] == "shakespeare-gpt" and record["url"] == fast_url


def test_instruction_answers_the_server_writes_are_the_in_process_teachers(tmp_path):
    """task=instruct's sequence-level KD (soft_labels.mode=generate, greedy) through kd serve:
    the server writes the same answers as the teacher in process, and labels them alike."""
    settings = [*TINY_INSTRUCT, "soft_labels.topk=20"]
    in_process = run_kd("train", *settings, cwd=tmp_path)
    assert in_process.returncode == 0, in_process.stderr
    cache = tmp_path / "outputs" / "cache"
    [model] = (cache / "teachers").glob("*/model.pt")
    with kd_serve(model, "--name", "drills-gpt", cwd=tmp_path) as (url, _):
        served = ["teacher=endpoint", f"teacher.url={url}", "teacher.model=drills-gpt"]
        result = run_kd("train", *settings, *served, cwd=tmp_path / "endpoint",
                        env={"KD_CACHE_DIR": str(cache)})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "the server wrote" in result.stderr
    ours, theirs = result.report(), in_process.report()
    assert ours["soft_labels"]["mode"] == theirs["soft_labels"]["mode"] == "generate"
    stores = [Path(ours["soft_labels"]["path"]), tmp_path / theirs["soft_labels"]["path"]]
    windows = [np.load(store / "windows.npy") for store in stores]
    assert np.array_equal(*windows)  # the same greedy answers
    vocabulary = ours["dataset"]["num_classes"]
    np.testing.assert_allclose(*[dense(s, vocabulary) for s in stores], rtol=2**-8, atol=2**-14)
    assert ours["student"]["perplexity"] == pytest.approx(theirs["student"]["perplexity"], rel=1e-3)


def _wait_for(root: Path, process) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = list(root.glob("*/progress.json"))
        if found:
            return found[0]
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.02)
    raise AssertionError("no labelling progress within a minute")


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("dataset.max_chars=2000", "splits text into other tokens than the data's tokenizer"),
        ("soft_labels.topk=40", "no top-40 log-probabilities"),
    ],
)
def test_a_server_that_does_not_fit_exits_2_before_any_labelling(served, tmp_path, setting, says):
    _, _, url = served
    result = run_kd("train", *endpoint(url), setting, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and f"teacher.url={url}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs" / "cache" / "soft_labels").exists()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:{port}/v1", "no server answers there"),
        ("ftp://127.0.0.1/v1", "is not an http(s) address"),
    ],
)
def test_a_dead_server_or_a_bad_url_exits_2_naming_teacher_url(tmp_path, url, says):
    url = url.format(port=free_port())
    result = run_kd("train", *TINY_LM, "teacher=endpoint", f"teacher.url={url}",
                    "teacher.model=m", "teacher.retries=0", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"teacher.url={url}" in result.stderr.replace("'", "") and says in result.stderr
    assert not list(tmp_path.glob("outputs/**/report.json"))


def test_kd_serve_refuses_a_file_that_is_not_there(tmp_path):
    missing = run_kd("serve", str(tmp_path / "nothing.pt"), cwd=tmp_path)
    assert missing.returncode == 2 and "nothing.pt" in missing.stderr
