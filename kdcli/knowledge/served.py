"""Top-k soft labels read from an inference server (`teacher=endpoint`), written in the store's
own format (kdcli/knowledge/format.py: `topk_probs.npy`, `topk_classes.npy` [N, T, k], and
`windows.npy` for `generate`).

The server's answers arrive a request at a time (`teacher.batch_size` rows each,
`teacher.concurrency` in flight). With `progress` (a directory in the cache's building area,
which a killed build leaves behind) the arrays are filled there and, after each answer, the
requests done are recorded atomically, so the same command run again asks only for the rest;
the finished arrays then move into the entry's directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdcli.errors import RunError
from kdcli.knowledge.format import (
    PROGRESS,
    WINDOWS,
    index_dtype,
    manifest_fields,
    resumed_progress,
)
from kdcli.models.lm.endpoint import EndpointLM
from kdcli.store.atomic import write_json_atomic

log = logging.getLogger(__name__)


def write_served(
    directory: Path,
    module: EndpointLM,
    rows: torch.Tensor,
    k: int,
    dtype: np.dtype,
    progress: Path | None = None,
    windows: torch.Tensor | None = None,
) -> tuple[dict[str, Any], int]:
    """The server's top-k after every position of each of `rows` [N, T] (the model's inputs,
    in training-split order) stored in `directory`; `windows` (generate) stored beside them.
    Returns the store's manifest fields and how many rows an earlier, killed build had
    already stored."""
    rows = rows.cpu().long()
    count, length = rows.shape
    shape = [count, length, k]
    dtypes = {"topk_probs": dtype, "topk_classes": index_dtype(module.vocabulary)}
    plan = {
        "shape": shape,
        "dtypes": {name: np.dtype(kind).str for name, kind in dtypes.items()},
        "rows": hashlib.sha256(rows.numpy().tobytes()).hexdigest(),
        "batch_size": module.batch_size,
    }
    work = progress or directory
    done = _done(progress, plan) if progress is not None else None
    mode = "r+" if done is not None else "w+"
    if done is None:
        work.mkdir(parents=True, exist_ok=True)
        done = set()
    arrays = {
        name: np.lib.format.open_memmap(
            work / f"{name}.npy", mode=mode, dtype=kind, shape=tuple(shape)
        )
        for name, kind in dtypes.items()
    }
    resumed = sum(min(module.batch_size, count - start) for start in done)
    if resumed:
        log.info("soft labels  continuing: %d of %d rows were labelled before", resumed, count)
    starts = [s for s in range(0, count, module.batch_size) if s not in done]
    for start, answers in module.top_k_batches(rows.tolist(), k, starts):
        probs = np.stack([a[0] for a in answers])
        ids = np.stack([a[1] for a in answers])
        _check(module, probs, ids, start)
        arrays["topk_probs"][start : start + len(answers)] = probs.astype(dtype)
        arrays["topk_classes"][start : start + len(answers)] = ids.astype(dtypes["topk_classes"])
        done.add(start)
        if progress is not None:
            for array in arrays.values():
                array.flush()
            write_json_atomic(progress / PROGRESS, {**plan, "done": sorted(done)})
    for array in arrays.values():
        array.flush()
    arrays.clear()  # close the memory maps before the files move
    if progress is not None:
        for name in dtypes:
            os.replace(progress / f"{name}.npy", directory / f"{name}.npy")
        shutil.rmtree(progress, ignore_errors=True)
    if windows is not None:
        np.save(directory / WINDOWS, windows.cpu().numpy().astype(np.int32), allow_pickle=False)
    mode_name = "static" if windows is None else "generate"
    return manifest_fields(mode_name, k, dtype, 0, {}, {}), resumed


def _check(module: EndpointLM, probs: np.ndarray, ids: np.ndarray, start: int) -> None:
    """The server's answer is a distribution over the data's vocabulary."""
    where = f"teacher.url={module.connection.url} (teacher.model={module.connection.model})"
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs.sum(-1) > 1.001).any():
        raise RunError(
            f"{where} returned log-probabilities that are no distribution for rows {start}+ "
            "(NaN, or top-k summing past 1); the server's model cannot teach as it is."
        )
    if (ids < 0).any() or (ids >= module.vocabulary).any():
        raise RunError(
            f"{where} named token {int(ids.max())}, beyond the data's {module.vocabulary} "
            "tokens: serve the teacher with the data's tokenizer (dataset.tokenizer)."
        )


def _done(progress: Path, plan: dict[str, Any]) -> set[int] | None:
    """The requests an earlier, killed build of the same store finished (None: start afresh)."""
    return resumed_progress(
        progress, plan, "soft labels", lambda record: {int(start) for start in record["done"]}
    )


def generate_served(
    module: EndpointLM,
    windows: torch.Tensor,
    prompt: int | torch.Tensor,
    temperature: float,
    seed: int,
    stop: int | None = None,
    pad: int = 0,
) -> torch.Tensor:
    """`soft_labels.mode=generate` through the server: token sequences [N, T + 1] whose first
    `prompt` tokens (one length, or one per sequence) are those of `windows` and whose rest
    the server wrote (at `temperature`, seeded by `seed` and the row), ending at `stop` when
    given; what follows is `pad`."""
    total = windows.shape[1]
    prompts = torch.full((len(windows),), prompt) if isinstance(prompt, int) else prompt.cpu()
    rows = [windows[i, : int(p)].tolist() for i, p in enumerate(prompts)]
    most = max(total - int(prompts.min()), 1)
    answers = module.write(rows, most, temperature, seed, stop)
    written = torch.full_like(windows, pad).cpu()
    for i, (row, answer) in enumerate(zip(rows, answers, strict=True)):
        answer = answer[: total - len(row)]
        if stop is not None and stop not in answer and len(row) + len(answer) < total:
            answer.append(stop)
        written[i, : len(row) + len(answer)] = torch.tensor(row + answer, dtype=torch.long)
    return written.to(windows.device)
