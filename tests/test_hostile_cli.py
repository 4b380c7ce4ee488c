"""The hostile corpus through the real CLI: one line on stderr, the documented exit code, no
traceback, no hang, bounded memory, and no code execution.

The per-format generators live beside their reader tests (`hostile_files.py`,
`hostile_gguf_onnx.py`); this module adds format-independent cases and runs every file in a
subprocess under an address-space limit and a timeout.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import hostile_files
import hostile_gguf_onnx
from unshell import errors

MEMORY_LIMIT = 1536 * 1024 * 1024
TIMEOUT_SECONDS = 30
MARKER = Path("/tmp/unshell_hostile_marker")


def _generic_cases(directory: Path) -> dict[str, type[Exception]]:
    cases: dict[str, type[Exception]] = {}
    (directory / "empty.bin").write_bytes(b"")
    cases["empty.bin"] = errors.NotACheckpointError
    (directory / "random.bin").write_bytes(os.urandom(4096))
    cases["random.bin"] = errors.NotACheckpointError
    (directory / "text.safetensors").write_text("this is not a checkpoint\n")
    cases["text.safetensors"] = errors.NotACheckpointError
    (directory / "weightless").mkdir()
    (directory / "weightless" / "config.json").write_text('{"model_type": "llama"}')
    cases["weightless"] = errors.NotACheckpointError
    (directory / "bad.index.json").write_text("{not json")
    cases["bad.index.json"] = errors.CorruptCheckpointError
    os.mkfifo(directory / "pipe.safetensors")
    cases["pipe.safetensors"] = errors.NotACheckpointError
    cases["does-not-exist"] = errors.PathNotFoundError
    return cases


def _corpus(directory: Path) -> dict[str, type[Exception]]:
    cases = _generic_cases(directory)
    for maker in (hostile_files.make_hostile_files, hostile_gguf_onnx.make_hostile_files):
        produced = maker(directory)
        assert produced, f"{maker.__module__} produced no hostile files"
        cases.update(produced)
    return cases


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, type[Exception]]]:
    directory = tmp_path_factory.mktemp("hostile")
    return directory, _corpus(directory)


def test_corpus_is_large_and_covers_every_error_kind(corpus: tuple[Path, dict[str, type[Exception]]]) -> None:
    _, cases = corpus
    assert len(cases) >= 30
    kinds = set(cases.values())
    for kind in (
        errors.NotACheckpointError,
        errors.CorruptCheckpointError,
        errors.InconsistentHeaderError,
        errors.UnsafePickleError,
        errors.UnsupportedFormatError,
    ):
        assert any(issubclass(k, kind) for k in kinds), kind


def test_every_hostile_file_gets_one_line_and_its_exit_code(
    corpus: tuple[Path, dict[str, type[Exception]]],
) -> None:
    directory, cases = corpus
    MARKER.unlink(missing_ok=True)
    failures = []
    for name, expected in sorted(cases.items()):
        completed = subprocess.run(
            [sys.executable, "-m", "unshell", "inspect", str(directory / name)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            preexec_fn=_limit_memory,
            env={**os.environ, "UNSHELL_DEBUG": ""},
        )
        lines = completed.stderr.strip().splitlines()
        if completed.returncode != expected.exit_code or len(lines) != 1 or "Traceback" in completed.stderr:
            failures.append(
                f"{name}: exit {completed.returncode} (want {expected.exit_code} {expected.__name__}), stderr {completed.stderr.strip()[:300]!r}"
            )
        elif not lines[0].startswith("error: "):
            failures.append(f"{name}: stderr does not start with 'error: ': {lines[0]!r}")
    assert not failures, "\n".join(failures)
    assert not MARKER.exists(), "a hostile pickle ran code"
    assert not (directory / hostile_files.PWNED_MARKER).exists(), "a hostile pickle ran code"
