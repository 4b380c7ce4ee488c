"""`unshell probe` against real models served by llama.cpp's OpenAI-compatible server.

Five real GGUF models, each served once for the module by `python -m llama_cpp.server` on a
loopback port: SmolLM2-135M-Instruct as published (Q4_1), the same file re-quantized to Q8_0 by
llama.cpp's quantizer, a short fine-tune of it (`tools/smollm2_finetune.py`: its last 6 blocks
trained 16 steps on Python's documentation), Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) and
Gemma-3-270M (Q4_K_M). The
first probe runs as a CLI process that is killed with SIGKILL part-way, then resumed; every later
probe reads the answers from that cache, so each server answers each prompt once (the servers'
own access logs count what was sent).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import unshell
from artifacts import fetch
from llama_server import LlamaServer, finetuned_smollm2, requantized_smollm2
from unshell.behaviour.cache import ResponseCache
from unshell.behaviour.probe import SAME_MODEL_EXACT

pytestmark = pytest.mark.slow

PROMPTS = 24
MAX_TOKENS = 8
KILL_AFTER = 6  # completions the suspect's server has answered when the first run is killed
TIMEOUT_S = 600  # per request: one llama.cpp thread on a machine shared with other jobs can be slow
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LlamaServer]]:
    logs = tmp_path_factory.mktemp("llama-logs")
    models = {
        "smollm2": fetch("smollm2_gguf"),
        "smollm2-q8": requantized_smollm2("Q8_0"),
        "smollm2-ft": finetuned_smollm2(),
        "qwen": fetch("qwen05_gguf"),
        "gemma": fetch("gemma3_gguf"),
    }
    started: dict[str, LlamaServer] = {}
    try:
        for name, path in models.items():
            started[name] = LlamaServer(path, name, logs / f"{name}.log")
        yield started
    finally:
        for server in started.values():
            server.stop()


def _cli(servers: dict[str, LlamaServer], cache: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "unshell",
        "probe",
        "--endpoint",
        servers["smollm2-q8"].url,
        "--model",
        "smollm2-q8",
        "--against",
        servers["smollm2"].spec,
        "--controls",
        servers["qwen"].spec,
        "--controls",
        servers["gemma"].spec,
        "--prompts",
        str(PROMPTS),
        "--max-tokens",
        str(MAX_TOKENS),
        "--cache",
        str(cache),
        "--timeout",
        str(TIMEOUT_S),
        *extra,
    ]


@pytest.fixture(scope="module")
def resumed(servers: dict[str, LlamaServer], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the probe as a process, SIGKILL it part-way, then run it again over the same cache."""
    cache = tmp_path_factory.mktemp("probe-cache")
    env = {**os.environ, "PYTHONPATH": SRC}
    first = subprocess.Popen(_cli(servers, cache), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while servers["smollm2-q8"].completions_served() < KILL_AFTER and first.poll() is None:
        assert time.monotonic() < deadline, "the first probe made no progress"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    cached_at_kill = len(ResponseCache(cache))
    second = subprocess.run(
        _cli(servers, cache, "--format", "json"), env=env, capture_output=True, text=True, timeout=3000
    )
    assert second.returncode == 0, second.stderr
    return {
        "cache": cache,
        "doc": json.loads(second.stdout),
        "cached_at_kill": cached_at_kill,
        "served_after": {name: server.completions_served() for name, server in servers.items()},
        "first_returncode": first.returncode,
    }


def test_a_killed_probe_resumes_without_resending_answered_requests(resumed: dict[str, Any]) -> None:
    assert resumed["first_returncode"] == -signal.SIGKILL
    cached = resumed["cached_at_kill"]
    assert KILL_AFTER <= cached < 4 * PROMPTS  # really killed part-way, with answers kept
    spent = resumed["doc"]["spent"]
    assert spent["cached"] == cached
    assert spent["requests"] + spent["cached"] == 4 * PROMPTS
    # What the servers answered in all: the resumed run's requests, the killed run's cached
    # answers, and at most the one request in flight when it died (answered, never cached).
    served = sum(resumed["served_after"].values())
    assert served - spent["requests"] - cached in (0, 1)
    assert spent["tokens"] > 0


def test_smollm2_requantized_is_the_same_model_as_the_original(resumed: dict[str, Any]) -> None:
    doc = resumed["doc"]
    assert doc["schema"] == "unshell.probe/1"
    assert doc["prompts"] == {
        "set": "general-v1",
        "seed": 0,
        "used": PROMPTS,
        "planned": PROMPTS,
        "max_tokens": MAX_TOKENS,
        "mode": "completion",
    }
    (candidate,) = doc["candidates"]
    assert candidate["verdict"] == "same-model", candidate
    assert candidate["p_value"] < doc["alpha"]
    assert candidate["first_token_logprob_distance"] is not None  # llama.cpp's server gives log-probs


def test_a_fine_tune_of_smollm2_is_derived_from_it(
    servers: dict[str, LlamaServer], resumed: dict[str, Any]
) -> None:
    result = unshell.probe(
        servers["smollm2-ft"].spec,
        against=[servers["smollm2"].spec],
        controls=[servers["qwen"].spec, servers["gemma"].spec],
        prompts=PROMPTS,
        max_tokens=MAX_TOKENS,
        cache_dir=resumed["cache"],
        timeout_s=TIMEOUT_S,
    )
    (candidate,) = result.candidates
    assert candidate.verdict == "derived", candidate
    assert candidate.p_value < result.alpha
    # Changed, but still far closer to SmolLM2 than the unrelated controls are.
    assert candidate.exact_match <= SAME_MODEL_EXACT  # not most of its answers
    assert candidate.agreement > 2 * max(result.control_agreements.values())
    assert result.spending.requests == PROMPTS  # only the fine-tune was asked: the rest was cached


@pytest.mark.parametrize(("suspect", "control"), [("qwen", "gemma"), ("gemma", "qwen")])
def test_qwen_and_gemma_are_not_derived_from_smollm2(
    servers: dict[str, LlamaServer], resumed: dict[str, Any], suspect: str, control: str
) -> None:
    before = {name: server.completions_served() for name, server in servers.items()}
    result = unshell.probe(
        servers[suspect].spec,
        against=[servers["smollm2"].spec],
        controls=[servers[control].spec],  # the one other model unrelated to both
        prompts=PROMPTS,
        max_tokens=MAX_TOKENS,
        cache_dir=resumed["cache"],
        timeout_s=TIMEOUT_S,
    )
    (candidate,) = result.candidates
    assert candidate.verdict == "not-derived", candidate
    assert candidate.p_value >= result.alpha
    assert result.spending.requests == 0  # all answered by the cache the first probe filled
    assert {name: server.completions_served() for name, server in servers.items()} == before


def test_a_local_gguf_gives_what_its_endpoint_gives(
    servers: dict[str, LlamaServer], resumed: dict[str, Any]
) -> None:
    local = unshell.probe(
        str(requantized_smollm2("Q8_0")),
        against=[servers["smollm2"].spec],
        controls=[servers["qwen"].spec, servers["gemma"].spec],
        prompts=PROMPTS,
        max_tokens=MAX_TOKENS,
        cache_dir=resumed["cache"],
        timeout_s=TIMEOUT_S,
        threads=1,
    )
    assert local.spending.requests == PROMPTS  # only the local file was asked: it is a new identity
    (endpoint,) = resumed["doc"]["candidates"]
    (candidate,) = local.candidates
    assert candidate.verdict == endpoint["verdict"] == "same-model"
    # Same file, same greedy decoding: the same text on every prompt, so the same agreement.
    assert candidate.agreement == pytest.approx(endpoint["agreement"], abs=1e-12)
    assert candidate.exact_match == pytest.approx(endpoint["exact_match"], abs=1e-12)
    assert local.control_agreements == pytest.approx(
        {c["model"]: c["agreement"] for c in resumed["doc"]["controls"]}, abs=1e-12
    )


def test_a_library_profile_stands_in_for_the_live_candidate(
    servers: dict[str, LlamaServer], resumed: dict[str, Any], tmp_path: Path
) -> None:
    from unshell.behaviour.backends import EndpointBackend
    from unshell.library import Library
    from unshell.library.profiles import profiles_of

    library = tmp_path / "library.sqlite"
    command = [sys.executable, "-m", "unshell", "library", "profile", "smollm2", servers["smollm2"].spec]
    command += ["--prompts", str(PROMPTS), "--max-tokens", str(MAX_TOKENS), "--no-cache"]
    command += ["--library", str(library), "--format", "json", "--timeout", str(TIMEOUT_S)]
    recorded = subprocess.run(
        command,
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert recorded.returncode == 0, recorded.stderr
    assert json.loads(recorded.stdout)["spent"]["requests"] == PROMPTS  # asked live, not from a cache
    with Library(library) as opened:
        (profile,) = profiles_of(opened, "smollm2")
    live = EndpointBackend(servers["smollm2"].url, "smollm2", timeout_s=TIMEOUT_S)
    for prompt in list(profile.answers)[:3]:
        assert profile.answers[prompt]["text"] == live.complete(prompt, MAX_TOKENS, "completion").text

    def against_profile(suspect: str) -> unshell.ProbeResult:
        return unshell.probe(
            servers[suspect].spec,
            against=["library:smollm2"],
            controls=[servers["qwen"].spec, servers["gemma"].spec],
            prompts=PROMPTS,
            max_tokens=MAX_TOKENS,
            cache_dir=resumed["cache"],
            library=library,
            timeout_s=TIMEOUT_S,
        )

    same = against_profile("smollm2-q8")
    (endpoint,) = resumed["doc"]["candidates"]
    assert same.candidates[0].verdict == endpoint["verdict"] == "same-model"
    assert same.candidates[0].agreement == pytest.approx(endpoint["agreement"], abs=1e-12)
    assert same.candidates[0].exact_match == pytest.approx(endpoint["exact_match"], abs=1e-12)
    assert same.spending.requests == 0  # the suspect and controls from the cache, the candidate recorded
    assert against_profile("smollm2-ft").candidates[0].verdict == "derived"
