"""What every request passes before a route sees it, and what every response carries.

The Host header must be a plain ``host[:port]`` the server was bound to (no DNS rebinding, no
userinfo); state-changing requests must come from this origin (no cross-site form posts: a POST
that shows neither an Origin nor a Sec-Fetch-Site header must carry JSON, which no page can send
cross-site without a CORS preflight this server never grants); bodies are bounded; every response
carries a Content-Security-Policy that allows no scripts and no external resources at all. Each
request is logged as one line (method, path, status, milliseconds) on the ``unshell.web.requests``
logger. Paths themselves are confined by `paths.Roots`, in the routes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

request_log = logging.getLogger("unshell.web.requests")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_BODY_BYTES = 64 * 1024
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
# Reports are built from names and metadata read out of untrusted files: no scripts, and a
# sandbox (an opaque origin) in case an escaping bug ever let markup through.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; sandbox"


def host_name(header: str) -> str | None:
    """The host of a Host header, lower case and without its port (IPv6 literals keep no
    brackets), or None unless the header is a plain ``host[:port]`` URL authority: no userinfo
    (``localhost:8000@evil.example`` names evil.example), path, query, spaces or bad port."""
    text = header.strip()
    if not text or any(ch in text for ch in "@/\\?#%") or any(ch.isspace() or ord(ch) < 32 for ch in text):
        return None
    try:
        authority = urlsplit(f"//{text}")
        _ = authority.port  # ValueError unless absent or 0-65535
    except ValueError:
        return None
    return authority.hostname or None


def allowed_host(name: str) -> str:
    """A host the operator allows, as `host_name` returns it."""
    return name.strip().strip("[]").lower()


def is_json(content_type: str | None) -> bool:
    """A JSON media type: one no web page can send to another origin without a CORS preflight."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def refusal(request: Request, allowed_hosts: frozenset[str] | None) -> Response | None:
    """The response that refuses ``request`` before any route runs, or None to let it through.
    ``allowed_hosts`` None: any Host (the operator bound to a wildcard address)."""
    headers = request.headers
    host = host_name(headers.get("host", ""))
    if host is None:
        return JSONResponse({"error": "malformed Host header"}, status_code=400)
    if allowed_hosts is not None and host not in allowed_hosts:
        return JSONResponse({"error": "unexpected Host header"}, status_code=421)
    if request.method in SAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site")
    origin = headers.get("origin")
    own = f"{request.url.scheme}://{headers.get('host', '')}".lower()
    if site in ("cross-site", "same-site") or (origin is not None and origin.lower() != own):
        return JSONResponse({"error": "cross-origin request refused"}, status_code=403)
    if origin is None and site is None and not is_json(headers.get("content-type")):
        message = "refused: a request that changes state must carry an Origin header, or a JSON body"
        return JSONResponse({"error": message}, status_code=403)
    length = headers.get("content-length")
    if length is None and headers.get("transfer-encoding"):
        return JSONResponse({"error": "a Content-Length is required"}, status_code=411)
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return JSONResponse({"error": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
    return None


def secure(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    # same-origin, not no-referrer: with no-referrer, browsers send "Origin: null" on form posts
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def install(app: FastAPI, allowed_hosts: frozenset[str] | None) -> None:
    """Guard, secure and log every request ``app`` receives."""

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500  # what the client gets if a route raises past the error handlers
        try:
            response = refusal(request, allowed_hosts) or await call_next(request)
            status = response.status_code
            return secure(response)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            request_log.info("%s %s %d %.1f ms", request.method, request.url.path, status, elapsed_ms)
