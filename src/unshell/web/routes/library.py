"""The operator's fingerprint library, browsed read-only (searches against it are jobs)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from ..problems import WebError
from ..rendering import page
from ..state import StateDep, WebState

router = APIRouter()

LIBRARY_PAGE = 200
LIBRARY_MAX_OFFSET = 2**62  # SQLite integers are 64-bit; no library comes near this


def library_entries(
    state: WebState, query: str = "", family: str = "", limit: int = LIBRARY_PAGE, offset: int = 0
) -> dict[str, Any]:
    """The library's entries, filtered in SQL by a substring of the name and by family, one
    page at a time (a library can hold millions; no blob is read)."""
    from ...library import Library

    path = state.library_path
    if not path.is_file():
        return {
            "library": str(path),
            "size": 0,
            "families": [],
            "matching": 0,
            "offset": offset,
            "entries": [],
        }
    needle = query.strip()
    with Library(path) as library:
        return {
            "library": str(path),
            "size": len(library),
            "families": library.families(),
            "matching": library.count(contains=needle, family=family),
            "offset": offset,
            "entries": [
                e.to_dict() for e in library.list(contains=needle, family=family, limit=limit, offset=offset)
            ],
        }


def library_model(state: WebState, name: str) -> dict[str, Any]:
    """One fingerprint: its summary and what it holds (hashes, sketched matrices, anchors)."""
    from ...library import Library

    if not state.library_path.is_file():
        raise WebError(f"the library holds no fingerprint named {name!r}", 404)
    with Library(state.library_path) as library:
        if name not in library:
            raise WebError(f"the library holds no fingerprint named {name!r}", 404)
        return library.describe(name)


@router.get("/api/library", tags=["library"], summary="The fingerprint library's entries, filtered")
async def api_library(
    state: StateDep,
    q: Annotated[str, Query(max_length=512, description="a substring of the name")] = "",
    family: Annotated[str, Query(max_length=128)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = LIBRARY_PAGE,
    offset: Annotated[int, Query(ge=0, le=LIBRARY_MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    return await run_in_threadpool(library_entries, state, q, family, limit, offset)


@router.get("/api/library/{name:path}", tags=["library"], summary="One fingerprint: summary and contents")
async def api_library_model(state: StateDep, name: str) -> dict[str, Any]:
    return await run_in_threadpool(library_model, state, name)


@router.get("/library", include_in_schema=False)
async def library_page(
    state: StateDep, q: str = "", family: str = "", offset: Annotated[int, Query(le=LIBRARY_MAX_OFFSET)] = 0
) -> HTMLResponse:
    doc = await run_in_threadpool(library_entries, state, q[:512], family[:128], LIBRARY_PAGE, max(offset, 0))
    return page(
        state, "library.html", doc=doc, q=q, family=family, checkpoints=state.suggestions(), page=LIBRARY_PAGE
    )


@router.get("/library/{name:path}", include_in_schema=False)
async def library_model_page(state: StateDep, name: str) -> HTMLResponse:
    model = await run_in_threadpool(library_model, state, name)
    return page(state, "library_model.html", model=model)
