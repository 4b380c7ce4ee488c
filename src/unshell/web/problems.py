"""Errors as the web shows them: one line of JSON for the API, a page for people.

Unshell errors go through `errors.failure`, the mapping the CLI and the jobs use, so the JSON
carries the same one line and exit code the CLI would print; the HTTP status says which kind of
problem it is (`http_status`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    PathNotFoundError,
    ResourceLimitError,
    TensorNotFoundError,
    UnshellError,
    UsageError,
    failure,
    one_line,
)
from .jobs import QueueFull
from .paths import OutsideRootsError, PathRejected
from .rendering import page


class WebError(Exception):
    """An error a handler reports as ``status`` with a one-line message."""

    def __init__(self, message: str, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def http_status(exc: UnshellError) -> int:
    """The HTTP status for an unshell error (the JSON body carries its CLI exit code too)."""
    if isinstance(exc, OutsideRootsError):
        return 403
    if isinstance(exc, PathNotFoundError | TensorNotFoundError):
        return 404
    if isinstance(exc, ResourceLimitError):
        return 413
    if isinstance(exc, UsageError):
        return 400
    return 422  # the input is unusable: not a checkpoint, corrupt, unsafe pickle, missing extra...


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/openapi.json"


def error_response(
    request: Request,
    status: int,
    message: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    if wants_json(request):
        return JSONResponse({"error": message, **(extra or {})}, status_code=status, headers=headers)
    return page(request.app.state.web, "error.html", status, headers, message=message, status_code=status)


async def path_rejected(request: Request, exc: PathRejected) -> Response:
    return error_response(request, exc.status, str(exc))


async def web_error(request: Request, exc: WebError) -> Response:
    return error_response(request, exc.status, str(exc), headers=exc.headers)


async def queue_full(request: Request, exc: QueueFull) -> Response:
    return error_response(request, 429, str(exc), headers={"Retry-After": "5"})


async def unshell_error(request: Request, exc: UnshellError) -> Response:
    shown = failure(exc)
    extra = {"exit_code": shown.exit_code, "type": shown.error_type}
    return error_response(request, http_status(exc), shown.message, extra)


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    return error_response(
        request, exc.status_code, one_line(Exception(exc.detail)), headers=dict(exc.headers or {})
    )


async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query"))
    message = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid")
    return error_response(request, 422, message)


def install(app: FastAPI) -> None:
    """Every error a route can raise, answered as one line (JSON) or an error page."""
    handlers: dict[type[Exception], Any] = {
        PathRejected: path_rejected,
        WebError: web_error,
        QueueFull: queue_full,
        UnshellError: unshell_error,
        StarletteHTTPException: http_error,
        RequestValidationError: invalid_request,
    }
    for exc_class, handler in handlers.items():
        app.add_exception_handler(exc_class, handler)
