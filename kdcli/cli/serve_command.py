"""`kd serve MODEL [--port N] [--host H] [KEY=VALUE ...]`: a language model behind the subset of
the OpenAI completions API that `teacher=endpoint` reads (kdcli/engine/completions.py), so one
machine can label for many students (docs/serving.md)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from kdcli.errors import UserError

log = logging.getLogger(__name__)


def add_serve_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve a language model (kdcli model file, run's teacher, Hugging Face directory) "
        "with the OpenAI completions API, for teacher=endpoint",
        description="Serve MODEL at http://HOST:PORT/v1 (/v1/models, /v1/completions with echo "
        "and logprobs, /tokenize): a kdcli model file (student.pt, a cache entry's model.pt; "
        "rebuilt on the dataset it was trained on, whose vocabulary is its tokenizer), a run "
        "directory (its teacher) or a local Hugging Face model directory. Requests that arrive "
        "together run as one batch. Needs `pip install 'kdcli[serve]'`.",
    )
    parser.add_argument("model", type=Path, metavar="MODEL")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="for a kdcli model file: dataset=..., dataset.<key>=... (as kd eval)",
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--name", help="the model's id in /v1/models (default: its config name)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--max-logprobs", type=int, default=20,
        help="the most top log-probabilities a request may ask for (default 20, as vLLM)",
    )  # fmt: skip
    parser.add_argument("--max-batch", type=int, default=32, help="sequences per forward pass")
    parser.add_argument(
        "--batch-wait-ms", type=float, default=5.0,
        help="how long a forward pass waits for more requests to batch with (default 5 ms)",
    )  # fmt: skip
    parser.add_argument(
        "--api-key-env", metavar="NAME",
        help="require `Authorization: Bearer $NAME` (the key is read from that variable)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from kdcli.config.serve_model import load_served
    from kdcli.engine.batcher import Batcher
    from kdcli.engine.completions import Served
    from kdcli.engine.server import fastapi_module, make_app

    fastapi_module()  # the extra is there, before a model is loaded
    uvicorn = _uvicorn()
    _check(args)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise UserError(
                f"--api-key-env {args.api_key_env}: that environment variable is not set; "
                "export it, or leave the option out."
            )
    loaded = load_served(args.model, args.overrides, args.device)
    batcher = Batcher(loaded.module, loaded.device, args.max_batch, args.batch_wait_ms / 1000)
    served = Served(
        args.name or loaded.name,
        batcher,
        loaded.tokenizer,
        loaded.vocabulary,
        loaded.context,
        args.max_logprobs,
        loaded.eos,
    )
    print(
        f"kd serve: {served.name} ({loaded.vocabulary} tokens, context {loaded.context}) at "
        f"http://{args.host}:{args.port}/v1",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(make_app(served, api_key), host=args.host, port=args.port, log_level="warning")
    finally:
        batcher.close()
    return 0


def _check(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: a port is 1 to 65535.")
    for name, value in (("--max-logprobs", args.max_logprobs), ("--max-batch", args.max_batch)):
        if value < 1:
            raise UserError(f"{name} {value}: must be 1 or more.")
    if args.batch_wait_ms < 0:
        raise UserError(f"--batch-wait-ms {args.batch_wait_ms}: must be 0 or more.")
    for override in args.overrides:
        if "=" not in override:
            raise UserError(f"kd serve {override}: expected KEY=VALUE, e.g. dataset=shakespeare.")


def _uvicorn():
    try:
        import uvicorn
    except ImportError:
        raise UserError("kd serve needs uvicorn: pip install 'kdcli[serve]'.") from None
    return uvicorn
