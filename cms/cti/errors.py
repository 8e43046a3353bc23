"""The JSON error shape of the CTI API and the middleware that guarantees it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from cms.events import JournalClosed

__all__ = ["ApiError", "error_middleware", "error_response", "journal_open"]

log = logging.getLogger("cms.cti")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    410: "gone",
    411: "length_required",
    413: "request_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "invalid_request",
    426: "upgrade_required",
    431: "headers_too_large",
}


class ApiError(Exception):
    """A request the API refuses: `status` (4xx), a stable `code` and a readable message."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra


@contextmanager
def journal_open() -> Iterator[None]:
    """Around a journal append or flush: a closed journal (shutdown) is 503 shutting_down."""
    try:
        yield
    except JournalClosed:
        raise ApiError(503, "shutting_down", "the server is shutting down") from None


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None, **extra: Any) -> web.Response:
    """`{"error": {"code", "message", ...extra}}` with `status`."""
    body = {"error": {"code": code, "message": message, **extra}}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                        headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes the JSON error shape; unexpected ones a logged 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items()
                   if k.lower() in ("allow", "www-authenticate", "retry-after")}
        return error_response(exc.status, _CODES.get(exc.status, "http_error"),
                              exc.reason or "error", headers)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("CTI request %s %s failed", request.method, request.path)
        return error_response(500, "internal_error", "the server failed to handle the request")
