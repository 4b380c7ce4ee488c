"""`unshell probe`'s parts, fast: prompt sets, statistics, cache, budget, endpoint protocol.

The endpoint tests talk HTTP to a small in-process OpenAI-style server written here (stdlib
http.server) because they test the client's protocol handling: retries, fallback to chat, the
budget, the API key. The verdicts on real models are in test_probe_real.py (llama.cpp's server).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import unshell
from unshell.behaviour import load_prompts
from unshell.behaviour.backends import EndpointBackend
from unshell.behaviour.cache import ResponseCache
from unshell.behaviour.statistics import exchangeable_p, holm, text_agreement
from unshell.cli.main import main
from unshell.errors import BudgetExhaustedError, EndpointError, UsageError

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
]


def _answer(model: str, prompt: str) -> str:
    """Each "family" answers every prompt with its own pseudo-random words; a copy answers alike."""
    family = model.split("-")[0]
    digest = hashlib.sha256(f"{family}|{prompt}".encode()).digest()
    return " " + " ".join(WORDS[b % len(WORDS)] for b in digest[:6])


class _Handler(BaseHTTPRequestHandler):
    server: _Stub

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        stub = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        stub.seen.append((self.path, body, self.headers.get("Authorization")))
        if stub.failures > 0:
            stub.failures -= 1
            self.send_response(503)
            self.end_headers()
            return
        if self.path == "/v1/completions" and stub.chat_only:
            self.send_response(404)
            self.end_headers()
            return
        if self.path == "/v1/completions":
            choice: dict[str, Any] = {"text": _answer(body["model"], body["prompt"])}
        else:
            choice = {
                "message": {
                    "role": "assistant",
                    "content": _answer(body["model"], body["messages"][0]["content"]),
                }
            }
        data = json.dumps({"choices": [choice], "usage": {"total_tokens": 10}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Stub(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, dict[str, Any], str | None]] = []
        self.failures = 0
        self.chat_only = False
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def stub() -> Iterator[_Stub]:
    server = _Stub()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _probe(stub: _Stub, tmp_path: Path, **options: Any) -> unshell.ProbeResult:
    return unshell.probe(
        f"{stub.url}#suspect-copy",
        against=[f"{stub.url}#suspect", f"{stub.url}#other"],
        controls=[f"{stub.url}#control1", f"{stub.url}#control2"],
        cache_dir=tmp_path / "cache",
        **{"prompts": 24, "max_tokens": 8, **options},
    )


# --- prompt sets ---------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_prompts() -> None:
    assert load_prompts(count=20, seed=7) == load_prompts(count=20, seed=7)
    assert load_prompts(count=20, seed=7).prompts != load_prompts(count=20, seed=8).prompts
    everything = load_prompts().prompts
    assert len(everything) == len(set(everything)) == 96
    assert set(load_prompts(count=20, seed=3).prompts) <= set(everything)


def test_asking_for_more_prompts_than_the_set_holds_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="96 prompts"):
        load_prompts(count=97)
    with pytest.raises(UsageError, match="no prompt set"):
        load_prompts("general-v0")


# --- statistics ----------------------------------------------------------------------------------


def test_text_agreement_is_the_shared_prefix_over_the_longer_text() -> None:
    assert text_agreement(" Paris.  It is", "Paris. It is") == 1.0
    assert text_agreement("abcd", "abxy") == 0.5
    assert text_agreement("", "") == 1.0
    assert text_agreement("", "x") == 0.0


def test_the_randomization_test_holds_its_level_when_the_candidate_is_one_more_control() -> None:
    rng = np.random.default_rng(1)
    p_values = [exchangeable_p(rng.random((32, 3)), seed=i, draws=2000) for i in range(300)]
    rejected = np.mean(np.array(p_values) < 0.05)
    assert 0.02 <= rejected <= 0.09


def test_the_randomization_test_rejects_a_candidate_that_always_agrees_best() -> None:
    scores = np.column_stack([np.full(32, 0.9), np.full(32, 0.1), np.full(32, 0.2)])
    assert exchangeable_p(scores, draws=5000) == pytest.approx(1 / 5001)


def test_holm_adjusts_step_down() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


# --- cache ---------------------------------------------------------------------------------------


def test_the_cache_keeps_answers_and_ignores_a_torn_last_line(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    cache.put("k1", {"text": "one"})
    with (tmp_path / "responses.jsonl").open("a") as stream:
        stream.write('{"key": "k2", "respo')  # the process died mid-write
    reopened = ResponseCache(tmp_path)
    assert len(reopened) == 1 and reopened.get("k1") == {"text": "one"}


# --- the endpoint protocol -----------------------------------------------------------------------


def test_verdicts_from_an_endpoint(stub: _Stub, tmp_path: Path) -> None:
    result = _probe(stub, tmp_path)
    verdicts = {c.candidate.split(" @ ")[0]: c.verdict for c in result.candidates}
    assert verdicts == {"suspect": "same-model", "other": "not-derived"}
    assert result.spending.requests == 5 * 24 and result.spending.tokens == 10 * 5 * 24
    assert result.mode == "completion"


def test_a_second_probe_is_answered_from_the_cache(stub: _Stub, tmp_path: Path) -> None:
    _probe(stub, tmp_path)
    sent = len(stub.seen)
    again = _probe(stub, tmp_path)
    assert len(stub.seen) == sent
    assert again.spending.requests == 0 and again.spending.cached == 5 * 24


def test_a_spent_budget_decides_on_the_prompts_answered(stub: _Stub, tmp_path: Path) -> None:
    result = _probe(stub, tmp_path, budget=5 * 12)
    assert result.prompts_used == 12 and len(stub.seen) == 5 * 12
    assert any("budget spent" in note for note in result.notes)
    with pytest.raises(BudgetExhaustedError, match="larger --budget"):
        _probe(stub, tmp_path / "fresh", budget=20)


def test_an_endpoint_without_completions_is_asked_in_chat_mode(stub: _Stub, tmp_path: Path) -> None:
    stub.chat_only = True
    result = _probe(stub, tmp_path)
    assert result.mode == "chat"
    assert {c.verdict for c in result.candidates} == {"same-model", "not-derived"}


def test_server_errors_are_retried_with_backoff(stub: _Stub) -> None:
    stub.failures = 2
    backend = EndpointBackend(stub.url, "suspect", backoff_s=0.01)
    assert backend.complete("hello", 4, "completion").text == _answer("suspect", "hello")
    assert len(stub.seen) == 3
    stub.failures = 5
    with pytest.raises(EndpointError, match="unreachable after 3 tries: HTTP 503"):
        EndpointBackend(stub.url, "suspect", retries=2, backoff_s=0.01).complete("hello", 4, "completion")


def test_the_api_key_is_sent_but_never_stored_or_shown(
    stub: _Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBE_TEST_KEY", "sk-secret-123")
    _probe(stub, tmp_path, api_key_env="PROBE_TEST_KEY", prompts=8)
    assert {auth for _, _, auth in stub.seen} == {"Bearer sk-secret-123"}
    assert "sk-secret-123" not in (tmp_path / "cache" / "responses.jsonl").read_text()
    stub.failures = 10
    with pytest.raises(EndpointError) as raised:
        EndpointBackend(stub.url, "x", api_key_env="PROBE_TEST_KEY", retries=0).complete("q", 1, "completion")
    assert "sk-secret" not in str(raised.value)


# --- the CLI -------------------------------------------------------------------------------------


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_cli_json_table_and_exit_codes(
    stub: _Stub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["probe", "--endpoint", stub.url, "--model", "suspect-copy", "--against", f"{stub.url}#suspect"]
    base += ["--controls", f"{stub.url}#control1", "--prompts", "16", "--cache", str(tmp_path)]
    code, out, _ = _run([*base, "--format", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "unshell.probe/1" and doc["candidates"][0]["verdict"] == "same-model"
    code, out, _ = _run(base, capsys)
    assert code == 0 and "SAME-MODEL" in out and "16 of 16" in out
    code, _, err = _run([*base, "--budget", "4", "--seed", "1"], capsys)
    assert code == 41 and err.count("\n") == 1 and "larger --budget" in err
    code, _, err = _run([*base, "--against", "http://127.0.0.1:9"], capsys)
    assert code == 40 and "URL#MODEL" in err
    code, _, err = _run(["probe", "x.gguf", "--against", "y.gguf"], capsys)
    assert code == 2
    code, _, err = _run(
        ["probe", "--endpoint", stub.url, "--against", "y.gguf", "--controls", "z.gguf"], capsys
    )
    assert code == 2 and "--model" in err


# --- behavioural profiles in the library ---------------------------------------------------------


def test_a_recorded_profile_answers_like_the_live_model(stub: _Stub, tmp_path: Path) -> None:
    from unshell.behaviour.profiles import record_profile
    from unshell.library import Library

    library_path = tmp_path / "library.sqlite"
    with Library(library_path) as library:
        for name in ("suspect", "other", "control1", "control2"):
            record_profile(f"{stub.url}#{name}", name, library, prompts=24, max_tokens=8, use_cache=False)
    sent = len(stub.seen)
    assert sent == 4 * 24
    live = _probe(stub, tmp_path)
    recorded = unshell.probe(
        f"{stub.url}#suspect-copy",
        against=["library:suspect", "library:other"],
        controls=["library:control1", "library:control2"],
        cache_dir=tmp_path / "cache",
        library=library_path,
        prompts=24,
        max_tokens=8,
    )
    assert len(stub.seen) == sent + 5 * 24  # the live probe's; the profiles sent nothing
    assert recorded.spending.requests == 0 and recorded.spending.cached == 24  # the suspect's answers
    assert [c.verdict for c in recorded.candidates] == [c.verdict for c in live.candidates]
    assert [c.agreement for c in recorded.candidates] == [c.agreement for c in live.candidates]
    assert recorded.candidates[0].candidate == "library:suspect"


def test_a_profile_must_hold_the_probes_prompts_and_settings(stub: _Stub, tmp_path: Path) -> None:
    from unshell.behaviour.profiles import record_profile
    from unshell.library import Library

    library_path = tmp_path / "library.sqlite"
    with Library(library_path) as library:
        record_profile(f"{stub.url}#suspect", "suspect", library, prompts=8, max_tokens=8, use_cache=False)
        with pytest.raises(UsageError, match="--replace"):
            record_profile(
                f"{stub.url}#suspect", "suspect", library, prompts=8, max_tokens=8, use_cache=False
            )

    def probe_with(**options: Any) -> unshell.ProbeResult:
        return unshell.probe(
            f"{stub.url}#suspect-copy",
            against=["library:suspect"],
            controls=[f"{stub.url}#control1"],
            use_cache=False,
            library=library_path,
            **{"prompts": 8, "max_tokens": 8, **options},
        )

    assert probe_with().candidates[0].verdict in ("same-model", "inconclusive")
    with pytest.raises(UsageError, match="lacks a prompt"):
        probe_with(prompts=12)
    with pytest.raises(UsageError, match="at 8 tokens"):
        probe_with(max_tokens=4)
    with pytest.raises(UsageError, match="no general-v1 profile of 'missing'"):
        unshell.probe(
            f"{stub.url}#x", against=["library:missing"], controls=[f"{stub.url}#y"], library=library_path
        )


def test_cli_library_profile(stub: _Stub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    library = str(tmp_path / "library.sqlite")
    argv = ["library", "profile", "suspect", f"{stub.url}#suspect", "--prompts", "8", "--max-tokens", "8"]
    code, out, _ = _run([*argv, "--library", library, "--no-cache", "--format", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["profile"]["prompts"] == 8 and doc["profile"]["mode"] == "completion"
    assert doc["spent"]["requests"] == 8
    code, _, err = _run([*argv, "--library", library, "--no-cache"], capsys)
    assert code == 2 and "--replace" in err and err.count("\n") == 1
    code, out, _ = _run([*argv, "--library", library, "--no-cache", "--replace"], capsys)
    assert code == 0 and "8 from general-v1" in out


def test_cli_html_report(stub: _Stub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "probe.html"
    argv = ["probe", f"{stub.url}#suspect-copy", "--against", f"{stub.url}#suspect", "--against"]
    argv += [f"{stub.url}#other", "--controls", f"{stub.url}#control1", "--controls", f"{stub.url}#control2"]
    code, _, err = _run([*argv, "--prompts", "24", "--cache", str(tmp_path), "--html", str(report)], capsys)
    assert code == 0 and "report written to" in err
    page = report.read_text(encoding="utf-8")
    assert "VERDICT: SAME-MODEL" in page and "VERDICT: NOT-DERIVED" in page
    assert "suspect @ " in page and "control2 @ " in page  # every model is named
    assert "distilled" in page  # what a black-box test cannot see
    assert "<script src" not in page and "<link" not in page  # self-contained


def test_search_by_behaviour_probes_every_profile_in_the_library(
    stub: _Stub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from unshell.behaviour.profiles import record_profile
    from unshell.library import Library

    library = tmp_path / "library.sqlite"
    with Library(library) as opened:
        for name in ("suspect", "other", "control1", "control2"):
            record_profile(f"{stub.url}#{name}", name, opened, prompts=24, max_tokens=8, use_cache=False)
    argv = ["search", "--endpoint", stub.url, "--model", "suspect-copy", "--controls", "library:control1"]
    argv += [
        "--controls",
        "library:control2",
        "--prompts",
        "24",
        "--max-tokens",
        "8",
        "--library",
        str(library),
    ]
    code, out, _ = _run([*argv, "--cache", str(tmp_path / "cache"), "--format", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert {c["candidate"]: c["verdict"] for c in doc["candidates"]} == {
        "library:other": "not-derived",
        "library:suspect": "same-model",
    }
    assert doc["spent"]["requests"] == 24  # only the suspect was asked
    code, _, err = _run([*argv[:5], "--library", str(library)], capsys)
    assert code == 2 and "--controls" in err
    code, _, err = _run([*argv, "--max-tokens", "4"], capsys)
    assert code == 2 and "no general-v1 profiles at 4 tokens" in err


def test_a_local_folder_must_be_a_hugging_face_checkpoint(tmp_path: Path) -> None:
    from unshell.behaviour.backends import open_backend
    from unshell.errors import UnsupportedFormatError

    with pytest.raises(UnsupportedFormatError, match=r"config\.json"):
        open_backend(str(tmp_path))
