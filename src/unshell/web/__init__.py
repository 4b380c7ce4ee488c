"""``unshell serve``: a small web application over inspect, compare and audit (the ``web`` extra).

    from unshell.web import serve
    serve(roots=["/data/models"])                  # http://127.0.0.1:8000/

    from unshell.web import create_app             # any ASGI server, or a test client
    app = create_app(["/data/models"], max_jobs=2)

Only paths under the roots can be named; see `unshell.web.paths` for how that is enforced.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import AddressUnavailableError, MissingDependencyError, UsageError
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


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port``, made before the server announces itself, so that a
    busy port is one line and exit code 22, not a traceback after the "serving at" banner."""
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT only
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        reason = (
            "the address is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        )
        raise AddressUnavailableError(f"cannot listen on {_shown(host)}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def log_requests_to_stderr() -> None:
    """One line per request (method, path, status, milliseconds) on stderr: see `guard`."""
    requests_log = logging.getLogger("unshell.web.requests")
    if not requests_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        requests_log.addHandler(handler)
    requests_log.setLevel(logging.INFO)
    requests_log.propagate = False


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


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
        AddressUnavailableError: ``host``:``port`` cannot be listened on (a busy port, say).
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
    sock = listening_socket(host, port)
    log_requests_to_stderr()
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", server_header=False)
    )
    print(f"unshell serve: http://{_shown(host)}:{sock.getsockname()[1]}/ (Ctrl-C stops)", file=sys.stderr)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
