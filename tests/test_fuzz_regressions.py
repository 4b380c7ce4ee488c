"""Crashes the fuzz tests found that the adversarial pass of issue 13 had not listed, one test each.

Each builds its input the way the fuzzer did, small, and runs it through the CLI in this process
(`fuzz_support.run_cli`: a strict UTF-8 stdout like a terminal's, internal errors propagate).
"""

from __future__ import annotations

import struct
from pathlib import Path

from fuzz_support import run_cli


def test_a_lone_surrogate_in_a_tensor_name_is_printed_escaped(tmp_path: Path) -> None:
    """JSON allows ``\\ud800`` escapes; Python parses them into a str that no UTF-8 stream can
    write, so printing the name was exit 70 (UnicodeEncodeError) in both output formats."""
    header = b'{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)

    for fmt in ("table", "json"):
        code, out = run_cli("inspect", "--tensors", "--format", fmt, str(path))
        assert code == 0
        assert "\\ud800" in out
