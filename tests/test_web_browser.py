"""`unshell serve` in a real browser: the real server on a loopback port, Debian's chromium, Playwright.

The browser is the system's ``/usr/bin/chromium`` (``apt-get install chromium``); Playwright's own
browser download is never used. Without it the test is skipped, unless ``UNSHELL_REQUIRE_BROWSER=1``
(CI), where it fails. Screenshots go to ``$UNSHELL_TEST_ARTIFACTS`` (default ``tests/artifacts-out/``).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = os.environ.get("UNSHELL_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(
    os.environ.get("UNSHELL_TEST_ARTIFACTS") or Path(__file__).resolve().parent / "artifacts-out"
)
VERDICT_TIMEOUT_MS = 120_000


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason}, and UNSHELL_REQUIRE_BROWSER=1 requires the browser test to run")
    pytest.skip(f"{reason} (set UNSHELL_REQUIRE_BROWSER=1 to make this a failure)")


@pytest.fixture(scope="module")
def playwright_api() -> object:
    try:
        from playwright import sync_api
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    try:
        import uvicorn  # noqa: F401

        from unshell.web import create_app  # noqa: F401
    except ImportError:
        _unavailable("the web extra is not installed (pip install -e '.[web]')")
    return sync_api


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path, fixtures_dir: Path, playwright_api: object) -> Iterator[tuple[str, Path]]:
    """The real server (uvicorn) on a free loopback port, in a thread: (base URL, its root)."""
    import uvicorn

    from unshell.web import create_app

    root = tmp_path / "models"
    root.mkdir()
    for name in ("stories260K.bin", "llama2xs.model.bin"):
        shutil.copyfile(fixtures_dir / name, root / name)
    from unshell.library import Library
    from unshell.lineage.fingerprint import fingerprint

    with Library(tmp_path / "known.sqlite") as library:  # a fingerprint library of two real models
        for name in ("stories260K.bin", "llama2xs.model.bin", "llama-2-tiny-random.gguf"):
            library.add(fingerprint(fixtures_dir / name, name=f"fixtures/{name}"))
    port = _free_port()
    app = create_app([root], max_jobs=1, library=tmp_path / "known.sqlite")
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="unshell-serve-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", root
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_compare_in_the_browser(server: tuple[str, Path], playwright_api: object) -> None:
    from playwright.sync_api import sync_playwright

    base, root = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("UNSHELL_TEST_ARTIFACTS"):  # the default folder sits in the checkout
        (ARTIFACTS / ".gitignore").write_text("*\n")
    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            page.goto(base + "/")
            assert page.locator("h1").inner_text().startswith("Is this checkpoint a shell")
            # the suggestions list the checkpoints found under the root
            options = page.locator("#checkpoints option").evaluate_all("els => els.map(e => e.value)")
            assert str(root / "stories260K.bin") in options
            page.screenshot(path=str(ARTIFACTS / "web-home.png"), full_page=True)

            page.fill("#compare-a", str(root / "stories260K.bin"))
            page.fill("#compare-b", "llama2xs.model.bin")  # relative to root 0 works too
            page.click("#compare-form button[type=submit]")
            page.wait_for_url(f"{base}/jobs/*")
            verdict = page.wait_for_selector("#verdict", timeout=VERDICT_TIMEOUT_MS)
            assert verdict is not None
            assert verdict.get_attribute("data-verdict") == "independent"
            assert verdict.inner_text().strip().lower() == "independent"
            assert page.locator("#state").inner_text() == "done"
            page.screenshot(path=str(ARTIFACTS / "web-compare.png"), full_page=True)

            page.click("#report-link")
            page.wait_for_load_state()
            assert "independent" in page.content().lower()
            page.screenshot(path=str(ARTIFACTS / "web-report.png"), full_page=True)

            # The library: filter it, open a model page, search a checkpoint against it.
            page.goto(base + "/library")
            page.fill("#q", "llama")
            page.click("#filter-form button[type=submit]")
            page.wait_for_url(f"{base}/library?*")
            names = page.locator("#entries td.mono a").all_inner_texts()
            assert names == ["fixtures/llama-2-tiny-random.gguf", "fixtures/llama2xs.model.bin"]
            page.screenshot(path=str(ARTIFACTS / "web-library.png"), full_page=True)
            page.click("text=fixtures/llama2xs.model.bin")
            assert "random directions" in page.locator("#contents").inner_text()
            page.screenshot(path=str(ARTIFACTS / "web-library-model.png"), full_page=True)
            page.goto(base + "/library")
            page.fill("#search-path", "stories260K.bin")
            page.click("#search-form button[type=submit]")
            page.wait_for_url(f"{base}/jobs/*")
            found = page.wait_for_selector("#verdict", timeout=VERDICT_TIMEOUT_MS)
            assert found is not None and found.get_attribute("data-verdict") == "identical"
            assert "fixtures/stories260K.bin" in page.locator("#reason").inner_text()
            page.screenshot(path=str(ARTIFACTS / "web-search.png"), full_page=True)
        finally:
            browser.close()
    assert requested and all(url.startswith(base + "/") for url in requested), requested  # nothing external
    assert (ARTIFACTS / "web-compare.png").stat().st_size > 0
