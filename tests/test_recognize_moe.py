"""Mixture-of-experts layouts named by GGUF: shared experts (``_shexp``) and the expert counts.

The tensor tables are written to order (shapes only for recognition; zeros for the one file
``inspect`` reads), in llama.cpp's qwen2moe naming: the truths are the names themselves.
"""

from __future__ import annotations

import struct
from pathlib import Path

import gguf_writer as gw
import unshell
from unshell.arch.recognize import recognize

H, NH, NKV, D, I, S, E, V, L = 16, 4, 2, 4, 12, 20, 4, 32, 2
K = NKV * D

# GGUF name (with {i}) -> (shape, the role it must get).
GLOBALS = {
    "token_embd.weight": ((V, H), "embed.weight"),
    "output_norm.weight": ((H,), "final_norm.weight"),
    "output.weight": ((V, H), "lm_head.weight"),
}
LAYER = {
    "blk.{i}.attn_norm.weight": ((H,), "attn_norm.weight"),
    "blk.{i}.attn_q.weight": ((H, H), "attn.q.weight"),
    "blk.{i}.attn_q.bias": ((H,), "attn.q.bias"),
    "blk.{i}.attn_k.weight": ((K, H), "attn.k.weight"),
    "blk.{i}.attn_k.bias": ((K,), "attn.k.bias"),
    "blk.{i}.attn_v.weight": ((K, H), "attn.v.weight"),
    "blk.{i}.attn_v.bias": ((K,), "attn.v.bias"),
    "blk.{i}.attn_output.weight": ((H, H), "attn.o.weight"),
    "blk.{i}.ffn_norm.weight": ((H,), "ffn_norm.weight"),
    "blk.{i}.ffn_gate_inp.weight": ((E, H), "moe.router.weight"),
    "blk.{i}.ffn_gate_exps.weight": ((E, I, H), "moe.expert.gate.weight"),
    "blk.{i}.ffn_up_exps.weight": ((E, I, H), "moe.expert.up.weight"),
    "blk.{i}.ffn_down_exps.weight": ((E, H, I), "moe.expert.down.weight"),
    "blk.{i}.ffn_gate_inp_shexp.weight": ((1, H), "moe.shared_gate.weight"),
    "blk.{i}.ffn_gate_shexp.weight": ((S, H), "moe.shared.gate.weight"),
    "blk.{i}.ffn_up_shexp.weight": ((S, H), "moe.shared.up.weight"),
    "blk.{i}.ffn_down_shexp.weight": ((H, S), "moe.shared.down.weight"),
}


def _table() -> dict[str, tuple[tuple[int, ...], str]]:
    table = dict(GLOBALS)
    for layer in range(L):
        table.update({name.format(i=layer): entry for name, entry in LAYER.items()})
    return table


def test_gguf_shared_experts_get_the_shared_roles() -> None:
    table = _table()
    result = recognize([(name, shape) for name, (shape, _role) in table.items()])
    assert result.matched_family == "qwen2_moe"
    roles = {a.name: a.role for a in result.assignments}
    assert roles == {name: role for name, (_shape, role) in table.items()}
    shared = [a for a in result.assignments if "_shexp" in a.name]
    assert len(shared) == 4 * L
    assert all(a.resolved_by == "alias:gguf" for a in shared)


def test_hf_shared_expert_names_are_known_aliases() -> None:
    from unshell.arch.catalog import ecosystem_conventions, lookup_name

    for stem in ("shared_expert", "shared_experts"):
        hints = lookup_name(f"model.layers.{{i}}.mlp.{stem}.down_proj.weight")
        assert {h.role for h in hints} == {"moe.shared.down.weight"}
        assert any(h.convention in ecosystem_conventions() for h in hints)
    assert {h.role for h in lookup_name("blk.{i}.ffn_gate_inp_shexp.weight")} == {"moe.shared_gate.weight"}


def _write_gguf(path: Path) -> None:
    metadata = [
        gw.kv_string("general.architecture", "qwen2moe"),
        gw.kv_scalar("qwen2moe.block_count", gw.UINT32, L),
        gw.kv_scalar("qwen2moe.embedding_length", gw.UINT32, H),
        gw.kv_scalar("qwen2moe.attention.head_count", gw.UINT32, NH),
        gw.kv_scalar("qwen2moe.attention.head_count_kv", gw.UINT32, NKV),
        gw.kv_scalar("qwen2moe.expert_count", gw.UINT32, E),
        gw.kv_scalar("qwen2moe.expert_used_count", gw.UINT32, 2),
        gw.kv_scalar("qwen2moe.expert_feed_forward_length", gw.UINT32, I),
        gw.kv_scalar("qwen2moe.expert_shared_feed_forward_length", gw.UINT32, S),
    ]
    infos, data = [], b""
    for name, (shape, _role) in _table().items():
        count = 1
        for dim in shape:
            count *= dim
        infos.append(gw.tensor_info(name, list(reversed(shape)), gw.F32, len(data)))
        data += struct.pack(f"<{count}f", *([0.0] * count))
        data += b"\x00" * (-len(data) % 32)
    path.write_bytes(gw.gguf_file(gw.GGUFParts(kvs=metadata, infos=infos, data=data)))


def test_inspect_shows_the_gguf_expert_counts(tmp_path: Path) -> None:
    path = tmp_path / "tiny-moe.gguf"
    _write_gguf(path)
    result = unshell.inspect(path)
    assert result.recognition.matched_family == "qwen2_moe"
    assert result.recognition.config["num_experts"] == E
    assert result.recognition.config["num_experts_per_tok"] == 2
    assert not [a for a in result.recognition.assignments if a.role is None]
    from unshell.report.text import render_inspect

    assert f"experts {E} (2 per token)" in render_inspect(result.to_dict())
