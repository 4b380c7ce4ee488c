"""``unshell serve``: a small web application over inspect, compare and audit (the ``web`` extra).

    from unshell.web import serve
    serve(roots=["/data/models"])                  # http://127.0.0.1:8000/

    from unshell.web import create_app             # any ASGI server, or a test client
    app = create_app(["/data/models"], max_jobs=2)

Only paths under the roots can be named; see `unshell.web.paths` for how that is enforced.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError, UsageError
from .jobs import DEFAULT_TIMEOUT_S

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["create_app", "is_loopback", "serve"]

WEB_EXTRA_HINT = "pip install 'unshell[web]'"


def _missing(exc: ImportError) -> MissingDependencyError:
    return MissingDependencyError(
        f"unshell serve needs the web extra ({exc.name or exc} is missing): {WEB_EXTRA_HINT}"
    )


def create_app(roots: Sequence[str | os.PathLike[str]], *, max_jobs: int = 2, **options: Any) -> FastAPI:
    """The ASGI application serving ``roots`` (see `unshell.web.app.create_app` for ``options``)."""
    try:
        from .app import create_app as _create_app
    except ImportError as exc:
        raise _missing(exc) from exc
    return _create_app(roots, max_jobs=max_jobs, **options)


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    roots: Sequence[str | os.PathLike[str]] = (),
    max_jobs: int = 2,
    library: str | os.PathLike[str] | None = None,
    job_timeout: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Serve the web application until interrupted. Loopback only unless ``host`` says otherwise.

    ``job_timeout``: seconds an inspection or a job may run before its process is killed.

    Raises:
        UsageError: no roots, a root that is not a directory, max_jobs < 1, job_timeout <= 0.
        PathNotFoundError: a root that does not exist.
        MissingDependencyError: the ``web`` extra is not installed.
    """
    if not roots:
        raise UsageError("serve needs at least one root directory (--root DIR)")
    try:
        import uvicorn
    except ImportError as exc:
        raise _missing(exc) from exc
    from .guard import LOOPBACK_HOSTS

    allowed: tuple[str, ...] | None = tuple(LOOPBACK_HOSTS)
    if not is_loopback(host):
        wildcard = host in ("", "0.0.0.0", "::", "[::]")
        allowed = None if wildcard else (*LOOPBACK_HOSTS, host)
        print(
            f"warning: serving on {host or 'every address'}: there is no authentication; anyone who can "
            "reach this port can read every checkpoint under the roots",
            file=sys.stderr,
        )
    app = create_app(
        roots, max_jobs=max_jobs, allowed_hosts=allowed, library=library, job_timeout=job_timeout
    )
    shown = f"[{host}]" if ":" in host else host
    print(f"unshell serve: http://{shown}:{port}/ (Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
