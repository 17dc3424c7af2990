"""`kd serve`'s HTTP application (FastAPI, run by uvicorn; the `serve` extra): `/v1/models`,
`/v1/completions`, `/tokenize` (also under `/v1/`) and `/health`, answered by
kdcli/engine/completions.py. With an API key, every route but `/health` wants
`Authorization: Bearer KEY`.

No `from __future__ import annotations` here: FastAPI reads the routes' annotations
(`Request`) when they are defined."""

import hmac
from typing import Any

from kdcli.engine.completions import BadRequest, Served, complete, models, tokenize
from kdcli.errors import UserError


def fastapi_module() -> Any:
    try:
        import fastapi
    except ImportError:
        raise UserError("kd serve needs FastAPI and uvicorn: pip install 'kdcli[serve]'.") from None
    return fastapi


def make_app(served: Served, api_key: str | None = None) -> Any:
    """The FastAPI application serving `served`."""
    fastapi = fastapi_module()
    from fastapi import Request
    from fastapi.responses import JSONResponse

    app = fastapi.FastAPI(title="kd serve", docs_url=None, redoc_url=None, openapi_url=None)

    def error(status: int, message: str, kind: str) -> JSONResponse:
        body = {"error": {"message": message, "type": kind, "code": status}, "object": "error"}
        return JSONResponse(body, status_code=status)

    @app.middleware("http")
    async def check_key(request: Any, call_next: Any) -> Any:
        if api_key is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return error(401, "a wrong or missing API key", "authentication_error")
        return await call_next(request)

    async def body_of(request: Any) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest("the body is not JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the body is not a JSON object")
        return body

    @app.exception_handler(BadRequest)
    async def bad_request(request: Any, problem: BadRequest) -> JSONResponse:
        return error(400, str(problem), "invalid_request_error")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return models(served)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await body_of(request)
        # the model runs in the batcher's thread; this waits without holding the event loop
        return await fastapi.concurrency.run_in_threadpool(complete, served, body)

    @app.post("/tokenize")
    @app.post("/v1/tokenize")
    async def tokens(request: Request) -> Any:
        return tokenize(served, await body_of(request))

    return app
