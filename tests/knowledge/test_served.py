"""Top-k soft labels read from a server (kdcli/knowledge/served.py): the store's format, a
build killed mid-way continues with the requests it had not finished, and the server's
writing for `generate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from kd_server import LETTERS, serving, tiny_served

from kdcli.knowledge.format import read_store
from kdcli.knowledge.served import PROGRESS, generate_served, write_served
from kdcli.models.lm.endpoint import EndpointLM

ROWS = torch.randint(0, len(LETTERS), (11, 6), generator=torch.Generator().manual_seed(0))


class Killed(Exception):
    """Stands for a kill -9 in the middle of the labelling."""


class Asks(EndpointLM):
    """Records the requests it makes; with `kill_after`, stops after that many answers."""

    kill_after: int | None = None

    def top_k_batches(self, rows, k, starts):
        self.asked = list(starts)
        for count, item in enumerate(super().top_k_batches(rows, k, starts)):
            if count == self.kill_after:
                raise Killed
            yield item


@pytest.fixture(scope="module")
def url():
    with serving(tiny_served()) as url:
        yield url


def teacher(url: str, kill_after: int | None = None) -> Asks:
    module = Asks(url, "tiny", len(LETTERS), batch_size=2, concurrency=1, retries=0)
    module.kill_after = kill_after
    return module


def test_the_store_holds_the_servers_top_k_in_the_stores_format(url, tmp_path):
    fields, resumed = write_served(tmp_path, teacher(url), ROWS, 4, np.dtype("float16"))
    assert resumed == 0 and fields["mode"] == "static" and fields["topk"] == 4
    store = read_store(tmp_path, fields, len(ROWS), len(LETTERS), (), torch.device("cpu"))
    logits = store.soft_labels.logits(0, torch.arange(len(ROWS)))
    assert logits.shape == (11, 6, len(LETTERS))
    probs = torch.softmax(logits, -1)
    assert torch.allclose(probs.sum(-1), torch.ones(11, 6), atol=1e-3)


def test_a_killed_build_continues_with_the_requests_left(url, tmp_path):
    whole = tmp_path / "whole"
    whole.mkdir()
    write_served(whole, teacher(url), ROWS, 4, np.dtype("float16"))
    entry, progress = tmp_path / "entry", tmp_path / "entry.partial"
    entry.mkdir()
    with pytest.raises(Killed):
        write_served(entry, teacher(url, kill_after=2), ROWS, 4, np.dtype("float16"), progress)
    assert json.loads((progress / PROGRESS).read_text())["done"] == [0, 2]
    assert not list(entry.iterdir())
    again = teacher(url)
    _, resumed = write_served(entry, again, ROWS, 4, np.dtype("float16"), progress)
    assert again.asked == [4, 6, 8, 10] and resumed == 4
    assert not progress.exists()
    for name in ("topk_probs.npy", "topk_classes.npy"):
        assert np.array_equal(np.load(entry / name), np.load(whole / name))


def test_progress_of_other_rows_is_not_reused(url, tmp_path):
    progress = tmp_path / "partial"
    with pytest.raises(Killed):
        write_served(tmp_path, teacher(url, 1), ROWS, 4, np.dtype("float16"), progress)
    again = teacher(url)
    write_served(tmp_path, again, ROWS.flip(0), 4, np.dtype("float16"), progress)
    assert again.asked == [0, 2, 4, 6, 8, 10]


def test_the_server_writes_after_each_prompt_and_stops_at_the_end_token(url):
    windows = ROWS[:3, :6].clone()
    written = generate_served(teacher(url), windows, torch.tensor([2, 3, 4]), 0.0, 0)
    assert written.shape == windows.shape
    for row, prompt in enumerate((2, 3, 4)):
        assert torch.equal(written[row, :prompt], windows[row, :prompt])
    stop = int(written[0, 2])  # the first token it writes after row 0's prompt, as the end
    ended = generate_served(teacher(url), windows, 2, 0.0, 0, stop=stop, pad=0)
    assert ended[0, 2] == stop and (ended[0, 3:] == 0).all()
