"""Every row of the README's exit-code table, produced through the CLI by the case it names.

Each case builds its input (real fixtures, or a small file made here) and runs ``unshell`` as its
console script does (`unshell.cli.main.main`). Where a row is about something no small input can
cause (running out of memory, a Ctrl-C, a bug, a verification that fails), the library call the
command makes is replaced by one raising what that situation raises, so the row is still checked
end to end through the CLI's one error mapping. A new row without a case here fails the test.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import torchzip
from hostile_files import safetensors_bytes
from unshell import errors

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "fixtures"
STORIES = FIXTURES / "stories260K.bin"

Case = Callable[[Path, pytest.MonkeyPatch], list[str]]


def readme_exit_codes() -> dict[int, str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("### Exit codes") :]
    table = table[: table.index("\n### ", 10)]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+) \|$", table, flags=re.M)}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from unshell.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    captured = capsys.readouterr()
    code = exit_.value.code
    return (code if isinstance(code, int) else 1), captured.out, captured.err


def _fail_with(monkeypatch: pytest.MonkeyPatch, module: str, name: str, error: BaseException) -> None:
    def raising(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(f"{module}.{name}", raising)


# -- one case per row -------------------------------------------------------------------------------


def success(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return ["inspect", str(STORIES)]


def finding(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # A llama2.c file can declare nothing: the audit's level is `note`.
    return ["audit", str(STORIES), "--fail-on", "note"]


def usage(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return ["compare", str(STORIES)]  # B is missing


def unusable(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # The generic input error: a reader that cannot use the input without saying more.
    _fail_with(monkeypatch, "unshell.inspection", "inspect", errors.InputError("model.bin: unusable input"))
    return ["inspect", str(STORIES)]


def not_found(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return ["inspect", str(tmp / "missing.safetensors")]


def not_a_checkpoint(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    (tmp / "notes.bin").write_bytes(b"these are my notes, not weights\n" * 8)
    return ["inspect", str(tmp / "notes.bin")]


def unsupported_variant(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # GGUF magic then version 3 written big-endian.
    (tmp / "big-endian.gguf").write_bytes(b"GGUF" + struct.pack(">I", 3) + b"\0" * 64)
    return ["inspect", str(tmp / "big-endian.gguf")]


def truncated(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    whole = FIXTURES / "llama-2-tiny-random.gguf"
    (tmp / "cut.gguf").write_bytes(whole.read_bytes()[:-100])  # a download cut short
    return ["inspect", str(tmp / "cut.gguf")]


def header_lies(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    header = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}  # 4 floats are 16 bytes
    (tmp / "lies.safetensors").write_bytes(safetensors_bytes(header, b"\0" * 12))
    return ["inspect", str(tmp / "lies.safetensors")]


def unsafe_pickle(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import os

    class RunsCode:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("true",))

    torchzip.write_zip(tmp / "evil.pt", pickle.dumps({"model": RunsCode()}, protocol=2), {})
    return ["inspect", str(tmp / "evil.pt")]


def over_a_bound(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # A tensor of rank 9 (the bound is 8: `formats.base.MAX_RANK`).
    header = {"w": {"dtype": "F32", "shape": [1] * 9, "data_offsets": [0, 4]}}
    (tmp / "rank-9.safetensors").write_bytes(safetensors_bytes(header, b"\0" * 4))
    return ["inspect", str(tmp / "rank-9.safetensors")]


def no_such_tensor(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # `convert --mapping` naming a tensor the checkpoint lacks reaches Checkpoint's own lookup.
    _fail_with(
        monkeypatch, "unshell.conversion", "convert", errors.TensorNotFoundError("no tensor named 'x.weight'")
    )
    return ["convert", str(STORIES), "-o", str(tmp / "out"), "--no-verify"]


def io_error(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return ["compare", str(STORIES), str(STORIES), "--html", str(tmp / "no-such-folder" / "report.html")]


def extra_needed(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import sys

    monkeypatch.setitem(sys.modules, "unshell.web", None)  # as if FastAPI were not installed
    return ["serve", "--root", str(tmp)]


def out_of_memory(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    _fail_with(monkeypatch, "unshell.inspection", "inspect", MemoryError())
    return ["inspect", str(STORIES)]


def address_unavailable(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    monkeypatch.setattr(f"{__name__}._BUSY", busy)  # kept open until the test ends
    return ["serve", "--root", str(tmp), "--port", str(busy.getsockname()[1])]


_BUSY: object = None


def stale_fingerprint(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # A schema-3 library holding a format-1 fingerprint (made as that unshell stored it).
    import sqlite3

    from unshell.library import Library

    path = tmp / "old.sqlite"
    library = Library(path)
    library.db.execute("INSERT INTO fingerprints (name, added, fingerprint_version) VALUES ('old', 1.0, 1)")
    library.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    return ["library", "list", "--library", str(path)]


def convert_refused(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    _fail_with(
        monkeypatch,
        "unshell.conversion",
        "convert",
        errors.ConversionRefusedError("bert uses LayerNorm and learned positions: not Llama"),
    )
    return ["convert", str(STORIES), "-o", str(tmp / "out"), "--no-verify"]


def output_exists(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "keep.txt").write_text("not empty")
    return ["convert", str(STORIES), "-o", str(tmp / "out"), "--no-verify"]


def ambiguous_roles(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    _fail_with(
        monkeypatch,
        "unshell.conversion",
        "convert",
        errors.AmbiguousRolesError("layers.0.a / layers.0.b: k or v? pass --mapping"),
    )
    return ["convert", str(STORIES), "-o", str(tmp / "out"), "--no-verify"]


def verification_failed(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    _fail_with(
        monkeypatch,
        "unshell.conversion",
        "convert",
        errors.VerificationFailedError("logits differ by 0.3 (tolerance 1e-4): nothing written"),
    )
    return ["convert", str(STORIES), "-o", str(tmp / "out"), "--verify"]


def internal_error(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.delenv("UNSHELL_DEBUG", raising=False)
    _fail_with(monkeypatch, "unshell.inspection", "inspect", ZeroDivisionError("a bug"))
    return ["inspect", str(STORIES)]


def interrupted(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    _fail_with(monkeypatch, "unshell.inspection", "inspect", KeyboardInterrupt())
    return ["inspect", str(STORIES)]


class _OpenAIStyle(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible endpoint: model "refuse" is refused (HTTP 401), any other model
    answers every completion with one fixed word."""

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("model") == "refuse":
            self.send_response(401)
            self.end_headers()
            return
        data = json.dumps({"choices": [{"text": " word"}], "usage": {"total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


_ENDPOINT: list[str] = []


def endpoint_url() -> str:
    """One loopback server for the probe rows, started on first use (a daemon thread)."""
    if not _ENDPOINT:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _OpenAIStyle)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        _ENDPOINT.append(f"http://127.0.0.1:{server.server_address[1]}")
    return _ENDPOINT[0]


def endpoint_refuses(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    url = endpoint_url()
    return [
        "probe",
        "--endpoint",
        url,
        "--model",
        "refuse",
        "--against",
        f"{url}#a",
        "--controls",
        f"{url}#c",
        "--prompts",
        "8",
        "--no-cache",
    ]


def budget_spent(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # 3 requests answer 1 prompt for the suspect, the candidate and the control: 8 are needed.
    url = endpoint_url()
    return [
        "probe",
        "--endpoint",
        url,
        "--model",
        "s",
        "--against",
        f"{url}#a",
        "--controls",
        f"{url}#c",
        "--prompts",
        "8",
        "--budget",
        "3",
        "--no-cache",
    ]


CASES: dict[int, Case] = {
    0: success,
    1: finding,
    2: usage,
    10: unusable,
    11: not_found,
    12: not_a_checkpoint,
    13: unsupported_variant,
    14: truncated,
    15: header_lies,
    16: unsafe_pickle,
    17: over_a_bound,
    18: no_such_tensor,
    19: io_error,
    20: extra_needed,
    21: out_of_memory,
    22: address_unavailable,
    23: stale_fingerprint,
    30: convert_refused,
    31: output_exists,
    32: ambiguous_roles,
    33: verification_failed,
    40: endpoint_refuses,
    41: budget_spent,
    70: internal_error,
    130: interrupted,
}


def test_every_documented_exit_code_has_a_case() -> None:
    documented = readme_exit_codes()
    assert len(documented) >= 20
    assert set(documented) == set(CASES), (
        f"rows without a case: {sorted(set(documented) - set(CASES))}; "
        f"cases without a row: {sorted(set(CASES) - set(documented))}"
    )


@pytest.mark.parametrize("code", sorted(CASES))
def test_the_case_a_row_names_exits_with_its_code(
    code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = CASES[code](tmp_path, monkeypatch)
    exit_code, out, err = run(argv, capsys)
    assert exit_code == code, f"unshell {' '.join(argv)}: exit {exit_code}, README says {code}: {err}"
    if code == 0:
        assert out and not err
        return
    assert "Traceback" not in err
    if code not in (1, 2):  # 1 is a finding, 2 Click's usage text
        assert len(err.strip().splitlines()) == 1, err
    if code != 1 and argv[0] != "serve":  # serve prints no document, so it has no --format
        json_code, json_out, _ = run([*argv, "--json"], capsys)
        assert json_code == code
        assert json.loads(json_out)["exit_code"] == code


def test_a_file_cut_short_is_14_in_every_format_with_a_data_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Truncation reads as truncation (14), not as a header that lies (15): safetensors too."""
    tensor = np.arange(64, dtype=np.float32)
    header = {"w": {"dtype": "F32", "shape": [64], "data_offsets": [0, tensor.nbytes]}}
    whole = safetensors_bytes(header, tensor.tobytes())
    (tmp_path / "cut.safetensors").write_bytes(whole[:-100])
    code, _, err = run(["inspect", str(tmp_path / "cut.safetensors")], capsys)
    assert code == 14 and "truncated" in err, err
    # A header that puts a tensor far past the end, with nothing before it, is a lie, not a cut.
    lying = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [4096, 4112]}}
    (tmp_path / "far.safetensors").write_bytes(safetensors_bytes(lying, b"\0" * 16))
    assert run(["inspect", str(tmp_path / "far.safetensors")], capsys)[0] == 15
