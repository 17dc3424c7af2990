"""Servers for the tests of `kd serve` and `teacher=endpoint`: a tiny GPT served in a thread of
the test's process (unit tests), or the real `kd serve` command in a subprocess on a free
loopback port (end-to-end tests). A module name no other test folder uses, like kd_settings."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import torch
import uvicorn
from kd_command import start_kd

from kdcli.data.text import Vocabulary
from kdcli.engine.batcher import Batcher
from kdcli.engine.completions import Served
from kdcli.engine.server import make_app
from kdcli.models.lm.gpt import GPT

LETTERS = " abcdefghijklmnopqrstuvwxyz"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tiny_gpt(vocabulary: int, context: int = 16, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(vocabulary, image_size=context, layers=1, heads=2, width=16, dropout=0.0).eval()


def tiny_served(
    characters: str = LETTERS, max_logprobs: int = 20, name: str = "tiny", wait_s: float = 0.002
) -> Served:
    """A tiny GPT over `characters`, behind a batcher."""
    model = tiny_gpt(len(characters))
    batcher = Batcher(model, torch.device("cpu"), max_batch=8, wait_s=wait_s)
    return Served(name, batcher, Vocabulary(characters), len(characters), 16, max_logprobs)


@contextlib.contextmanager
def serving(served: Served, api_key: str | None = None) -> Iterator[str]:
    """`served` at http://127.0.0.1:PORT/v1 (the URL yielded) while the block runs."""
    port = free_port()
    config = uvicorn.Config(
        make_app(served, api_key), host="127.0.0.1", port=port, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until_up(f"http://127.0.0.1:{port}", 20)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        served.batcher.close()


def wait_until_up(root: str, seconds: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server exited: {process.communicate()[1][-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{root}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"no server at {root} after {seconds} s")


@contextlib.contextmanager
def kd_serve(model: Path, *options: str, cwd: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """The real `kd serve MODEL OPTIONS` on a free loopback port: its /v1 URL and process,
    stopped after the block."""
    port = free_port()
    process = start_kd("serve", str(model), "--port", str(port), *options, cwd=cwd)
    try:
        wait_until_up(f"http://127.0.0.1:{port}", 60, process)
        yield f"http://127.0.0.1:{port}/v1", process
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
