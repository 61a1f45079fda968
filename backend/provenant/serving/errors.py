"""Every failure as an OpenAI-style error body with a clear status; nothing crashes the server.

Messages come from our own exceptions, which never carry keys or tokens; unexpected exceptions
answer with a generic 500 (their text could hold anything) and are logged by type only.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from provenant.factory.base_models import BaseModelError
from provenant.payments.vouchers import PaymentRequired
from provenant.serving.adapter_cache import AdapterBusy, AdapterCacheFull
from provenant.serving.limits import RateLimited
from provenant.serving.lora import AdapterFormatError
from provenant.serving.models import ModelIntegrityError
from provenant.serving.service import LimitExceeded, UnknownModel, WrongTask
from provenant.store.blockstore import ContentError

log = logging.getLogger("provenant.serving")

_STATUS: list[tuple[type[BaseException], int, str]] = [
    (UnknownModel, 404, "model_not_found"),
    (PaymentRequired, 402, "payment_required"),
    (RateLimited, 429, "rate_limit_exceeded"),
    (WrongTask, 400, "invalid_request_error"),
    (LimitExceeded, 400, "invalid_request_error"),
    (AdapterBusy, 409, "conflict"),
    (AdapterCacheFull, 503, "server_busy"),
    (ModelIntegrityError, 502, "model_integrity_error"),
    (AdapterFormatError, 502, "model_integrity_error"),
    (ContentError, 502, "content_unavailable"),
    (BaseModelError, 502, "model_unavailable"),
]


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            return status, {"error": {"message": str(exc), "type": code, "code": code}}
    log.error("unexpected %s while serving", type(exc).__name__)
    return 500, {"error": {"message": "internal error", "type": "internal_error", "code": "internal_error"}}


def install_serving_error_handlers(app: FastAPI) -> None:
    """Only the serving layer's own errors (402, 404 model, 429, ...), for an app whose generic
    handlers are its own (the backend's)."""

    async def _known(request: Request, exc: Exception) -> JSONResponse:
        status, body = error_body(exc)
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if isinstance(exc, RateLimited) else None
        return JSONResponse(body, status_code=status, headers=headers)

    for kind, _, _ in _STATUS:
        app.add_exception_handler(kind, _known)  # type: ignore[arg-type]


def install_error_handlers(app: FastAPI, max_body_bytes: int) -> None:
    known = tuple(kind for kind, _, _ in _STATUS)

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> JSONResponse:
        status, body = error_body(exc)
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if isinstance(exc, RateLimited) else None
        return JSONResponse(body, status_code=status, headers=headers)

    for kind in known:
        app.add_exception_handler(kind, _any)  # type: ignore[arg-type]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"invalid request: {where or 'body'}: {first.get('msg', 'malformed')}"
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                       "code": "invalid_request_error"}}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": {"message": str(exc.detail), "type": "http_error", "code": exc.status_code}},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return JSONResponse({"error": {"message": f"request body over {max_body_bytes} bytes",
                                           "type": "invalid_request_error", "code": "request_too_large"}},
                                status_code=413)
        if length is None and request.method == "POST" and request.headers.get("transfer-encoding"):
            return JSONResponse({"error": {"message": "send a Content-Length (chunked bodies are refused)",
                                           "type": "invalid_request_error", "code": "length_required"}},
                                status_code=411)
        return await call_next(request)
