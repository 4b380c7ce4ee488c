"""The web application: server-rendered pages and a JSON API over unshell's library calls.

Every user-given path goes through `Roots.resolve` (see `paths`) before anything reads it; long
work (compare, audit, search) runs in a bounded `JobManager`; inspect (headers only) runs while
the request waits, at most a few at a time. Nothing here imports or runs code from model files: it
only calls `unshell.inspect`, `unshell.compare`, `unshell.audit` and `unshell.search` (`tasks`),
inside `paths.confined`.

Inspections and jobs run in child processes (`jobs.run_isolated`) under a time limit, and a job
can be cancelled; the confinement is entered in the child, where the files are read.

Where things are:

* `guard`: the Host, origin and body-size checks every request passes, the security headers every
  response carries (a Content-Security-Policy that allows no scripts and nothing external), and
  the request log;
* `problems`: errors as one line of JSON (the API) or an error page (people);
* `inputs`: the API's request bodies and the pages' forms;
* `state`: what the application holds (roots, job pool, limits), given to routes as a dependency;
* `rendering`: the Jinja2 templates (autoescaped) and what a page shows of a result;
* `routes`: one router each for the files (and inspect), the jobs, the library and the home page.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from . import guard, problems
from .guard import LOOPBACK_HOSTS
from .jobs import DEFAULT_TIMEOUT_S
from .routes import files, home, jobs
from .routes import library as library_routes
from .state import build_state

DESCRIPTION = (
    "Is this LLM checkpoint a shell of another one? inspect, compare and audit checkpoints "
    "under the served roots. Paths are relative to a root (`{root, path}` or a string relative to "
    "root 0) or absolute inside one; anything else is refused before it is read."
)


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
    state = build_state(
        roots,
        max_jobs=max_jobs,
        max_queued=max_queued,
        allowed_hosts=allowed_hosts,
        library=library,
        job_timeout=job_timeout,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.jobs.shutdown()

    app = FastAPI(
        title="unshell",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,  # the interactive docs load scripts from a CDN: not served
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.web = state
    problems.install(app)
    guard.install(app, state.allowed_hosts)
    for area in (files, jobs, library_routes, home):
        app.include_router(area.router)
    return app
