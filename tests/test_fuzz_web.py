"""Fuzz: the web API's query and path parameters (``unshell serve``'s FastAPI app through its test
client): library listing and entries, inspection paths, file listings, job ids, page parameters.
The property: no request gets a 500 (an internal error); API errors are one line of JSON."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_support import (
    HOSTILE_TEXT,
    fuzz_settings,
    names,
    run_cli,
    tiny_llama_template,
    usually,
)

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install -e '.[web]'")
pytest.importorskip("httpx", reason="the test client needs httpx")

from fastapi.testclient import TestClient

FIXTURES = Path(__file__).resolve().parent / "data" / "fixtures"
_CLIENT: list[TestClient] = []
_ROOT: list[Path] = []
ROOT_ENTRIES = ("tiny", "card-0x", "stories260K.bin", "tok", "ünïcode dir", "empty")


def _served_root() -> Path:
    """A root with a model, a model whose card holds ``license: 0x`` and 6,000 hex digits (issue
    13, C1), a llama2.c export, a broken tokenizer, an oddly named and an empty folder."""
    root = Path(tempfile.mkdtemp(prefix="unshell-fuzz-web-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    shutil.copytree(tiny_llama_template(), root / "tiny")
    shutil.copytree(tiny_llama_template(), root / "card-0x")
    (root / "card-0x" / "README.md").write_text("---\nlicense: 0x" + "f" * 6000 + "\n---\n# card\n")
    shutil.copy(FIXTURES / "stories260K.bin", root / "stories260K.bin")
    (root / "tok").mkdir()
    (root / "tok" / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {"a": -1}}}')
    (root / "ünïcode dir").mkdir()
    (root / "empty").mkdir()
    return root


def client() -> TestClient:
    """One app for every example (its job pool and threads are made once), serving `_served_root`
    with a library that holds the tiny model."""
    if not _CLIENT:
        from unshell.web import create_app

        root = _served_root()
        library = root.parent / f"{root.name}-library.sqlite"
        atexit.register(lambda: library.unlink(missing_ok=True))
        code, _ = run_cli(
            "library", "add", str(root / "tiny"), "--library", str(library), "--name", "org/tiny"
        )
        assert code == 0
        test_client = TestClient(
            create_app([root], library=library),
            base_url="http://127.0.0.1:8000",
            raise_server_exceptions=False,
        )
        test_client.__enter__()
        atexit.register(test_client.__exit__, None, None, None)
        _CLIENT.append(test_client)
        _ROOT.append(root)
    return _CLIENT[0]


def get(path: str, params: dict[str, str] | None = None) -> Any:
    """GET with ``params`` percent-encoded from their UTF-8 bytes (a lone surrogate becomes the
    invalid UTF-8 a hostile client may send)."""
    query = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in (params or {}).items()})
    return client().get(f"{path}?{query}" if query else path)


def check(response: Any) -> None:
    """Never a 500; an API error is a JSON object with a one-line ``error``."""
    assert response.status_code != 500, f"{response.request.url}: 500 {response.text[:300]}"
    if response.request.url.path.startswith("/api/") and response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and "\n" not in body["error"], body


numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from(("99999999999999999999", "-1", "0", "1e3", "NaN", "inf", "0x10", " 1", "1.5", "", "١")),
).map(str)
texts = usually(
    names(*ROOT_ENTRIES, "tiny/config.json", "tiny/model.safetensors", "card-0x/README.md"),
    st.text(max_size=40),
    every=4,
)


@fuzz_settings(80)
@given(q=texts, family=usually(st.just("llama"), texts), limit=numbers, offset=numbers)
def test_library_listing(q: str, family: str, limit: str, offset: str) -> None:
    """``/api/library`` and ``/library``: any filter text, any limit and offset (issue 13, C6:
    ``offset=99999999999999999999`` was a 500)."""
    params = {"q": q, "family": family, "limit": limit, "offset": offset}
    check(get("/api/library", params))
    check(get("/library", {"q": q, "family": family, "offset": offset}))


@fuzz_settings(50)
@given(name=usually(st.just("org/tiny"), texts, every=3))
def test_library_entry(name: str) -> None:
    encoded = quote(name.encode("utf-8", "surrogatepass"), safe="/")
    check(get(f"/api/library/{encoded}"))
    check(get(f"/library/{encoded}"))


inspect_paths = usually(
    st.sampled_from(
        (*ROOT_ENTRIES, "tiny/model.safetensors", "tok/tokenizer.json", "/", "..", "../..", "/etc/passwd")
    ),
    st.one_of(texts, st.sampled_from(HOSTILE_TEXT), st.builds(lambda: "a/" * 2000)),
    every=3,
)


@fuzz_settings(60)
@given(
    path=inspect_paths,
    root=st.one_of(st.none(), numbers),
    tensors=st.sampled_from(("true", "false", "1", "x", "")),
)
def test_inspect_and_browse(path: str, root: str | None, tensors: str) -> None:
    """``/api/inspect``, ``/inspect``, ``/api/files`` and ``/browse``: any path, root and flag
    (issue 13, C1: the card of ``card-0x`` was a 500)."""
    params: dict[str, str] = {"path": path, "tensors": tensors}
    if root is not None:
        params["root"] = root
    check(get("/api/inspect", params))
    check(get("/inspect", params))
    check(get("/api/files", {"path": path, "root": root or "0"}))
    check(
        client().get(
            f"/browse/{quote(root or '0', safe='')}/{quote(path.encode('utf-8', 'surrogatepass'), safe='/')}"
        )
    )
    check(get("/", {"a": path, "b": path, "inspect_path": path}))


@fuzz_settings(40)
@given(job=usually(st.sampled_from(("0", "1", "abc", "../x", "%00")), texts, every=3))
def test_job_ids(job: str) -> None:
    encoded = quote(job.encode("utf-8", "surrogatepass"), safe="")
    for url in (
        f"/api/jobs/{encoded}",
        f"/api/jobs/{encoded}/result.json",
        f"/api/jobs/{encoded}/report.html",
        f"/jobs/{encoded}",
    ):
        check(get(url))
