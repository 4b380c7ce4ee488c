"""The start page: the forms, the suggestions, the recent jobs."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from ..rendering import headline, page
from ..state import StateDep

router = APIRouter()


@router.get("/", include_in_schema=False)
def home(
    state: StateDep, a: str = "", b: str = "", path: str = "", against: str = "", inspect_path: str = ""
) -> HTMLResponse:
    return page(
        state,
        "home.html",
        checkpoints=state.suggestions(),
        jobs=[(job, job.timings()) for job in state.jobs.recent(10)],
        counts=state.jobs.counts(),
        max_jobs=state.jobs.max_jobs,
        prefill={"a": a, "b": b, "path": path, "against": against, "inspect": inspect_path},
        headline=headline,
    )


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    return Response(status_code=204)
