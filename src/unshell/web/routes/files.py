"""The served files: the roots, directory listings, the suggestions, and inspect (headers only,
while the request waits, in a child process)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from ...errors import UnshellError
from .. import tasks
from ..inputs import InspectRequest, PathRef, compare_picks
from ..jobs import ChildFailed, run_isolated
from ..paths import MAX_PATH_CHARS, list_directory
from ..problems import WebError
from ..rendering import page, summary_text
from ..state import StateDep, WebState

router = APIRouter()


async def run_inspect(state: WebState, path: Path, tensors: bool) -> dict[str, Any]:
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


# --- JSON API -------------------------------------------------------------------------------------


@router.get("/api/roots", tags=["files"], summary="The served root directories")
def api_roots(state: StateDep) -> dict[str, Any]:
    return {"roots": [{"index": i, "path": str(p), "name": p.name} for i, p in enumerate(state.roots.paths)]}


@router.get("/api/files", tags=["files"], summary="List one directory under a root (checkpoints and folders)")
def api_files(
    state: StateDep,
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


@router.get("/api/checkpoints", tags=["files"], summary="Checkpoints and tokenizers found under the roots")
def api_checkpoints(state: StateDep) -> dict[str, Any]:
    return {"checkpoints": [{**e.to_dict(), "absolute": absolute} for e, absolute in state.suggestions()]}


@router.get("/api/inspect", tags=["inspect"], summary="Inspect a checkpoint (headers only); the result")
async def api_inspect_get(
    state: StateDep,
    path: Annotated[str, Query(max_length=MAX_PATH_CHARS + 1)],
    root: Annotated[int | None, Query(ge=0)] = None,
    tensors: bool = False,
) -> dict[str, Any]:
    target = await state.resolve(PathRef(root=root, path=path) if root is not None else path)
    return await run_inspect(state, target, tensors)


@router.post("/api/inspect", tags=["inspect"], summary="Inspect a checkpoint (headers only); the result")
async def api_inspect(state: StateDep, body: InspectRequest) -> dict[str, Any]:
    return await run_inspect(state, await state.resolve(body.path), body.tensors)


# --- pages ----------------------------------------------------------------------------------------


@router.get("/browse", include_in_schema=False)
async def browse_roots() -> RedirectResponse:
    return RedirectResponse("/browse/0/", status_code=303)


@router.get("/browse/{root}/{path:path}", include_in_schema=False)
def browse(state: StateDep, request: Request, root: int, path: str = "") -> HTMLResponse:
    path = path.strip("/")
    directory, entries, hidden = list_directory(state.roots, root, path)
    parts = [p for p in path.split("/") if p]
    crumbs = [(part, "/".join(parts[: i + 1])) for i, part in enumerate(parts)]
    return page(
        state,
        "browse.html",
        root=root,
        root_path=state.roots.paths[root],
        path=path,
        directory=directory,
        crumbs=crumbs,
        entries=[(e, str(directory / e.name)) for e in entries],
        hidden=hidden,
        picks=compare_picks(request),
    )


@router.get("/inspect", include_in_schema=False)
async def inspect_page(
    state: StateDep, path: str = "", root: Annotated[int | None, Query(ge=0)] = None, tensors: bool = False
) -> HTMLResponse:
    if root is not None:
        target = await state.resolve(PathRef(root=root, path=path))
    else:
        target = await state.resolve_text(path, "inspect")
    doc = await run_inspect(state, target, tensors)
    return page(
        state,
        "inspect.html",
        target=str(target),
        document=doc,
        summary=summary_text("inspect", doc),
        json_text=json.dumps(doc, indent=2, default=str),
    )
