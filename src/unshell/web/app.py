"""The web application: server-rendered pages and a JSON API over unshell's library calls.

Every user-given path goes through `Roots.resolve` (see `paths`) before anything reads it; long
work (compare, audit, search) runs in a bounded `JobManager`; inspect (headers only) runs while
the request waits, at most a few at a time. Nothing here imports or runs code from model files: it
only calls `unshell.inspect`, `unshell.compare`, `unshell.audit` and `unshell.search` (`tasks`),
inside `paths.confined`.

Inspections and jobs run in child processes (`jobs.run_isolated`) under a time limit, and a job
can be cancelled; the confinement is entered in the child, where the files are read.

Other defences, all in `_guard`: the Host header must be a plain ``host[:port]`` the server was
bound to (no DNS rebinding, no userinfo), state-changing requests must come from this origin (no
cross-site form posts: a POST that shows neither an Origin nor a Sec-Fetch-Site header must carry
JSON, which no page can send cross-site without a CORS preflight this server never grants),
bodies are bounded, and every page carries a Content-Security-Policy that allows no scripts and
no external resources at all.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import anyio
import jinja2
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import (
    PathNotFoundError,
    ResourceLimitError,
    TensorNotFoundError,
    UnshellError,
    UsageError,
    one_line,
)
from . import tasks
from .jobs import DEFAULT_TIMEOUT_S, ChildFailed, Job, JobManager, QueueFull, run_isolated
from .paths import (
    MAX_PATH_CHARS,
    Entry,
    OutsideRootsError,
    PathRejected,
    Roots,
    find_checkpoints,
    list_directory,
)

log = logging.getLogger("unshell.web")

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
CHECKPOINT_CACHE_S = 10.0
LIBRARY_PAGE = 200
LIBRARY_MAX_OFFSET = 2**62  # SQLite integers are 64-bit; no library comes near this
CANCEL_WAIT_S = 5.0

PathText = Annotated[str, Field(max_length=MAX_PATH_CHARS + 1)]


class PathRef(BaseModel):
    """A path relative to root ``root`` (an index into ``GET /api/roots``)."""

    model_config = ConfigDict(extra="forbid")
    root: int = Field(0, ge=0, description="index of the served root")
    path: PathText = Field(..., description="path relative to that root ('' for the root itself)")


PathArg = Annotated[
    PathRef | PathText,
    Field(
        description="a path under a served root: {root, path}, or a string relative to root 0, or an "
        "absolute path inside a root"
    ),
]


class InspectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: PathArg
    tensors: bool = Field(False, description="include every tensor's role and reference name")


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: PathArg
    b: PathArg
    quick: bool = Field(False, description="as `unshell compare --quick`")


class AuditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: PathArg
    against: PathArg | None = Field(None, description="a base model to test the weights against")
    quick: bool = Field(False, description="compare weights as `compare --quick` does")
    library: bool = Field(
        False, description="without `against`: search the served fingerprint library for the weights' source"
    )


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: PathArg
    top: int = Field(5, ge=1, le=100, description="candidates returned, as `unshell search --top`")


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


def _host_name(header: str) -> str | None:
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


def _allowed_host(name: str) -> str:
    """A host the operator allows, as `_host_name` returns it."""
    return name.strip().strip("[]").lower()


def _is_json(content_type: str | None) -> bool:
    """A JSON media type: one no web page can send to another origin without a CORS preflight."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


@dataclass
class WebState:
    roots: Roots
    jobs: JobManager
    allowed_hosts: frozenset[str] | None  # None: any Host (the operator bound to a wildcard address)
    inspect_limiter: anyio.CapacityLimiter
    templates: jinja2.Environment
    library_path: Path
    _checkpoints: tuple[float, list[Entry]] | None = field(default=None)

    def checkpoints(self) -> list[Entry]:
        now = time.monotonic()
        if self._checkpoints is None or now - self._checkpoints[0] > CHECKPOINT_CACHE_S:
            self._checkpoints = (now, find_checkpoints(self.roots))
        return self._checkpoints[1]

    def absolute(self, entry: Entry) -> str:
        return (
            str(self.roots.paths[entry.root] / entry.path)
            if entry.path
            else str(self.roots.paths[entry.root])
        )

    def resolve(self, ref: PathRef | str) -> Path:
        if isinstance(ref, PathRef):
            return self.roots.resolve(ref.path, root=ref.root)
        return self.roots.resolve(ref)


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("unshell.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = _human_size
    env.filters["seconds"] = lambda s: f"{s:.1f} s" if s is not None else ""
    return env


def _human_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _summary_text(kind: str, doc: dict[str, Any]) -> str | None:
    """The CLI's table rendering of a result, or None (the JSON is always there)."""
    try:
        from ..report import text as text_report

        if kind == "compare":
            return str(text_report.render_compare(doc))
        if kind == "audit":
            return str(text_report.render_audit(doc))
        if kind == "inspect":
            return str(text_report.render_inspect(doc))
        if kind == "search":
            return str(text_report.render_search(doc))
    except Exception:  # a rendering nicety must not hide the result
        log.exception("could not render the %s summary", kind)
    return None


def headline(kind: str, doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The one thing a job page shows first: the verdict (compare) or level (audit)."""
    if not doc:
        return None
    if kind == "compare":
        if doc.get("kind") == "tokenizer-comparison":
            relation = doc.get("tokenizer") or {}
            return {"label": "tokenizer", "value": relation.get("relation"), "detail": relation.get("reason")}
        return {
            "label": "verdict",
            "value": doc.get("verdict"),
            "detail": doc.get("reason"),
            "p_value": doc.get("p_value"),
        }
    if kind == "search":
        candidates = doc.get("candidates") or []
        matches = [c for c in candidates if c.get("verdict") in ("identical", "derived")]
        if not matches:
            tested = doc.get("tested", 0)
            return {
                "label": "best match",
                "value": "none",
                "detail": f"no fingerprint in the library ({tested} tested in full) is this model's source",
            }
        best = matches[0]
        return {
            "label": "best match",
            "value": best.get("verdict"),
            "detail": f"{best.get('name')}: {best.get('reason')}",
            "p_value": best.get("p_adjusted"),
            "p_label": "Holm-adjusted over the library",
        }
    if kind == "audit":
        findings = doc.get("findings") or []
        return {
            "label": "level",
            "value": doc.get("level"),
            "detail": findings[0].get("message") if findings else None,
        }
    return None


def create_app(
    roots: Sequence[str | os.PathLike[str]],
    *,
    max_jobs: int = 2,
    max_queued: int = 8,
    allowed_hosts: Sequence[str] | None = tuple(LOOPBACK_HOSTS),
    library: str | os.PathLike[str] | None = None,
    job_timeout: float = DEFAULT_TIMEOUT_S,
) -> FastAPI:
    """The ASGI application serving ``roots``. ``allowed_hosts=None`` accepts any Host header.

    ``library`` is the fingerprint library the pages browse and `search` jobs use (default: the
    default library). It is the operator's file, opened read-only-ish: the UI never writes to it.
    ``job_timeout``: seconds an inspection or a job may run before its process is killed."""
    from ..library.store import default_library_path

    if max_jobs < 1:
        raise UsageError("max_jobs must be at least 1")
    if max_queued < 0:
        raise UsageError("max_queued must not be negative")
    if not 0 < job_timeout < float("inf"):
        raise UsageError("the job time limit must be a positive number of seconds")
    state = WebState(
        roots=Roots.from_paths(roots),
        jobs=JobManager(max_jobs=max_jobs, max_queued=max_queued, timeout_s=job_timeout),
        allowed_hosts=None if allowed_hosts is None else frozenset(_allowed_host(h) for h in allowed_hosts),
        inspect_limiter=anyio.CapacityLimiter(max(2, max_jobs)),
        templates=_templates(),
        library_path=Path(library).expanduser() if library is not None else default_library_path(),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.jobs.shutdown()

    app = FastAPI(
        title="unshell",
        version=__version__,
        description="Is this LLM checkpoint a shell of another one? inspect, compare and audit checkpoints "
        "under the served roots. Paths are relative to a root (`{root, path}` or a string relative to "
        "root 0) or absolute inside one; anything else is refused before it is read.",
        docs_url=None,  # the interactive docs load scripts from a CDN: not served
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.web = state

    # --- errors: one line of JSON for the API, a page for people ------------------------------

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
        return page("error.html", status=status, headers=headers, message=message, status_code=status)

    @app.exception_handler(PathRejected)
    async def _path_rejected(request: Request, exc: PathRejected) -> Response:
        return error_response(request, exc.status, str(exc))

    @app.exception_handler(WebError)
    async def _web_error(request: Request, exc: WebError) -> Response:
        return error_response(request, exc.status, str(exc), headers=exc.headers)

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull) -> Response:
        return error_response(request, 429, str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(UnshellError)
    async def _unshell_error(request: Request, exc: UnshellError) -> Response:
        extra = {"exit_code": exc.exit_code, "type": type(exc).__name__}
        return error_response(request, http_status(exc), one_line(exc), extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(
            request, exc.status_code, one_line(Exception(exc.detail)), headers=dict(exc.headers or {})
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query"))
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid")
        return error_response(request, 422, message)

    # --- guard: Host, origin, body size, security headers ---------------------------------------

    @app.middleware("http")
    async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        headers = request.headers
        host = _host_name(headers.get("host", ""))
        if host is None:
            return _secure(JSONResponse({"error": "malformed Host header"}, status_code=400), request)
        if state.allowed_hosts is not None and host not in state.allowed_hosts:
            return _secure(JSONResponse({"error": "unexpected Host header"}, status_code=421), request)
        if request.method not in SAFE_METHODS:
            site = headers.get("sec-fetch-site")
            origin = headers.get("origin")
            own = f"{request.url.scheme}://{headers.get('host', '')}".lower()
            if site in ("cross-site", "same-site") or (origin is not None and origin.lower() != own):
                return _secure(
                    JSONResponse({"error": "cross-origin request refused"}, status_code=403), request
                )
            if origin is None and site is None and not _is_json(headers.get("content-type")):
                message = "refused: a request that changes state must carry an Origin header, or a JSON body"
                return _secure(JSONResponse({"error": message}, status_code=403), request)
            length = headers.get("content-length")
            if length is None and headers.get("transfer-encoding"):
                return _secure(
                    JSONResponse({"error": "a Content-Length is required"}, status_code=411), request
                )
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                return _secure(
                    JSONResponse({"error": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413),
                    request,
                )
        return _secure(await call_next(request), request)

    def _secure(response: Response, request: Request) -> Response:
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        # same-origin, not no-referrer: with no-referrer, browsers send "Origin: null" on form posts
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # --- helpers ------------------------------------------------------------------------------

    def page(
        name: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
    ) -> HTMLResponse:
        context.setdefault("version", __version__)
        context.setdefault("roots", list(enumerate(state.roots.paths)))
        body = state.templates.get_template(name).render(**context)
        return HTMLResponse(body, status_code=status, headers=headers)

    async def resolve(ref: PathRef | str) -> Path:
        return await run_in_threadpool(state.resolve, ref)

    async def resolve_text(text: str, what: str) -> Path:
        text = text.strip()
        if not text:
            raise PathRejected(f"{what}: give a path")
        return await resolve(text)

    async def run_inspect(path: Path, tensors: bool) -> dict[str, Any]:
        """Inspect in a child process, under the job time limit (`ResourceLimitError`, 413, past it)."""
        work = functools.partial(tasks.inspect_task, state.roots, path, tensors)

        def isolated() -> dict[str, Any]:
            document: dict[str, Any] = run_isolated(work, timeout_s=state.jobs.timeout_s)
            return document

        try:
            return await anyio.to_thread.run_sync(isolated, limiter=state.inspect_limiter)
        except UnshellError:  # some are OSErrors too (PathNotFoundError): the handler maps them
            raise
        except MemoryError:
            raise WebError("out of memory while reading the input", 422) from None
        except OSError as exc:
            status = 403 if isinstance(exc, PermissionError) else 422
            raise WebError(f"cannot read input: {exc.strerror or exc}", status) from None
        except ChildFailed as exc:
            if exc.args and exc.args[0] == "ProcessDied":  # the kernel's OOM killer, most likely
                raise WebError(f"the inspection stopped: {exc.args[1]}", 422) from None
            raise

    def submit_compare(a: Path, b: Path, quick: bool) -> Job:
        work = functools.partial(tasks.compare_task, state.roots, a, b, quick)
        return state.jobs.submit("compare", {"a": str(a), "b": str(b), "quick": quick}, work)

    def submit_audit(path: Path, against: Path | None, quick: bool, use_library: bool = False) -> Job:
        if use_library and against is not None:
            raise WebError("give a base to test against or search the library, not both", 400)
        library = state.library_path if use_library else None
        work = functools.partial(tasks.audit_task, state.roots, path, against, quick, library)
        params = {
            "path": str(path),
            "against": None if against is None else str(against),
            "quick": quick,
            "library": use_library,
        }
        return state.jobs.submit("audit", params, work)

    def submit_search(path: Path, top: int) -> Job:
        work = functools.partial(tasks.search_task, state.roots, path, top, state.library_path)
        return state.jobs.submit("search", {"path": str(path), "top": top}, work)

    async def cancel_job(job: Job) -> bool:
        """Cancel ``job`` and wait (briefly) for it to end; 409 when it had already ended."""
        if not state.jobs.cancel(job):
            raise WebError(f"job {job.id} is {job.state}: nothing to cancel", 409)
        return await anyio.to_thread.run_sync(job.ended.wait, CANCEL_WAIT_S)

    def library_entries(
        query: str = "", family: str = "", limit: int = LIBRARY_PAGE, offset: int = 0
    ) -> dict[str, Any]:
        """The library's entries, filtered in SQL by a substring of the name and by family, one
        page at a time (a library can hold millions; no blob is read)."""
        from ..library import Library

        empty = {"library": str(state.library_path), "size": 0, "families": [], "matching": 0}
        if not state.library_path.is_file():
            return {**empty, "offset": offset, "entries": []}
        needle = query.strip()
        with Library(state.library_path) as library:
            return {
                "library": str(state.library_path),
                "size": len(library),
                "families": library.families(),
                "matching": library.count(contains=needle, family=family),
                "offset": offset,
                "entries": [
                    e.to_dict()
                    for e in library.list(contains=needle, family=family, limit=limit, offset=offset)
                ],
            }

    def library_model(name: str) -> dict[str, Any]:
        """One fingerprint: its summary and what it holds (hashes, sketched matrices, anchors)."""
        from ..library import Library

        if not state.library_path.is_file():
            raise WebError(f"the library holds no fingerprint named {name!r}", 404)
        with Library(state.library_path) as library:
            if name not in library:
                raise WebError(f"the library holds no fingerprint named {name!r}", 404)
            return library.describe(name)

    def job_or_404(job_id: str) -> Job:
        job = state.jobs.get(job_id)
        if job is None:
            raise WebError("no such job (unknown id, or forgotten after a restart)", 404)
        return job

    def job_doc(job: Job, include_result: bool = True) -> dict[str, Any]:
        return job.to_dict(position=state.jobs.position(job), include_result=include_result)

    def accepted(job: Job) -> JSONResponse:
        doc = job_doc(job, include_result=False)
        doc["url"] = f"/api/jobs/{job.id}"
        doc["page"] = f"/jobs/{job.id}"
        return JSONResponse(doc, status_code=202, headers={"Location": doc["url"]})

    def report_html(job: Job) -> str:
        if job.state != "done":
            raise WebError(
                f"job {job.id} is {job.state}: no report" + (f" ({job.error})" if job.error else ""), 409
            )
        if job.report_html is not None:
            return job.report_html
        try:
            from ..report import html as report_module

            renderers: dict[str, Callable[[Any], str]] = {
                "compare": report_module.compare_html,
                "audit": report_module.audit_html,
                "search": report_module.search_html,
            }
            render = renderers.get(job.kind)
        except (ImportError, AttributeError):
            render = None
        if render is not None:
            try:
                text = str(render(job.result))
            except Exception:  # fall back to the plain view rather than lose the result
                log.exception("the %s report of job %s could not be rendered", job.kind, job.id)
            else:
                job.report_html = text
                return text
        return state.templates.get_template("report_fallback.html").render(
            job=job, document=json.dumps(job.document, indent=2, sort_keys=False, default=str)
        )

    async def read_form(request: Request) -> dict[str, str]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise WebError("send the form as application/x-www-form-urlencoded", 415)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise WebError(f"request body over {MAX_BODY_BYTES} bytes", 413)
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=16)
        except (UnicodeDecodeError, ValueError):
            raise WebError("the form could not be decoded", 400) from None
        return {key: values[-1] for key, values in fields.items()}

    # --- JSON API -----------------------------------------------------------------------------

    @app.get("/api/roots", tags=["files"], summary="The served root directories")
    def api_roots() -> dict[str, Any]:
        return {
            "roots": [{"index": i, "path": str(p), "name": p.name} for i, p in enumerate(state.roots.paths)]
        }

    @app.get(
        "/api/files", tags=["files"], summary="List one directory under a root (checkpoints and folders)"
    )
    def api_files(
        root: Annotated[int, Query(ge=0, description="index of the served root")] = 0,
        path: Annotated[str, Query(max_length=MAX_PATH_CHARS + 1, description="relative to the root")] = "",
    ) -> dict[str, Any]:
        directory, entries, hidden = list_directory(state.roots, root, path)
        index, rel = state.roots.locate(directory)
        return {
            "root": index,
            "path": rel,
            "absolute": str(directory),
            "entries": [e.to_dict() for e in entries],
            "hidden": hidden,
        }

    @app.get("/api/checkpoints", tags=["files"], summary="Checkpoints and tokenizers found under the roots")
    def api_checkpoints() -> dict[str, Any]:
        return {"checkpoints": [{**e.to_dict(), "absolute": state.absolute(e)} for e in state.checkpoints()]}

    @app.get("/api/inspect", tags=["inspect"], summary="Inspect a checkpoint (headers only); the result")
    async def api_inspect_get(
        path: Annotated[str, Query(max_length=MAX_PATH_CHARS + 1)],
        root: Annotated[int | None, Query(ge=0)] = None,
        tensors: bool = False,
    ) -> dict[str, Any]:
        target = await resolve(PathRef(root=root, path=path) if root is not None else path)
        return await run_inspect(target, tensors)

    @app.post("/api/inspect", tags=["inspect"], summary="Inspect a checkpoint (headers only); the result")
    async def api_inspect(body: InspectRequest) -> dict[str, Any]:
        return await run_inspect(await resolve(body.path), body.tensors)

    @app.post(
        "/api/compare",
        tags=["jobs"],
        status_code=202,
        summary="Start a compare job (did B's weights come from A's?)",
        responses={202: {"description": "the job, queued"}, 429: {"description": "the queue is full"}},
    )
    async def api_compare(body: CompareRequest) -> JSONResponse:
        a, b = await resolve(body.a), await resolve(body.b)
        return accepted(submit_compare(a, b, body.quick))

    @app.post(
        "/api/audit",
        tags=["jobs"],
        status_code=202,
        summary="Start a disclosure audit job (detected lineage against declared)",
        responses={202: {"description": "the job, queued"}, 429: {"description": "the queue is full"}},
    )
    async def api_audit(body: AuditRequest) -> JSONResponse:
        path = await resolve(body.path)
        against = None if body.against is None else await resolve(body.against)
        return accepted(submit_audit(path, against, body.quick, body.library))

    @app.post(
        "/api/search",
        tags=["jobs", "library"],
        status_code=202,
        summary="Start a search job (which fingerprints in the library does this checkpoint come from?)",
        responses={202: {"description": "the job, queued"}, 429: {"description": "the queue is full"}},
    )
    async def api_search(body: SearchRequest) -> JSONResponse:
        return accepted(submit_search(await resolve(body.path), body.top))

    @app.get("/api/library", tags=["library"], summary="The fingerprint library's entries, filtered")
    async def api_library(
        q: Annotated[str, Query(max_length=512, description="a substring of the name")] = "",
        family: Annotated[str, Query(max_length=128)] = "",
        limit: Annotated[int, Query(ge=1, le=1000)] = LIBRARY_PAGE,
        offset: Annotated[int, Query(ge=0, le=LIBRARY_MAX_OFFSET)] = 0,
    ) -> dict[str, Any]:
        return await run_in_threadpool(library_entries, q, family, limit, offset)

    @app.get("/api/library/{name:path}", tags=["library"], summary="One fingerprint: summary and contents")
    async def api_library_model(name: str) -> dict[str, Any]:
        return await run_in_threadpool(library_model, name)

    @app.get("/api/jobs", tags=["jobs"], summary="Recent jobs and the pool's occupancy")
    async def api_jobs() -> dict[str, Any]:
        return {
            "jobs": [job_doc(job, include_result=False) for job in state.jobs.recent(50)],
            "counts": state.jobs.counts(),
            "max_jobs": state.jobs.max_jobs,
            "max_queued": state.jobs.max_queued,
        }

    @app.get("/api/jobs/{job_id}", tags=["jobs"], summary="A job's state, timings and, when done, its result")
    async def api_job(job_id: str) -> dict[str, Any]:
        return job_doc(job_or_404(job_id))

    @app.post(
        "/api/jobs/{job_id}/cancel",
        tags=["jobs"],
        summary="Cancel a queued or running job (its process is killed)",
        responses={
            200: {"description": "the job, cancelled"},
            202: {"description": "the job, still stopping"},
            409: {"description": "the job had already ended"},
        },
    )
    async def api_job_cancel(job_id: str) -> JSONResponse:
        job = job_or_404(job_id)
        ended = await cancel_job(job)
        return JSONResponse(job_doc(job, include_result=False), status_code=200 if ended else 202)

    @app.get("/api/jobs/{job_id}/result.json", tags=["jobs"], summary="Download a finished job's result")
    async def api_job_result(job_id: str) -> Response:
        job = job_or_404(job_id)
        if job.state != "done":
            raise WebError(f"job {job.id} is {job.state}: no result", 409)
        return JSONResponse(
            job.document,
            headers={"Content-Disposition": f'attachment; filename="unshell-{job.kind}-{job.id}.json"'},
        )

    @app.get(
        "/api/jobs/{job_id}/report.html",
        tags=["jobs"],
        summary="A finished job's self-contained HTML report",
        response_class=HTMLResponse,
    )
    async def api_job_report(job_id: str, download: bool = False) -> HTMLResponse:
        job = job_or_404(job_id)
        text = await run_in_threadpool(report_html, job)
        headers = {"Content-Security-Policy": REPORT_CSP}
        if download:
            headers["Content-Disposition"] = f'attachment; filename="unshell-{job.kind}-{job.id}.html"'
        return HTMLResponse(text, headers=headers)

    # --- pages --------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def home(
        a: str = "", b: str = "", path: str = "", against: str = "", inspect_path: str = ""
    ) -> HTMLResponse:
        checkpoints = [(e, state.absolute(e)) for e in state.checkpoints()]
        jobs = [(job, job.timings()) for job in state.jobs.recent(10)]
        return page(
            "home.html",
            checkpoints=checkpoints,
            jobs=jobs,
            counts=state.jobs.counts(),
            max_jobs=state.jobs.max_jobs,
            prefill={"a": a, "b": b, "path": path, "against": against, "inspect": inspect_path},
            headline=headline,
        )

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/browse", include_in_schema=False)
    async def browse_roots() -> RedirectResponse:
        return RedirectResponse("/browse/0/", status_code=303)

    @app.get("/browse/{root}/{path:path}", include_in_schema=False)
    def browse(root: int, path: str = "") -> HTMLResponse:
        directory, entries, hidden = list_directory(state.roots, root, path.strip("/"))
        crumbs: list[tuple[str, str]] = []
        parts = [p for p in path.strip("/").split("/") if p]
        for i, part in enumerate(parts):
            crumbs.append((part, "/".join(parts[: i + 1])))
        rows = [(e, str(directory / e.name)) for e in entries]
        return page(
            "browse.html",
            root=root,
            root_path=state.roots.paths[root],
            path=path.strip("/"),
            directory=directory,
            crumbs=crumbs,
            entries=rows,
            hidden=hidden,
        )

    @app.get("/inspect", include_in_schema=False)
    async def inspect_page(
        path: str = "", root: Annotated[int | None, Query(ge=0)] = None, tensors: bool = False
    ) -> HTMLResponse:
        if root is not None:
            target = await resolve(PathRef(root=root, path=path))
        else:
            target = await resolve_text(path, "inspect")
        doc = await run_inspect(target, tensors)
        return page(
            "inspect.html",
            target=str(target),
            document=doc,
            summary=_summary_text("inspect", doc),
            json_text=json.dumps(doc, indent=2, default=str),
        )

    @app.post("/compare", include_in_schema=False)
    async def compare_form(request: Request) -> RedirectResponse:
        form = await read_form(request)
        a = await resolve_text(form.get("a", ""), "A")
        b = await resolve_text(form.get("b", ""), "B")
        job = submit_compare(a, b, quick=form.get("quick") in ("on", "1", "true"))
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    @app.post("/audit", include_in_schema=False)
    async def audit_form(request: Request) -> RedirectResponse:
        form = await read_form(request)
        path = await resolve_text(form.get("path", ""), "audit")
        against_text = form.get("against", "").strip()
        against = await resolve_text(against_text, "against") if against_text else None
        job = submit_audit(
            path,
            against,
            quick=form.get("quick") in ("on", "1", "true"),
            use_library=form.get("library") in ("on", "1", "true"),
        )
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    @app.post("/search", include_in_schema=False)
    async def search_form(request: Request) -> RedirectResponse:
        form = await read_form(request)
        path = await resolve_text(form.get("path", ""), "search")
        try:
            top = min(max(int(form.get("top", "5") or 5), 1), 100)
        except ValueError:
            raise WebError("top: give a whole number", 400) from None
        job = submit_search(path, top)
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    @app.get("/library", include_in_schema=False)
    async def library_page(
        q: str = "", family: str = "", offset: Annotated[int, Query(le=LIBRARY_MAX_OFFSET)] = 0
    ) -> HTMLResponse:
        doc = await run_in_threadpool(library_entries, q[:512], family[:128], LIBRARY_PAGE, max(offset, 0))
        checkpoints = [(e, state.absolute(e)) for e in state.checkpoints()]
        return page("library.html", doc=doc, q=q, family=family, checkpoints=checkpoints, page=LIBRARY_PAGE)

    @app.get("/library/{name:path}", include_in_schema=False)
    async def library_model_page(name: str) -> HTMLResponse:
        model = await run_in_threadpool(library_model, name)
        return page("library_model.html", model=model)

    @app.post("/jobs/{job_id}/cancel", include_in_schema=False)
    async def cancel_form(job_id: str) -> RedirectResponse:
        await cancel_job(job_or_404(job_id))
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    @app.get("/jobs/{job_id}", include_in_schema=False)
    async def job_page(job_id: str) -> HTMLResponse:
        job = job_or_404(job_id)
        doc = job.document if job.state == "done" else None
        return page(
            "job.html",
            job=job,
            timings=job.timings(),
            position=state.jobs.position(job),
            head=headline(job.kind, doc),
            summary=_summary_text(job.kind, doc) if doc else None,
        )

    return app
