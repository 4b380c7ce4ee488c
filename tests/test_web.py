"""`unshell serve`: the web application through an HTTP test client, on real fixture checkpoints.

Path confinement is tested against a layout with something worth stealing: ``outside/secret.bin``
is a real checkpoint (a read would succeed), reachable from the root through ``..``, an absolute
path, a symlinked file, a symlinked directory, a dangling symlink and a model directory whose
weights are a symlink out. Two observers prove that a refused path is never read: the library
entry points are wrapped to record calls, and an audit hook records every ``open`` and directory
listing that reaches the operating system under ``outside/`` (registered after the server's own
confinement hook, so it sees exactly what that hook let through). Both see this process only:
inspections and jobs run in child processes, where the confinement hook is installed too (the
symlinked-weights test proves it refuses there).

Jobs run in child processes, so tests that need one to hang or to report on itself swap the task
function the server picks (`unshell.web.tasks`) for a stand-in from ``web_job_probes``.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install -e '.[web]'")
pytest.importorskip("httpx", reason="the test client needs httpx")

from fastapi.testclient import TestClient

import web_job_probes
from unshell.errors import PathNotFoundError, UsageError
from unshell.web import create_app, is_loopback
from unshell.web import paths as web_paths
from unshell.web import tasks as web_tasks

BASE_URL = "http://127.0.0.1:8000"
SAME_ORIGIN = {"origin": BASE_URL}  # what a browser sends with every POST from the served pages
JOB_TIMEOUT_S = 120.0

# --- observers -------------------------------------------------------------------------------

_WATCHED: list[str] = []
_SEEN: list[tuple[str, str]] = []
_recorder_installed = False


def _recorder(event: str, args: tuple[Any, ...]) -> None:
    if not _WATCHED or event not in ("open", "os.listdir", "os.scandir"):
        return
    target = args[0] if args else None
    if target is None or isinstance(target, int):
        return
    real = os.path.realpath(os.fsdecode(target))
    if any(real == w or real.startswith(w + os.sep) for w in _WATCHED):
        _SEEN.append((event, real))


@pytest.fixture
def layout(tmp_path: Path, fixtures_dir: Path) -> dict[str, Path]:
    """root/ with two real checkpoints and escape routes; outside/ with a real checkpoint."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    shutil.copyfile(fixtures_dir / "stories260K.bin", root / "stories260K.bin")
    shutil.copyfile(fixtures_dir / "llama2xs.model.bin", root / "llama2xs.model.bin")
    shutil.copyfile(fixtures_dir / "stories260K.bin", outside / "secret.bin")
    (root / "sub").mkdir()
    (root / "sub" / "notes.bin").write_bytes(b"not a checkpoint at all, just some bytes\n" * 4)
    (root / "escape.bin").symlink_to(outside / "secret.bin")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "dangling.bin").symlink_to(outside / "missing.bin")
    trojan = root / "trojan"  # a model directory inside the root whose weights live outside
    trojan.mkdir()
    (trojan / "config.json").write_text('{"model_type": "llama"}')
    (trojan / "model.bin").symlink_to(outside / "secret.bin")
    return {"root": root, "outside": outside, "secret": outside / "secret.bin", "trojan": trojan}


@pytest.fixture
def opened_outside(layout: dict[str, Path]) -> Iterator[list[tuple[str, str]]]:
    """Every open or listing under outside/ that reached the OS while the test ran."""
    global _recorder_installed
    web_paths.install_confinement()  # first, so the recorder only sees what it let through
    if not _recorder_installed:
        sys.addaudithook(_recorder)
        _recorder_installed = True
    _WATCHED.append(os.path.realpath(layout["outside"]))
    _SEEN.clear()
    try:
        with open(layout["secret"], "rb"):  # positive control: the recorder does see opens
            pass
        assert _SEEN, "the audit recorder saw nothing: the test would prove nothing"
        _SEEN.clear()
        yield _SEEN
    finally:
        _WATCHED.clear()


@pytest.fixture
def library_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """Calls that reached unshell.inspect / compare / audit (they pass through to the real ones)."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    for module_name, name in (
        ("unshell.inspection", "inspect"),
        ("unshell.lineage.compare", "compare"),
        ("unshell.auditing.report", "audit"),
    ):
        module = importlib.import_module(module_name)
        real = getattr(module, name)

        def wrapper(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append((_name, args))
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.fixture
def client(layout: dict[str, Path]) -> Iterator[TestClient]:
    app = create_app([layout["root"]], max_jobs=1, max_queued=2)
    with TestClient(app, base_url=BASE_URL, headers=SAME_ORIGIN) as test_client:
        yield test_client


def wait_for(client: TestClient, job_id: str, timeout: float = JOB_TIMEOUT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if doc["state"] in ("done", "failed", "timed-out", "cancelled"):
            return doc
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def started_probes(layout: dict[str, Path], count: int, timeout: float = 60.0) -> list[int]:
    """The pids of the first ``count`` stand-in jobs (see `web_job_probes`), once they run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted((layout["root"].parent / "probe").glob("started-*"), key=lambda p: p.stat().st_mtime)
        if len(found) >= count:
            # The pid is in the name: the file is created before its text is written, so a fast
            # reader could see it empty (it did on a loaded CI machine).
            return [int(p.name.removeprefix("started-")) for p in found]
        time.sleep(0.02)
    raise AssertionError(f"{count} stand-in job(s) did not start in {timeout} s")


def process_is_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def assert_one_line_error(response: Any, status: int | tuple[int, ...]) -> str:
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert message and "\n" not in message
    return str(message)


# --- what works --------------------------------------------------------------------------------


def test_inspect_returns_the_result(client: TestClient, layout: dict[str, Path]) -> None:
    response = client.post("/api/inspect", json={"path": "stories260K.bin"})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["architecture"]["family"] == "llama"
    assert doc["format"] == "llama2c"

    # the same through GET, with an explicit root, and as an absolute path inside the root
    by_root = client.get("/api/inspect", params={"root": 0, "path": "stories260K.bin"}).json()
    absolute = client.post("/api/inspect", json={"path": str(layout["root"] / "stories260K.bin")}).json()
    assert by_root["architecture"] == absolute["architecture"] == doc["architecture"]

    page = client.get("/inspect", params={"path": "llama2xs.model.bin"})
    assert page.status_code == 200
    assert 'id="family">llama<' in page.text


def test_compare_job_runs_to_a_verdict(client: TestClient) -> None:
    response = client.post(
        "/api/compare", json={"a": "stories260K.bin", "b": {"root": 0, "path": "llama2xs.model.bin"}}
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["state"] in ("queued", "running")
    assert response.headers["location"] == f"/api/jobs/{accepted['id']}"

    doc = wait_for(client, accepted["id"])
    assert doc["state"] == "done", doc
    assert doc["result"]["verdict"] == "independent"  # two independently trained llama2.c models
    assert doc["elapsed_s"] >= doc["running_s"] > 0
    assert accepted["id"] in [job["id"] for job in client.get("/api/jobs").json()["jobs"]]

    page = client.get(f"/jobs/{accepted['id']}")
    assert 'data-verdict="independent"' in page.text
    assert 'http-equiv="refresh"' not in page.text  # finished: no more polling

    report = client.get(f"/api/jobs/{accepted['id']}/report.html")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "independent" in report.text.lower()
    assert "sandbox" in report.headers["content-security-policy"]
    download = client.get(f"/api/jobs/{accepted['id']}/report.html", params={"download": 1})
    assert download.headers["content-disposition"].startswith("attachment;")
    result = client.get(f"/api/jobs/{accepted['id']}/result.json")
    assert result.json()["verdict"] == "independent"


def test_audit_form_runs_a_job(client: TestClient, layout: dict[str, Path]) -> None:
    response = client.post(
        "/audit",
        data={"path": "llama2xs.model.bin", "against": str(layout["root"] / "stories260K.bin")},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    job_id = response.headers["location"].rsplit("/", 1)[1]
    doc = wait_for(client, job_id)
    assert doc["state"] == "done", doc
    assert doc["result"]["detected"]["weights"]["verdict"] == "independent"
    page = client.get(f"/jobs/{job_id}")
    assert f'data-verdict="{doc["result"]["level"]}"' in page.text


def test_failed_job_keeps_a_one_line_error(client: TestClient) -> None:
    job_id = client.post("/api/compare", json={"a": "stories260K.bin", "b": "sub/notes.bin"}).json()["id"]
    doc = wait_for(client, job_id)
    assert doc["state"] == "failed"
    assert doc["exit_code"] == 12 and doc["error_type"] == "NotACheckpointError"
    assert doc["error"] and "\n" not in doc["error"]
    assert_one_line_error(client.get(f"/api/jobs/{job_id}/report.html"), 409)
    assert 'id="error"' in client.get(f"/jobs/{job_id}").text


def test_unshell_errors_map_to_4xx(client: TestClient) -> None:
    response = client.post("/api/inspect", json={"path": "sub/notes.bin"})
    assert_one_line_error(response, 422)
    assert response.json()["exit_code"] == 12
    assert_one_line_error(client.post("/api/inspect", json={"path": "nope.bin"}), 404)
    assert_one_line_error(client.get("/api/jobs/0123456789abcdef"), 404)
    assert_one_line_error(client.post("/api/compare", json={"a": "stories260K.bin"}), 422)


def test_files_lists_checkpoints_and_marks_escapes(client: TestClient, layout: dict[str, Path]) -> None:
    evil = layout["root"] / "<img src=x onerror=alert(1)>.gguf"
    evil.write_bytes(b"GGUF")
    listing = client.get("/api/files").json()
    kinds = {entry["name"]: entry["kind"] for entry in listing["entries"]}
    assert kinds["stories260K.bin"] == "weights"
    assert kinds["trojan"] == "model" and kinds["sub"] == "directory"
    assert kinds["escape.bin"] == kinds["linkdir"] == "outside"
    assert "dangling.bin" not in kinds
    page = client.get("/browse/0/")
    assert page.status_code == 200
    assert "&lt;img src=x onerror=alert(1)&gt;.gguf" in page.text and "<img" not in page.text  # escaped
    assert client.get("/browse/0/sub").status_code == 200
    found = {c["path"] for c in client.get("/api/checkpoints").json()["checkpoints"]}
    assert {"stories260K.bin", "llama2xs.model.bin", "trojan"} <= found
    assert not any(p.startswith(("escape", "linkdir")) for p in found)


# --- confinement --------------------------------------------------------------------------------


def _escapes(layout: dict[str, Path]) -> list[tuple[Any, tuple[int, ...]]]:
    secret = str(layout["secret"])
    return [
        ("../outside/secret.bin", (400,)),
        ("sub/../../outside/secret.bin", (400,)),
        ("./../outside/secret.bin", (400,)),
        (secret, (403,)),
        (str(layout["root"]) + "/../outside/secret.bin", (400,)),
        ("escape.bin", (403,)),
        ("linkdir/secret.bin", (403,)),
        ("linkdir", (403,)),
        ("dangling.bin", (403,)),
        ("stories260K.bin\x00../outside/secret.bin", (400,)),
        ("%2e%2e/outside/secret.bin", (404,)),  # in JSON nothing is URL-decoded: a literal, absent name
        ({"root": 0, "path": "../outside/secret.bin"}, (400,)),
        ({"root": 0, "path": secret}, (400,)),
        ({"root": 7, "path": "stories260K.bin"}, (404,)),
    ]


def test_path_escapes_are_refused_before_anything_is_read(
    client: TestClient,
    layout: dict[str, Path],
    opened_outside: list[tuple[str, str]],
    library_calls: list[tuple[str, tuple[Any, ...]]],
) -> None:
    for path, statuses in _escapes(layout):
        requests = [
            ("/api/inspect", {"path": path}),
            ("/api/compare", {"a": "stories260K.bin", "b": path}),
            ("/api/compare", {"a": path, "b": "stories260K.bin"}),
            ("/api/audit", {"path": path}),
            ("/api/audit", {"path": "stories260K.bin", "against": path}),
        ]
        for url, body in requests:
            message = assert_one_line_error(client.post(url, json=body), statuses)
            assert str(layout["outside"]) not in message or path == str(layout["secret"]), message
    assert library_calls == []
    assert opened_outside == []
    assert client.get("/api/jobs").json()["jobs"] == []


@pytest.mark.parametrize(
    "url",
    [
        "/api/files?path=%2e%2e",
        "/api/files?path=%2e%2e%2foutside",
        "/api/files?path=linkdir",
        "/api/inspect?path=%2e%2e/outside/secret.bin",
        "/api/inspect?path=%2E%2E%2Foutside%2Fsecret.bin",
        "/api/inspect?path=escape.bin",
        "/api/inspect?path=stories260K.bin%00",
        "/api/inspect?root=0&path=%2e%2e/outside/secret.bin",
        "/api/inspect?path=%252e%252e/outside/secret.bin",  # decoded once: a literal '%2e%2e' name
        "/browse/0/%2e%2e/outside",
        "/browse/0/linkdir",
        "/browse/0/sub/%2e%2e/%2e%2e/outside",
        "/inspect?path=%2e%2e%2foutside%2fsecret.bin",
        "/inspect?path=escape.bin",
    ],
)
def test_encoded_escapes_in_urls_are_refused(
    client: TestClient,
    url: str,
    opened_outside: list[tuple[str, str]],
    library_calls: list[tuple[str, tuple[Any, ...]]],
) -> None:
    response = client.get(url)
    assert 400 <= response.status_code < 500, (url, response.status_code, response.text)
    if url.startswith("/api/"):
        assert_one_line_error(response, response.status_code)
    if "%2e%2e" in url.lower() and "%252e" not in url:
        assert "'..' is not allowed" in response.text.replace("&#39;", "'")  # the server saw the dots
    assert library_calls == []
    assert opened_outside == []


def test_form_escapes_are_refused_with_a_page(
    client: TestClient,
    opened_outside: list[tuple[str, str]],
    library_calls: list[tuple[str, tuple[Any, ...]]],
) -> None:
    for data in (
        {"a": "stories260K.bin", "b": "../outside/secret.bin"},
        {"a": "escape.bin", "b": "stories260K.bin"},
        {"a": "stories260K.bin\x00", "b": "stories260K.bin"},
    ):
        response = client.post("/compare", data=data, follow_redirects=False)
        assert response.status_code in (400, 403), response.text
        assert response.headers["content-type"].startswith("text/html")
        assert 'id="error"' in response.text
    response = client.post(
        "/audit",
        content=b"path=stories260K.bin&against=%2e%2e%2foutside%2fsecret.bin",
        headers={"content-type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert library_calls == [] and opened_outside == []


def test_a_symlink_inside_a_model_directory_is_not_followed_out(
    client: TestClient,
    layout: dict[str, Path],
    opened_outside: list[tuple[str, str]],
    library_calls: list[tuple[str, tuple[Any, ...]]],
) -> None:
    # The directory itself is inside the root, so the path check lets it through: the run-time
    # confinement around the library call is what stops the read.
    response = client.post("/api/inspect", json={"path": "trojan"})
    message = assert_one_line_error(response, 403)
    assert "model.bin: outside the served roots" in message, message
    assert response.json()["exit_code"] == 11
    # The inspection ran (in its child process, out of `library_calls`' sight): only the
    # confinement there words its refusal this way.
    job = client.post("/api/compare", json={"a": "stories260K.bin", "b": "trojan"}).json()
    doc = wait_for(client, job["id"])
    assert doc["state"] == "failed" and doc["error_type"] == "OutsideRootsError", doc
    assert opened_outside == []


def test_confined_blocks_reads_listings_and_processes_outside_the_roots(layout: dict[str, Path]) -> None:
    roots = web_paths.Roots.from_paths([layout["root"]])
    with web_paths.confined(roots):
        with open(layout["root"] / "stories260K.bin", "rb") as handle:  # inside: fine
            assert handle.read(4)
        assert os.listdir(layout["root"])
        with pytest.raises(PermissionError):
            open(layout["secret"], "rb")  # noqa: SIM115
        with pytest.raises(PermissionError):
            open(layout["root"] / "escape.bin", "rb")  # noqa: SIM115
        with pytest.raises(PermissionError):
            os.listdir(layout["outside"])
        with pytest.raises(PermissionError):
            subprocess.run(["true"], check=False)
        import json  # already imported modules and the standard library still load

        assert json.dumps([1]) == "[1]"
    with open(layout["secret"], "rb"):  # outside the context nothing is restricted
        pass
    done: list[bool] = []

    def other_thread() -> None:  # nor in other threads while one thread is confined
        with open(layout["secret"], "rb"):
            done.append(True)

    with web_paths.confined(roots):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert done == [True]


# --- limits and guards --------------------------------------------------------------------------


def test_too_many_jobs_are_refused_with_429(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, layout: dict[str, Path]
) -> None:
    probe = layout["root"].parent / "probe"
    probe.mkdir()
    monkeypatch.setattr(web_tasks, "compare_task", web_job_probes.held_compare)
    body = {"a": "stories260K.bin", "b": "llama2xs.model.bin"}
    try:
        ids = [client.post("/api/compare", json=body).json()["id"]]  # max_jobs=1: runs
        started_probes(layout, 1)
        ids += [client.post("/api/compare", json=body).json()["id"] for _ in range(2)]  # max_queued=2
        states = [client.get(f"/api/jobs/{i}").json() for i in ids]
        assert [s["state"] for s in states] == ["running", "queued", "queued"]
        assert [s.get("queue_position") for s in states[1:]] == [1, 2]
        assert 'http-equiv="refresh"' in client.get(f"/jobs/{ids[1]}").text  # still polling

        refused = client.post("/api/compare", json=body)
        assert_one_line_error(refused, 429)
        assert refused.headers["retry-after"]
        assert_one_line_error(client.post("/api/audit", json={"path": "stories260K.bin"}), 429)
        page = client.post("/compare", data=body, follow_redirects=False)
        assert page.status_code == 429 and 'id="error"' in page.text
    finally:
        (probe / "release").write_text("")
    assert [wait_for(client, i)["state"] for i in ids] == ["done"] * 3
    assert client.post("/api/compare", json=body).status_code == 202  # room again


def test_host_origin_and_body_guards(client: TestClient) -> None:
    body = {"a": "stories260K.bin", "b": "llama2xs.model.bin"}
    assert client.get("/", headers={"host": "evil.example"}).status_code == 421  # DNS rebinding
    assert client.get("/api/roots", headers={"host": "localhost:8000"}).status_code == 200
    cross = client.post("/api/compare", json=body, headers={"origin": "http://evil.example"})
    assert_one_line_error(cross, 403)
    fetch = client.post("/compare", data=body, headers={"sec-fetch-site": "cross-site"})
    assert fetch.status_code == 403
    assert client.post("/compare", data=body, headers={"origin": "null"}).status_code == 403
    assert client.get("/api/jobs").json()["jobs"] == []  # none of them started a job
    big = client.post(
        "/api/inspect", content=b"{" + b" " * 70_000 + b"}", headers={"content-type": "application/json"}
    )
    assert_one_line_error(big, 413)
    form = client.post("/compare", content=b"a=1", headers={"content-type": "text/plain"})
    assert form.status_code == 415
    same = client.post("/api/compare", json=body, headers={"origin": BASE_URL})
    assert same.status_code == 202


def test_pages_load_nothing_external(client: TestClient) -> None:
    job = client.post("/api/compare", json={"a": "stories260K.bin", "b": "llama2xs.model.bin"}).json()
    wait_for(client, job["id"])
    pages = (
        "/",
        "/browse/0/",
        "/inspect?path=stories260K.bin",
        f"/jobs/{job['id']}",
        "/jobs/nope",
        "/library",
    )
    for url in pages:
        response = client.get(url)
        assert response.headers["content-type"].startswith("text/html"), url
        assert "http://" not in response.text and "https://" not in response.text, url
        assert "<script" not in response.text.lower(), url
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp, url
        assert response.headers["x-content-type-options"] == "nosniff"
    report = client.get(f"/api/jobs/{job['id']}/report.html")
    assert "http://" not in report.text and "https://" not in report.text
    assert client.get("/docs").status_code == 404  # the interactive docs would load a CDN


def test_openapi_lists_the_api(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    routes = {path: set(methods) for path, methods in schema["paths"].items()}
    assert routes["/api/inspect"] >= {"get", "post"}
    assert (
        "post" in routes["/api/compare"]
        and "post" in routes["/api/audit"]
        and "post" in routes["/api/search"]
    )
    assert "get" in routes["/api/library"] and "get" in routes["/api/library/{name}"]
    for path in ("/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/report.html", "/api/files"):
        assert "get" in routes[path], path
    assert all(path.startswith("/api/") for path in routes)  # pages are not part of the API
    assert "PathRef" in schema["components"]["schemas"]


def test_create_app_validates_roots_and_limits(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        create_app([])
    with pytest.raises(PathNotFoundError):
        create_app([tmp_path / "missing"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError):
        create_app([tmp_path / "file"])
    with pytest.raises(UsageError):
        create_app([tmp_path], max_jobs=0)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    import inspect as pyinspect

    from unshell.web import serve

    assert pyinspect.signature(serve).parameters["host"].default == "127.0.0.1"


def test_report_falls_back_to_json_without_the_html_renderer(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the import fails, as it did while the renderer was being written
    monkeypatch.delattr(importlib.import_module("unshell.report"), "html", raising=False)
    monkeypatch.setitem(sys.modules, "unshell.report.html", None)
    job = client.post("/api/compare", json={"a": "stories260K.bin", "b": "llama2xs.model.bin"}).json()
    assert wait_for(client, job["id"])["state"] == "done"
    report = client.get(f"/api/jobs/{job['id']}/report.html")
    assert report.status_code == 200
    assert "not available in this installation" in report.text
    assert "&#34;verdict&#34;: &#34;independent&#34;" in report.text  # the JSON, escaped


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}: {process.stderr.read()!r}")  # type: ignore[union-attr]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("serve did not start listening")


def test_serve_listens_on_loopback(layout: dict[str, Path]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = f"from unshell.web import serve; serve(port={port}, roots=[{str(layout['root'])!r}], max_jobs=1)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_port(port, process)
        import httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            roots = http.get("/api/roots").json()["roots"]
            assert roots == [{"index": 0, "path": str(layout["root"]), "name": "root"}]
            assert http.get("/", headers={"host": "attacker.example"}).status_code == 421
            assert http.post("/api/inspect", json={"path": "stories260K.bin"}).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()
        if process.stdout is not None:
            process.stdout.close()


# --- the fingerprint library ---------------------------------------------------------------------


@pytest.fixture
def library_client(layout: dict[str, Path], tmp_path: Path, fixtures_dir: Path) -> Iterator[TestClient]:
    """A server whose library holds two real models' fingerprints (one under a name with a slash)."""
    from unshell.library import Library
    from unshell.lineage.fingerprint import fingerprint

    with Library(tmp_path / "known.sqlite") as library:
        library.add(fingerprint(fixtures_dir / "stories260K.bin", name="karpathy/stories260K"))
        library.add(fingerprint(fixtures_dir / "llama2xs.model.bin", name="llama2xs"))
    app = create_app([layout["root"]], max_jobs=1, max_queued=2, library=tmp_path / "known.sqlite")
    with TestClient(app, base_url=BASE_URL, headers=SAME_ORIGIN) as test_client:
        yield test_client


def test_library_list_filter_and_model_page(library_client: TestClient) -> None:
    listing = library_client.get("/api/library").json()
    assert listing["size"] == 2 and listing["families"] == ["llama"]
    assert [e["name"] for e in listing["entries"]] == ["karpathy/stories260K", "llama2xs"]
    assert [
        e["name"] for e in library_client.get("/api/library", params={"q": "STORIES"}).json()["entries"]
    ] == ["karpathy/stories260K"]
    assert library_client.get("/api/library", params={"family": "bert"}).json()["entries"] == []

    page = library_client.get("/library", params={"q": "xs"})
    assert page.status_code == 200
    assert (
        'href="/library/llama2xs"' in page.text
        and "stories260K" not in page.text.split('id="entries"')[1].split("</section>")[0]
    )

    model = library_client.get("/api/library/karpathy/stories260K").json()
    assert model["family"] == "llama" and model["hidden"] == 64 and model["layers"] == 5
    assert model["sketch_dim"] == 64 and model["sketched_matrices"] > 0 and model["tensors"] > 0
    assert model["anchor_tokens"] > 0
    html = library_client.get("/library/karpathy/stories260K").text
    assert "karpathy/stories260K" in html and f"{model['sketched_matrices']} at 64 random directions" in html
    assert_one_line_error(library_client.get("/api/library/nope"), 404)
    assert library_client.get("/library/nope").status_code == 404


def test_search_job_finds_the_source_and_stays_inside_the_roots(
    library_client: TestClient, layout: dict[str, Path], opened_outside: list[tuple[str, str]]
) -> None:
    response = library_client.post("/search", data={"path": "stories260K.bin"}, follow_redirects=False)
    assert response.status_code == 303, response.text
    job_id = response.headers["location"].rsplit("/", 1)[1]
    doc = wait_for(library_client, job_id)
    assert doc["state"] == "done", doc
    first = doc["result"]["candidates"][0]
    assert (first["name"], first["verdict"]) == ("karpathy/stories260K", "identical")
    assert doc["result"]["library"]["size"] == 2
    page = library_client.get(f"/jobs/{job_id}").text
    assert 'data-verdict="identical"' in page and "karpathy/stories260K" in page
    report = library_client.get(f"/api/jobs/{job_id}/report.html")
    assert report.status_code == 200 and "VERDICT: IDENTICAL" in report.text  # the search report
    assert "karpathy/stories260K" in report.text and "https://" not in report.text

    # The API too; a suspect outside the roots is refused before anything is read.
    accepted = library_client.post("/api/search", json={"path": "llama2xs.model.bin", "top": 1})
    assert accepted.status_code == 202
    result = wait_for(library_client, accepted.json()["id"])["result"]
    assert [(c["name"], c["verdict"]) for c in result["candidates"]] == [("llama2xs", "identical")]
    assert_one_line_error(library_client.post("/api/search", json={"path": str(layout["secret"])}), 403)
    assert_one_line_error(library_client.post("/api/search", json={"path": "escape.bin"}), 403)
    assert opened_outside == []


def test_missing_library_is_shown_empty_and_not_created(layout: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "none" / "library.sqlite"
    with TestClient(create_app([layout["root"]], library=path), base_url=BASE_URL) as fresh:
        assert fresh.get("/api/library").json() == {
            "library": str(path),
            "size": 0,
            "families": [],
            "matching": 0,
            "offset": 0,
            "entries": [],
        }
        assert "The library is empty" in fresh.get("/library").text
        # A search needs a library: the job fails with the path-not-found code, creating nothing.
        job = fresh.post("/api/search", json={"path": "stories260K.bin"}).json()
        failed = wait_for(fresh, job["id"])
        assert failed["state"] == "failed" and failed["exit_code"] == 11
        assert "no fingerprint library" in failed["error"]
    assert not path.exists() and not path.parent.exists()


def test_audit_can_search_the_library(library_client: TestClient, layout: dict[str, Path]) -> None:
    # The root's llama2xs.model.bin is in the library as "llama2xs"; the file declares no base.
    response = library_client.post("/api/audit", json={"path": "llama2xs.model.bin", "library": True})
    assert response.status_code == 202, response.text
    doc = wait_for(library_client, response.json()["id"])
    assert doc["state"] == "done", doc
    weights = doc["result"]["detected"]["weights"]
    assert (weights["source"], weights["base"], weights["verdict"]) == ("library", "llama2xs", "identical")
    # The llama2.c export of llama2xs is its author's own file, with no card and no name: an
    # unlabelled identical copy claims nothing, so it is a note, never an accusation (issue 12).
    assert doc["result"]["level"] == "note"
    messages = [f["message"] for f in doc["result"]["findings"]]
    assert any("identical to llama2xs" in m and "unlabelled copy" in m for m in messages), messages
    both = library_client.post(
        "/api/audit", json={"path": "llama2xs.model.bin", "against": "stories260K.bin", "library": True}
    )
    assert_one_line_error(both, 400)


def test_search_threads_stay_confined(library_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """`search` tests candidates on threads of its own: the confinement must hold in them too, in
    the job's process."""
    monkeypatch.setattr(web_tasks, "search_task", web_job_probes.recording_search)
    job = library_client.post("/api/search", json={"path": "stories260K.bin"}).json()
    doc = wait_for(library_client, job["id"])
    assert doc["state"] == "done", doc
    seen = doc["result"]["seen"]
    assert len(seen) == 2
    assert any(name.startswith("unshell-search") for name, _ in seen)  # it did use its threads
    assert all(confined for _, confined in seen)
    assert doc["result"]["search"]["candidates"][0]["verdict"] == "identical"  # the real search ran


def test_library_pages_through_a_large_library(
    layout: dict[str, Path], tmp_path: Path, fixtures_dir: Path
) -> None:
    """Filtering and paging happen in SQL: a page shows 200 entries and links to the next."""
    from unshell.library import Library
    from unshell.lineage.fingerprint import fingerprint

    path = tmp_path / "big.sqlite"
    fp = fingerprint(fixtures_dir / "stories260K.bin")
    with Library(path) as library:
        for i in range(450):
            library.add(fp, name=f"org-{i % 3}/model_{i:04d}")
        library.add(fp, name="100%_real")  # LIKE's wildcards are matched literally
    with TestClient(create_app([layout["root"]], library=path), base_url=BASE_URL) as client:
        first = client.get("/api/library").json()
        assert (first["size"], first["matching"], len(first["entries"])) == (451, 451, 200)
        third = client.get("/api/library", params={"offset": 400}).json()
        assert len(third["entries"]) == 51 and third["entries"][-1]["name"] == "org-2/model_0449"
        org1 = client.get("/api/library", params={"q": "ORG-1/", "limit": 1000}).json()
        assert org1["matching"] == 150 and all(e["name"].startswith("org-1/") for e in org1["entries"])
        assert [e["name"] for e in client.get("/api/library", params={"q": "%_r"}).json()["entries"]] == [
            "100%_real"
        ]
        assert client.get("/api/library", params={"q": "model_", "family": "bert"}).json()["matching"] == 0
        page = client.get("/library", params={"q": "org-0"}).text
        assert "1–150 of 150 matching" in page and 'id="next"' not in page
        page = client.get("/library").text
        assert "1–200 of 451 matching" in page and "offset=200" in page


# --- time limit and cancel (M5) ----------------------------------------------------------------


QUICK_LIMIT_S = 3


@pytest.fixture
def quick_limit_client(layout: dict[str, Path]) -> Iterator[TestClient]:
    """One job at a time, and a time limit of a few seconds."""
    (layout["root"].parent / "probe").mkdir()
    app = create_app([layout["root"]], max_jobs=1, max_queued=2, job_timeout=QUICK_LIMIT_S)
    with TestClient(app, base_url=BASE_URL, headers=SAME_ORIGIN) as test_client:
        yield test_client


def test_a_job_past_the_time_limit_is_killed_and_frees_its_slot(
    quick_limit_client: TestClient, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"a": "stories260K.bin", "b": "llama2xs.model.bin"}
    monkeypatch.setattr(web_tasks, "compare_task", web_job_probes.endless)
    endless = quick_limit_client.post("/api/compare", json=body).json()["id"]
    monkeypatch.setattr(web_tasks, "compare_task", web_job_probes.instant)
    after = quick_limit_client.post("/api/compare", json=body).json()["id"]  # queued behind it
    [pid] = started_probes(layout, 1)

    doc = wait_for(quick_limit_client, endless, timeout=60)
    assert doc["state"] == "timed-out", doc
    assert doc["error"].startswith(f"timed out after {QUICK_LIMIT_S} s") and doc["exit_code"] == 17, doc
    assert QUICK_LIMIT_S <= doc["running_s"] < 30
    assert process_is_gone(pid)  # killed, not left running in the background
    assert wait_for(quick_limit_client, after)["state"] == "done"  # the slot was freed

    page = quick_limit_client.get(f"/jobs/{endless}")
    assert page.status_code == 200 and f"timed out after {QUICK_LIMIT_S} s" in page.text
    assert 'id="state">timed-out<' in page.text and 'http-equiv="refresh"' not in page.text
    assert_one_line_error(quick_limit_client.get(f"/api/jobs/{endless}/report.html"), 409)
    assert_one_line_error(quick_limit_client.get(f"/api/jobs/{endless}/result.json"), 409)
    assert quick_limit_client.get("/api/jobs").json()["counts"]["timed-out"] == 1


def test_an_inspection_past_the_time_limit_is_refused_and_frees_its_slot(
    quick_limit_client: TestClient, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_tasks, "inspect_task", web_job_probes.endless)
    responses = [quick_limit_client.get("/api/inspect", params={"path": "stories260K.bin"})]
    responses += [quick_limit_client.get("/inspect", params={"path": "stories260K.bin"})]
    message = assert_one_line_error(responses[0], 413)
    limit = f"timed out after {QUICK_LIMIT_S} s"
    assert message.startswith(limit) and responses[0].json()["exit_code"] == 17
    assert responses[1].status_code == 413 and limit in responses[1].text
    assert all(process_is_gone(pid) for pid in started_probes(layout, 2))
    monkeypatch.setattr(web_tasks, "inspect_task", web_job_probes.instant_inspection)
    fine = quick_limit_client.get("/api/inspect", params={"path": "stories260K.bin"})
    assert fine.status_code == 200 and fine.json() == {"format": "stub"}  # the limiter's slots are free


def test_running_and_queued_jobs_can_be_cancelled(
    quick_limit_client: TestClient, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = quick_limit_client
    body = {"a": "stories260K.bin", "b": "llama2xs.model.bin"}
    monkeypatch.setattr(web_tasks, "compare_task", web_job_probes.held_compare)
    running = client.post("/api/compare", json=body).json()["id"]
    [pid] = started_probes(layout, 1)
    queued = client.post("/api/compare", json=body).json()
    assert queued["state"] == "queued" and queued["cancel"] == f"/api/jobs/{queued['id']}/cancel"

    page = client.get(f"/jobs/{queued['id']}").text
    assert f'action="/jobs/{queued["id"]}/cancel"' in page  # the button, a plain form
    form = client.post(f"/jobs/{queued['id']}/cancel", follow_redirects=False)
    assert form.status_code == 303 and form.headers["location"] == f"/jobs/{queued['id']}"
    assert client.get(f"/api/jobs/{queued['id']}").json()["state"] == "cancelled"

    cancelled = client.post(f"/api/jobs/{running}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    doc = cancelled.json()
    assert doc["state"] == "cancelled" and doc["error"] == "cancelled while running", doc
    assert process_is_gone(pid)
    assert started_probes(layout, 1) == [pid]  # the queued one never started
    page = client.get(f"/jobs/{running}").text
    assert 'id="state">cancelled<' in page and "cancel-form" not in page

    assert_one_line_error(client.post(f"/api/jobs/{running}/cancel"), 409)  # already ended
    assert_one_line_error(client.post("/api/jobs/0123456789abcdef/cancel"), 404)
    monkeypatch.setattr(web_tasks, "compare_task", web_job_probes.instant)
    assert wait_for(client, client.post("/api/compare", json=body).json()["id"])["state"] == "done"


def test_the_job_time_limit_is_an_option(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from unshell.cli.main import cli

    with pytest.raises(UsageError):
        create_app([tmp_path], job_timeout=0)
    help_text = CliRunner().invoke(cli, ["serve", "--help"]).output
    assert "--job-timeout" in help_text and "600" in help_text


# --- request guards ------------------------------------------------------------------------------


def test_a_post_without_origin_or_fetch_metadata_needs_a_json_body(client: TestClient) -> None:
    """W2: a form post that shows no Origin and no Sec-Fetch-Site could come from anywhere."""
    body = {"a": "stories260K.bin", "b": "llama2xs.model.bin"}
    del client.headers["origin"]
    for kind in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", None):
        headers = {"content-type": kind} if kind else {}
        response = client.post("/compare", content=b"a=stories260K.bin&b=llama2xs.model.bin", headers=headers)
        assert_one_line_error(response, 403)
    assert client.get("/api/jobs").json()["jobs"] == []  # none started
    # Browsers send Origin, or at least Sec-Fetch-Site, with a form post; programs send JSON.
    assert client.post("/compare", data=body, headers=SAME_ORIGIN, follow_redirects=False).status_code == 303
    same_site = {"sec-fetch-site": "same-origin"}
    assert client.post("/compare", data=body, headers=same_site, follow_redirects=False).status_code == 303
    assert client.post("/api/compare", json=body).status_code == 202


@pytest.mark.parametrize(
    "host",
    [
        "localhost:8000@evil.example",
        "127.0.0.1@evil.example",
        "user:pass@localhost",
        "localhost/evil",
        "localhost:notaport",
        "localhost:99999",
        "[::1",
        "",
    ],
)
def test_a_host_that_is_not_a_plain_authority_is_refused(client: TestClient, host: str) -> None:
    """W3: ``localhost:8799@evil.example`` names evil.example; it used to pass as localhost."""
    response = client.get("/api/roots", headers={"host": host})
    assert response.status_code in (400, 421), (host, response.status_code)
    assert client.get("/api/roots", headers={"host": "[::1]:8000"}).status_code == 200
    assert client.get("/api/roots", headers={"host": "LOCALHOST"}).status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/api/library?offset=99999999999999999999",
        "/library?offset=99999999999999999999",
        "/api/library?offset=-1",
        "/api/library?limit=99999999999999999999",
        "/api/library?offset=" + "9" * 5000,
    ],
)
def test_library_numbers_out_of_range_are_4xx(library_client: TestClient, url: str) -> None:
    """C6: an offset past SQLite's 64-bit integers was a 500."""
    response = library_client.get(url)
    assert 400 <= response.status_code < 500, (url, response.status_code, response.text)
    if url.startswith("/api/"):
        assert_one_line_error(response, response.status_code)
    assert library_client.get("/api/library", params={"offset": 2**62}).json()["entries"] == []


# --- what a new user trips over (issue 16) -------------------------------------------------------------


def test_each_request_is_logged_as_one_line(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    import re

    caplog.set_level("INFO", logger="unshell.web.requests")
    client.get("/api/roots")
    client.get("/jobs/0123456789abcdef")
    client.get("/", headers={"host": "evil.example"})  # refused by the guard: logged all the same
    lines = [r.getMessage() for r in caplog.records if r.name == "unshell.web.requests"]
    assert len(lines) == 3, lines
    assert [line.rsplit(" ", 2)[0] for line in lines] == [
        "GET /api/roots 200",
        "GET /jobs/0123456789abcdef 404",
        "GET / 421",
    ]
    assert all(re.fullmatch(r"GET \S+ \d{3} \d+\.\d ms", line) for line in lines), lines


@pytest.mark.slow
def test_the_job_page_shows_a_tiny_p_value_as_the_cli_does(
    client: TestClient, layout: dict[str, Path], fixtures_dir: Path
) -> None:
    import numpy as np

    # stories260K with its weights nudged by 1% noise: a derivative whose p-value is below a double
    raw = (fixtures_dir / "stories260K.bin").read_bytes()
    header, weights = raw[:28], np.frombuffer(raw[28:], dtype="<f4")
    noise = np.random.default_rng(0).normal(0.0, 0.01 * float(weights.std()), weights.shape)
    (layout["root"] / "tuned.bin").write_bytes(header + (weights + noise).astype("<f4").tobytes())

    job = client.post("/api/compare", json={"a": "stories260K.bin", "b": "tuned.bin"}).json()
    doc = wait_for(client, job["id"])
    assert doc["state"] == "done" and doc["result"]["verdict"] == "derived", doc
    assert doc["result"]["p_value"] == 0.0  # the API's value underflowed; the page must not say 0
    page = client.get(f"/jobs/{job['id']}").text
    assert 'id="p-value">p &lt; 1e-300 for H0' in page, page
    assert "p = 0" not in page
    assert (
        "P-VALUE       &lt; 1e-300 (log10 p = " in page.split('id="summary">')[1]
    )  # the CLI's block says the same


def test_compare_as_a_then_as_b_from_the_files_page_keeps_both(
    client: TestClient, layout: dict[str, Path]
) -> None:
    import html
    import re

    files = client.get("/browse/0/").text
    actions = {  # each file's row: its name and its action links
        m.group(1): m.group(2)
        for m in re.finditer(
            r'<td class="mono">\s*([\w.]+)\s*</td>.*?<td class="actions">(.*?)</td>', files, re.S
        )
    }
    as_a = re.search(r'href="([^"]+)">compare as A', actions["stories260K.bin"])
    as_b = re.search(r'href="([^"]+)">as B', actions["llama2xs.model.bin"])
    assert as_a and as_b, actions
    a, b = str(layout["root"] / "stories260K.bin"), str(layout["root"] / "llama2xs.model.bin")

    client.get(html.unescape(as_a.group(1)))
    home = client.get(html.unescape(as_b.group(1))).text
    assert f'id="compare-a" name="a" list="checkpoints" value="{a}"' in home
    assert f'id="compare-b" name="b" list="checkpoints" value="{b}"' in home
    assert a in client.get("/browse/0/").text.split('id="picks"')[1].split("</p>")[0]  # Files shows both
    # picking another A keeps B; the form still posts as before
    home = client.get("/", params={"a": b}).text
    assert f'value="{b}"' in home.split('id="compare-a"')[1].split(">")[0]
    assert f'value="{b}"' in home.split('id="compare-b"')[1].split(">")[0]


def test_the_home_page_names_the_served_folders_by_their_path(
    layout: dict[str, Path], tmp_path: Path
) -> None:
    second = tmp_path / "more models"
    second.mkdir()
    with TestClient(create_app([layout["root"], second]), base_url=BASE_URL) as client:
        for url in ("/", "/browse/1/"):
            text = client.get(url).text
            assert "root 0" not in text and "[0]" not in text and "[1]" not in text, url
            assert f'<a href="/browse/1/" class="mono">{second}</a>' in text, url
        assert f'relative to <span class="mono">{layout["root"]}</span>' in client.get("/").text


@pytest.mark.slow
def test_serve_on_a_busy_port_says_so_in_one_line_before_its_banner(layout: dict[str, Path]) -> None:
    import re

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "unshell", "serve", "--root", str(layout["root"]), "--port", str(port)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_port(port, first)
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/api/roots", timeout=30).status_code == 200
        second = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert second.returncode == 22, (second.returncode, second.stderr)
        assert second.stderr.strip().count("\n") == 0, second.stderr
        assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in second.stderr
        assert "unshell serve: http" not in second.stderr and "Traceback" not in second.stderr
    finally:
        first.terminate()
        _, log = first.communicate(timeout=30)
    assert f"unshell serve: http://127.0.0.1:{port}/" in log.decode()
    assert re.search(r"GET /api/roots 200 \d+\.\d ms", log.decode()), log  # the request log, on stderr
