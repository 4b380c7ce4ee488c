"""Long work (compare, audit, search) as jobs in the bounded pool: start one (API or form), watch
it, cancel it, read its result and its report."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import tasks
from ..guard import REPORT_CSP
from ..inputs import AuditRequest, CompareRequest, SearchRequest, checked, read_form, top_count
from ..jobs import Job
from ..problems import WebError
from ..rendering import headline, page, summary_text
from ..state import StateDep, WebState

log = logging.getLogger("unshell.web")
router = APIRouter()

CANCEL_WAIT_S = 5.0
QUEUED: dict[int | str, dict[str, Any]] = {
    202: {"description": "the job, queued"},
    429: {"description": "the queue is full"},
}


def submit_compare(state: WebState, a: Path, b: Path, quick: bool) -> Job:
    work = functools.partial(tasks.compare_task, state.roots, a, b, quick)
    return state.jobs.submit("compare", {"a": str(a), "b": str(b), "quick": quick}, work)


def submit_audit(state: WebState, path: Path, against: Path | None, quick: bool, use_library: bool) -> Job:
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


def submit_search(state: WebState, path: Path, top: int) -> Job:
    work = functools.partial(tasks.search_task, state.roots, path, top, state.library_path)
    return state.jobs.submit("search", {"path": str(path), "top": top}, work)


async def cancel_job(state: WebState, job: Job) -> bool:
    """Cancel ``job`` and wait (briefly) for it to end; 409 when it had already ended."""
    if not state.jobs.cancel(job):
        raise WebError(f"job {job.id} is {job.state}: nothing to cancel", 409)
    return await anyio.to_thread.run_sync(job.ended.wait, CANCEL_WAIT_S)


def accepted(state: WebState, job: Job) -> JSONResponse:
    doc = state.job_doc(job, include_result=False)
    doc["url"] = f"/api/jobs/{job.id}"
    doc["page"] = f"/jobs/{job.id}"
    return JSONResponse(doc, status_code=202, headers={"Location": doc["url"]})


def _report_renderer(kind: str) -> Callable[[Any], str] | None:
    try:
        from ...report import html as report_module

        renderers: dict[str, Callable[[Any], str]] = {
            "compare": report_module.compare_html,
            "audit": report_module.audit_html,
            "search": report_module.search_html,
        }
    except (ImportError, AttributeError):
        return None
    return renderers.get(kind)


def report_html(state: WebState, job: Job) -> str:
    """The job's HTML report (rendered once), or its JSON in a plain page if that fails."""
    if job.state != "done":
        raise WebError(
            f"job {job.id} is {job.state}: no report" + (f" ({job.error})" if job.error else ""), 409
        )
    if job.report_html is not None:
        return job.report_html
    render = _report_renderer(job.kind)
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


# --- JSON API -------------------------------------------------------------------------------------


@router.post(
    "/api/compare",
    tags=["jobs"],
    status_code=202,
    summary="Start a compare job (did B's weights come from A's?)",
    responses=QUEUED,
)
async def api_compare(state: StateDep, body: CompareRequest) -> JSONResponse:
    a, b = await state.resolve(body.a), await state.resolve(body.b)
    return accepted(state, submit_compare(state, a, b, body.quick))


@router.post(
    "/api/audit",
    tags=["jobs"],
    status_code=202,
    summary="Start a disclosure audit job (detected lineage against declared)",
    responses=QUEUED,
)
async def api_audit(state: StateDep, body: AuditRequest) -> JSONResponse:
    path = await state.resolve(body.path)
    against = None if body.against is None else await state.resolve(body.against)
    return accepted(state, submit_audit(state, path, against, body.quick, body.library))


@router.post(
    "/api/search",
    tags=["jobs", "library"],
    status_code=202,
    summary="Start a search job (which fingerprints in the library does this checkpoint come from?)",
    responses=QUEUED,
)
async def api_search(state: StateDep, body: SearchRequest) -> JSONResponse:
    return accepted(state, submit_search(state, await state.resolve(body.path), body.top))


@router.get("/api/jobs", tags=["jobs"], summary="Recent jobs and the pool's occupancy")
async def api_jobs(state: StateDep) -> dict[str, Any]:
    return {
        "jobs": [state.job_doc(job, include_result=False) for job in state.jobs.recent(50)],
        "counts": state.jobs.counts(),
        "max_jobs": state.jobs.max_jobs,
        "max_queued": state.jobs.max_queued,
    }


@router.get("/api/jobs/{job_id}", tags=["jobs"], summary="A job's state, timings and, when done, its result")
async def api_job(state: StateDep, job_id: str) -> dict[str, Any]:
    return state.job_doc(state.job(job_id))


@router.post(
    "/api/jobs/{job_id}/cancel",
    tags=["jobs"],
    summary="Cancel a queued or running job (its process is killed)",
    responses={
        200: {"description": "the job, cancelled"},
        202: {"description": "the job, still stopping"},
        409: {"description": "the job had already ended"},
    },
)
async def api_job_cancel(state: StateDep, job_id: str) -> JSONResponse:
    job = state.job(job_id)
    ended = await cancel_job(state, job)
    return JSONResponse(state.job_doc(job, include_result=False), status_code=200 if ended else 202)


@router.get("/api/jobs/{job_id}/result.json", tags=["jobs"], summary="Download a finished job's result")
async def api_job_result(state: StateDep, job_id: str) -> Response:
    job = state.job(job_id)
    if job.state != "done":
        raise WebError(f"job {job.id} is {job.state}: no result", 409)
    return JSONResponse(
        job.document,
        headers={"Content-Disposition": f'attachment; filename="unshell-{job.kind}-{job.id}.json"'},
    )


@router.get(
    "/api/jobs/{job_id}/report.html",
    tags=["jobs"],
    summary="A finished job's self-contained HTML report",
    response_class=HTMLResponse,
)
async def api_job_report(state: StateDep, job_id: str, download: bool = False) -> HTMLResponse:
    job = state.job(job_id)
    text = await run_in_threadpool(report_html, state, job)
    headers = {"Content-Security-Policy": REPORT_CSP}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="unshell-{job.kind}-{job.id}.html"'
    return HTMLResponse(text, headers=headers)


# --- pages ----------------------------------------------------------------------------------------


def _to_job_page(job: Job) -> RedirectResponse:
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/compare", include_in_schema=False)
async def compare_form(state: StateDep, request: Request) -> RedirectResponse:
    form = await read_form(request)
    a = await state.resolve_text(form.get("a", ""), "A")
    b = await state.resolve_text(form.get("b", ""), "B")
    return _to_job_page(submit_compare(state, a, b, quick=checked(form, "quick")))


@router.post("/audit", include_in_schema=False)
async def audit_form(state: StateDep, request: Request) -> RedirectResponse:
    form = await read_form(request)
    path = await state.resolve_text(form.get("path", ""), "audit")
    against_text = form.get("against", "").strip()
    against = await state.resolve_text(against_text, "against") if against_text else None
    job = submit_audit(state, path, against, checked(form, "quick"), checked(form, "library"))
    return _to_job_page(job)


@router.post("/search", include_in_schema=False)
async def search_form(state: StateDep, request: Request) -> RedirectResponse:
    form = await read_form(request)
    path = await state.resolve_text(form.get("path", ""), "search")
    return _to_job_page(submit_search(state, path, top_count(form)))


@router.post("/jobs/{job_id}/cancel", include_in_schema=False)
async def cancel_form(state: StateDep, job_id: str) -> RedirectResponse:
    await cancel_job(state, state.job(job_id))
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.get("/jobs/{job_id}", include_in_schema=False)
async def job_page(state: StateDep, job_id: str) -> HTMLResponse:
    job = state.job(job_id)
    doc = job.document if job.state == "done" else None
    return page(
        state,
        "job.html",
        job=job,
        timings=job.timings(),
        position=state.jobs.position(job),
        head=headline(job.kind, doc),
        summary=summary_text(job.kind, doc) if doc else None,
    )
