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


def test_non_finite_and_huge_weights_still_compare_and_fingerprint(tmp_path: Path) -> None:
    """A weight of infinity, and finite float32 values whose products overflow, made the sketches
    NaN and LAPACK refuse them: ``compare`` and ``library add`` were exit 70 (LinAlgError)."""
    import numpy as np

    from foreign_layouts import make_tiny_llama
    from unshell.formats.safetensors import read_safetensors, write_safetensors

    base = make_tiny_llama(
        tmp_path / "base", hidden=16, layers=1, heads=2, kv_heads=1, intermediate=32, vocab=32
    )
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for side in base.iterdir():
        (damaged / side.name).write_bytes(side.read_bytes())
    with read_safetensors(base / "model.safetensors") as checkpoint:
        tensors = {name: checkpoint.read(name).copy() for name in checkpoint.tensors}
    tensors["model.layers.0.mlp.up_proj.weight"][0, 0] = np.inf
    tensors["model.layers.0.self_attn.q_proj.weight"][1, :] = np.nan
    tensors["model.layers.0.post_attention_layernorm.weight"][0] = 3e38  # overflows the gain fold
    tensors["model.embed_tokens.weight"][2, 3] = -np.inf
    write_safetensors(damaged / "model.safetensors", tensors)

    code, out = run_cli("compare", str(base), str(damaged))
    assert code == 0 and "VERDICT" in out
    code, _ = run_cli("library", "add", "--library", str(tmp_path / "lib.sqlite"), str(damaged))
    assert code == 0
    code, _ = run_cli("search", "--library", str(tmp_path / "lib.sqlite"), str(base))
    assert code == 0
