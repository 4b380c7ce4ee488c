"""Crashes the fuzz tests found that the adversarial pass of issue 13 had not listed, one test each.

Each builds its input the way the fuzzer did, small, and runs it through the CLI in this process
(`fuzz_support.run_cli`: a strict UTF-8 stdout like a terminal's, internal errors propagate).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

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


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_non_finite_and_huge_weights_still_compare_and_fingerprint(tmp_path: Path) -> None:
    """A weight of infinity, and finite float32 values whose products overflow, made the sketches
    NaN and LAPACK refuse them: ``compare`` and ``library add`` were exit 70 (LinAlgError). Every
    overflow on the way is expected and handled where it happens: none leaks as a NumPy warning."""
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


def _tiny_llama(directory: Path) -> Path:
    from foreign_layouts import make_tiny_llama

    return make_tiny_llama(directory, hidden=16, layers=1, heads=2, kv_heads=1, intermediate=32, vocab=32)


def test_a_lone_surrogate_in_a_model_card_is_replaced(tmp_path: Path) -> None:
    """YAML's ``"\\ud800"`` escape put a lone surrogate in the declared licence and base model:
    ``audit`` could not print it and ``convert`` could not write the new card (exit 70)."""
    model = _tiny_llama(tmp_path / "model")
    (model / "README.md").write_text('---\nlicense: "\\ud800"\nbase_model: "org/a\\udfffb"\n---\n# card\n')

    code, out = run_cli("audit", "--format", "json", str(model))
    assert code == 0 and "org/a\ufffdb" in json.loads(out)["declared"]["base_model"]["value"]
    code, _ = run_cli(
        "convert", str(model), "--to", "llama", "--output", str(tmp_path / "out"), "--no-verify"
    )
    assert code == 0
    assert "org/a\ufffdb" in (tmp_path / "out" / "README.md").read_text(encoding="utf-8")


def test_deeply_nested_flow_collections_in_a_card_are_refused_before_yaml_parses_them(tmp_path: Path) -> None:
    """PyYAML's scanner is quadratic in flow nesting: a 6 KB front matter of ``[`` took about 3 s
    per parse (each command parses the card once or twice). It is now ignored with a note."""
    from unshell.declared import MAX_FLOW_DEPTH, read_card_front_matter

    card = tmp_path / "README.md"
    card.write_text("---\nlicense: mit\ntags: " + "[" * 3000 + "]" * 3000 + "\n---\n")
    notes: list[str] = []
    assert read_card_front_matter(card, notes) is None
    assert notes == [f"README.md: front matter nests [ and {{ more than {MAX_FLOW_DEPTH} deep, ignored"]

    card.write_text('---\nlicense: mit\ntags: [a, [b, {c: [d]}]]\nname: "[[[["\n---\n')
    assert read_card_front_matter(card, notes) == {
        "license": "mit",
        "tags": ["a", ["b", {"c": ["d"]}]],
        "name": "[[[[",
    }


def test_the_inspect_page_refuses_a_negative_root(tmp_path: Path) -> None:
    """``/inspect?root=-1`` reached ``PathRef(root=-1)``, whose validation error was a 500."""
    from fastapi.testclient import TestClient

    from unshell.web import create_app

    with TestClient(
        create_app([tmp_path], library=tmp_path / "lib.sqlite"),
        base_url="http://127.0.0.1:8000",
        raise_server_exceptions=False,
    ) as client:
        response = client.get("/inspect", params={"path": "x", "root": "-1"})
    assert response.status_code == 422
    assert "root" in response.text


def test_a_shard_name_longer_than_the_system_allows_is_a_missing_shard(tmp_path: Path) -> None:
    """A weight map naming a 301-byte shard file: ``is_file`` raised ENAMETOOLONG, which the CLI
    reported as exit 19, "cannot read input" (an I/O error), instead of a corrupt index."""
    import numpy as np

    from unshell.formats.safetensors import write_safetensors

    write_safetensors(tmp_path / "a.safetensors", {"model.norm.weight": np.ones(4, np.float32)})
    index = {"metadata": {}, "weight_map": {"model.norm.weight": "x" * 301}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))

    code, _ = run_cli("inspect", str(tmp_path))
    assert code == 14
