"""Fuzz: the web API's query and path parameters (``unshell serve``'s FastAPI app through its test
client): library listing and entries, inspection paths, file listings, job ids, page parameters.
The property: no request gets a 500 (an internal error); API errors are one line of JSON."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz_support import (
    HOSTILE_TEXT,
    SERVED_ENTRIES,
    fuzz_settings,
    names,
    usually,
)
from fuzz_support import check_response as check
from fuzz_support import web_get as get

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install -e '.[web]'")
pytest.importorskip("httpx", reason="the test client needs httpx")

numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from(("99999999999999999999", "-1", "0", "1e3", "NaN", "inf", "0x10", " 1", "1.5", "", "١")),
).map(str)
texts = usually(
    names(*SERVED_ENTRIES, "tiny/config.json", "tiny/model.safetensors", "card-0x/README.md"),
    st.text(max_size=40),
    every=4,
)


@fuzz_settings(80)
@given(q=texts, family=usually(st.just("llama"), texts), limit=numbers, offset=numbers)
@example(q="", family="", limit="10", offset="99999999999999999999")  # issue 13, C6
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
        (*SERVED_ENTRIES, "tiny/model.safetensors", "tok/tokenizer.json", "/", "..", "../..", "/etc/passwd")
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
@example(path="card-0x", root=None, tensors="false")  # issue 13, C1
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
        get(f"/browse/{quote(root or '0', safe='')}/{quote(path.encode('utf-8', 'surrogatepass'), safe='/')}")
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
