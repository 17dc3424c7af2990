"""The batcher of kd serve (kdcli/engine/batcher.py): sequences of several lengths from many
threads, batched with right padding, give what each gives alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from kd_server import tiny_gpt

from kdcli.engine.batcher import Batcher


def test_batched_sequences_of_other_lengths_get_their_own_log_probabilities():
    model = tiny_gpt(7)
    batcher = Batcher(model, torch.device("cpu"), max_batch=4, wait_s=0.05)
    sequences = [[1, 2, 3], [4], [5, 6, 0, 1, 2, 3], [2, 2], [6, 5, 4, 3, 2]]
    try:
        with ThreadPoolExecutor(5) as pool:  # arriving together: batched
            answers = list(pool.map(lambda s: batcher.log_probs([s])[0], sequences))
    finally:
        batcher.close()
    for sequence, answer in zip(sequences, answers, strict=True):
        with torch.no_grad():
            alone = torch.log_softmax(model(torch.tensor([sequence])), -1)[0]
        assert answer.shape == (len(sequence), 7)
        torch.testing.assert_close(answer, alone, atol=1e-5, rtol=1e-5)


def test_an_error_in_a_forward_pass_reaches_its_callers_and_the_batcher_lives_on():
    batcher = Batcher(tiny_gpt(7), torch.device("cpu"), max_batch=2, wait_s=0.001)
    try:
        with pytest.raises(IndexError):
            batcher.log_probs([[1, 99]])  # no such token
        assert batcher.log_probs([[1, 2]])[0].shape == (2, 7)
    finally:
        batcher.close()
