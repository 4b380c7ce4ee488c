"""The start page: the forms, the suggestions, the recent jobs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ..inputs import compare_picks, remember_picks
from ..rendering import headline, page
from ..state import StateDep

router = APIRouter()


@router.get("/", include_in_schema=False)
def home(
    state: StateDep,
    request: Request,
    a: str = "",
    b: str = "",
    path: str = "",
    against: str = "",
    inspect_path: str = "",
) -> HTMLResponse:
    """``a``, ``b``: "compare as A/B" from the Files or Inspect page; each is remembered, so
    choosing B after A keeps A."""
    picks = compare_picks(request, a=a, b=b)
    response = page(
        state,
        "home.html",
        checkpoints=state.suggestions(),
        jobs=[(job, job.timings()) for job in state.jobs.recent(10)],
        counts=state.jobs.counts(),
        max_jobs=state.jobs.max_jobs,
        prefill={**picks, "path": path, "against": against, "inspect": inspect_path},
        headline=headline,
    )
    remember_picks(response, a=a, b=b)
    return response


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    return Response(status_code=204)
