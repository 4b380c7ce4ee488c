"""Mixture-of-experts layouts named by GGUF: shared experts (``_shexp``) and the expert counts.

The tensor tables are written to order (shapes only for recognition; zeros for the one file
``inspect`` reads), in llama.cpp's qwen2moe naming: the truths are the names themselves.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import gguf_writer as gw
import unshell
from unshell.arch.recognize import recognize

H, NH, NKV, D, FFN, S, E, V, L = 16, 4, 2, 4, 12, 20, 4, 32, 2
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
    "blk.{i}.ffn_gate_exps.weight": ((E, FFN, H), "moe.expert.gate.weight"),
    "blk.{i}.ffn_up_exps.weight": ((E, FFN, H), "moe.expert.up.weight"),
    "blk.{i}.ffn_down_exps.weight": ((E, H, FFN), "moe.expert.down.weight"),
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
        gw.kv_scalar("qwen2moe.expert_feed_forward_length", gw.UINT32, FFN),
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


# --- DeepSeek-V2 shapes: MLA attention, 2 dense first layers, then routed + shared experts -----------

DS_H, DS_NH, DS_RQ, DS_RKV, DS_DN, DS_DR, DS_DV = 32, 4, 24, 16, 8, 4, 6
DS_I_DENSE, DS_I_EXPERT, DS_SHARED, DS_E, DS_DENSE, DS_LAYERS, DS_V = 72, 20, 2, 6, 2, 6, 64


def _deepseek_layer(
    names: dict[str, str], *, dense: bool, gguf: bool
) -> dict[str, tuple[tuple[int, ...], str]]:
    """One layer's ``{i}``/``{e}`` templates -> (shape, role), naming each part with ``names``."""
    q_b, kv_b = DS_NH * (DS_DN + DS_DR), DS_NH * (DS_DN + DS_DV)
    layer: dict[str, tuple[tuple[int, ...], str]] = {
        names["attn_norm"]: ((DS_H,), "attn_norm.weight"),
        names["q_a"]: ((DS_RQ, DS_H), "attn.q_a.weight"),
        names["q_a_norm"]: ((DS_RQ,), "attn.q_a_norm.weight"),
        names["q_b"]: ((q_b, DS_RQ), "attn.q_b.weight"),
        names["kv_a"]: ((DS_RKV + DS_DR, DS_H), "attn.kv_a.weight"),
        names["kv_a_norm"]: ((DS_RKV,), "attn.kv_a_norm.weight"),
        names["kv_b"]: ((kv_b, DS_RKV), "attn.kv_b.weight"),
        names["o"]: ((DS_H, DS_NH * DS_DV), "attn.o.weight"),
        names["ffn_norm"]: ((DS_H,), "ffn_norm.weight"),
    }
    if dense:
        layer[names["gate"]] = ((DS_I_DENSE, DS_H), "mlp.gate.weight")
        layer[names["up"]] = ((DS_I_DENSE, DS_H), "mlp.up.weight")
        layer[names["down"]] = ((DS_H, DS_I_DENSE), "mlp.down.weight")
        return layer
    shared = DS_SHARED * DS_I_EXPERT
    layer[names["router"]] = ((DS_E, DS_H), "moe.router.weight")
    stack = (DS_E,) if gguf else ()
    layer[names["exp_gate"]] = ((*stack, DS_I_EXPERT, DS_H), "moe.expert.gate.weight")
    layer[names["exp_up"]] = ((*stack, DS_I_EXPERT, DS_H), "moe.expert.up.weight")
    layer[names["exp_down"]] = ((*stack, DS_H, DS_I_EXPERT), "moe.expert.down.weight")
    layer[names["sh_gate"]] = ((shared, DS_H), "moe.shared.gate.weight")
    layer[names["sh_up"]] = ((shared, DS_H), "moe.shared.up.weight")
    layer[names["sh_down"]] = ((DS_H, shared), "moe.shared.down.weight")
    return layer


HF_NAMES = {
    "attn_norm": "model.layers.{i}.input_layernorm.weight",
    "q_a": "model.layers.{i}.self_attn.q_a_proj.weight",
    "q_a_norm": "model.layers.{i}.self_attn.q_a_layernorm.weight",
    "q_b": "model.layers.{i}.self_attn.q_b_proj.weight",
    "kv_a": "model.layers.{i}.self_attn.kv_a_proj_with_mqa.weight",
    "kv_a_norm": "model.layers.{i}.self_attn.kv_a_layernorm.weight",
    "kv_b": "model.layers.{i}.self_attn.kv_b_proj.weight",
    "o": "model.layers.{i}.self_attn.o_proj.weight",
    "ffn_norm": "model.layers.{i}.post_attention_layernorm.weight",
    "gate": "model.layers.{i}.mlp.gate_proj.weight",
    "up": "model.layers.{i}.mlp.up_proj.weight",
    "down": "model.layers.{i}.mlp.down_proj.weight",
    "router": "model.layers.{i}.mlp.gate.weight",
    "exp_gate": "model.layers.{i}.mlp.experts.{e}.gate_proj.weight",
    "exp_up": "model.layers.{i}.mlp.experts.{e}.up_proj.weight",
    "exp_down": "model.layers.{i}.mlp.experts.{e}.down_proj.weight",
    "sh_gate": "model.layers.{i}.mlp.shared_experts.gate_proj.weight",
    "sh_up": "model.layers.{i}.mlp.shared_experts.up_proj.weight",
    "sh_down": "model.layers.{i}.mlp.shared_experts.down_proj.weight",
}
GGUF_NAMES = {
    "attn_norm": "blk.{i}.attn_norm.weight",
    "q_a": "blk.{i}.attn_q_a.weight",
    "q_a_norm": "blk.{i}.attn_q_a_norm.weight",
    "q_b": "blk.{i}.attn_q_b.weight",
    "kv_a": "blk.{i}.attn_kv_a_mqa.weight",
    "kv_a_norm": "blk.{i}.attn_kv_a_norm.weight",
    "kv_b": "blk.{i}.attn_kv_b.weight",
    "o": "blk.{i}.attn_output.weight",
    "ffn_norm": "blk.{i}.ffn_norm.weight",
    "gate": "blk.{i}.ffn_gate.weight",
    "up": "blk.{i}.ffn_up.weight",
    "down": "blk.{i}.ffn_down.weight",
    "router": "blk.{i}.ffn_gate_inp.weight",
    "exp_gate": "blk.{i}.ffn_gate_exps.weight",
    "exp_up": "blk.{i}.ffn_up_exps.weight",
    "exp_down": "blk.{i}.ffn_down_exps.weight",
    "sh_gate": "blk.{i}.ffn_gate_shexp.weight",
    "sh_up": "blk.{i}.ffn_up_shexp.weight",
    "sh_down": "blk.{i}.ffn_down_shexp.weight",
}


def _deepseek_table(*, gguf: bool) -> dict[str, tuple[tuple[int, ...], str]]:
    names = GGUF_NAMES if gguf else HF_NAMES
    if gguf:
        table = {
            "token_embd.weight": ((DS_V, DS_H), "embed.weight"),
            "output_norm.weight": ((DS_H,), "final_norm.weight"),
            "output.weight": ((DS_V, DS_H), "lm_head.weight"),
        }
    else:
        table = {
            "model.embed_tokens.weight": ((DS_V, DS_H), "embed.weight"),
            "model.norm.weight": ((DS_H,), "final_norm.weight"),
            "lm_head.weight": ((DS_V, DS_H), "lm_head.weight"),
        }
    for i in range(DS_LAYERS):
        for template, entry in _deepseek_layer(names, dense=i < DS_DENSE, gguf=gguf).items():
            experts = range(DS_E) if "{e}" in template else [None]
            for e in experts:
                table[template.format(i=i, e=e) if e is not None else template.format(i=i)] = entry
    return table


@pytest.mark.parametrize("gguf", [False, True], ids=["hf", "gguf"])
def test_deepseek_v2_dense_then_sparse_with_mla(gguf: bool) -> None:
    table = _deepseek_table(gguf=gguf)
    result = recognize([(name, shape) for name, (shape, _role) in table.items()])
    assert result.matched_family == "deepseek_v2"
    assert {a.name: a.role for a in result.assignments} == {n: role for n, (_s, role) in table.items()}
    assert result.config["first_k_dense_replace"] == DS_DENSE
    assert result.config["num_experts"] == DS_E
    assert result.config["intermediate_size"] == DS_I_EXPERT
    assert any("first 2 layer(s) are dense" in n for n in result.notes)
    assert not any("differ in shape" in n for n in result.notes)
    if gguf:
        shared = [a for a in result.assignments if "_shexp" in a.name]
        assert len(shared) == 3 * (DS_LAYERS - DS_DENSE)
        assert all(a.resolved_by == "alias:gguf" for a in shared)


def test_dense_layers_must_come_first() -> None:
    """A dense layer after a sparse one is not DeepSeek's layout: those layers stay unexplained."""
    table = _deepseek_table(gguf=False)
    moved = {n.replace("model.layers.0.", "model.layers.9."): v for n, v in table.items()}
    result = recognize([(name, shape) for name, (shape, _role) in moved.items()])
    assert any(a.role is None for a in result.assignments if ".layers.9." in a.name)


def test_inspect_deepseek_gguf_shows_experts_and_dense_layers(tmp_path: Path) -> None:
    table = _deepseek_table(gguf=True)
    metadata = [
        gw.kv_string("general.architecture", "deepseek2"),
        gw.kv_scalar("deepseek2.block_count", gw.UINT32, DS_LAYERS),
        gw.kv_scalar("deepseek2.embedding_length", gw.UINT32, DS_H),
        gw.kv_scalar("deepseek2.attention.head_count", gw.UINT32, DS_NH),
        gw.kv_scalar("deepseek2.expert_count", gw.UINT32, DS_E),
        gw.kv_scalar("deepseek2.expert_used_count", gw.UINT32, 3),
        gw.kv_scalar("deepseek2.expert_shared_count", gw.UINT32, DS_SHARED),
        gw.kv_scalar("deepseek2.leading_dense_block_count", gw.UINT32, DS_DENSE),
    ]
    infos, data = [], b""
    for name, (shape, _role) in table.items():
        count = 1
        for dim in shape:
            count *= dim
        infos.append(gw.tensor_info(name, list(reversed(shape)), gw.F32, len(data)))
        data += b"\x00" * (4 * count)
        data += b"\x00" * (-len(data) % 32)
    path = tmp_path / "tiny-deepseek.gguf"
    path.write_bytes(gw.gguf_file(gw.GGUFParts(kvs=metadata, infos=infos, data=data)))
    result = unshell.inspect(path)
    assert result.recognition.matched_family == "deepseek_v2"
    assert result.recognition.confidence == "high"
    assert {a.name: a.role for a in result.recognition.assignments} == {n: r for n, (_s, r) in table.items()}
    config = result.recognition.config
    assert (config["num_experts"], config["num_experts_per_tok"]) == (DS_E, 3)
    assert config["first_k_dense_replace"] == DS_DENSE
    from unshell.report.text import render_inspect

    text = render_inspect(result.to_dict())
    assert f"experts {DS_E} (3 per token), first {DS_DENSE} layers dense" in text


# --- newer llama.cpp DeepSeek GGUFs: kv_b split per head into attn_k_b / attn_v_b --------------------
# convert_hf_to_gguf.py (DeepseekV2Model.modify_tensors): kv_b viewed [nh, d_n + d_v, Rkv], split
# into k_b [nh, d_n, Rkv] (then transposed to [nh, Rkv, d_n]) and v_b [nh, d_v, Rkv].


def _split_kv_b_table(*, keep_kv_b: bool) -> dict[str, tuple[tuple[int, ...], str]]:
    table = _deepseek_table(gguf=True)
    for i in range(DS_LAYERS):
        if not keep_kv_b:
            del table[f"blk.{i}.attn_kv_b.weight"]
        table[f"blk.{i}.attn_k_b.weight"] = ((DS_NH, DS_RKV, DS_DN), "attn.k_b.weight")
        table[f"blk.{i}.attn_v_b.weight"] = ((DS_NH, DS_DV, DS_RKV), "attn.v_b.weight")
    return table


@pytest.mark.parametrize("keep_kv_b", [False, True], ids=["split", "split-and-kept"])
def test_deepseek_gguf_with_kv_b_split_into_k_b_and_v_b(keep_kv_b: bool) -> None:
    table = _split_kv_b_table(keep_kv_b=keep_kv_b)
    result = recognize([(name, shape) for name, (shape, _role) in table.items()])
    assert result.matched_family == "deepseek_v2"
    assert {a.name: a.role for a in result.assignments} == {n: role for n, (_s, role) in table.items()}
    split = [a for a in result.assignments if "attn_k_b" in a.name or "attn_v_b" in a.name]
    assert len(split) == 2 * DS_LAYERS and all(a.resolved_by == "alias:gguf" for a in split)
    assert [a.shape for a in split if a.name == "blk.0.attn_k_b.weight"] == [(DS_NH, DS_RKV, DS_DN)]
    assert result.config["first_k_dense_replace"] == DS_DENSE


def test_split_kv_b_of_the_wrong_shape_is_not_explained() -> None:
    """v_b's rank must be k_b's: a v_b of another width is left unexplained, not joined."""
    table = _split_kv_b_table(keep_kv_b=False)
    table["blk.3.attn_v_b.weight"] = ((DS_NH, DS_DV, DS_RKV + 1), "attn.v_b.weight")
    result = recognize([(name, shape) for name, (shape, _role) in table.items()])
    roles = {a.name: a.role for a in result.assignments}
    assert roles.get("blk.3.attn_v_b.weight") is None


# --- DeepSeek-MoE v1 (DeepseekForCausalLM, remote code; llama.cpp arch "deepseek") -----------------
# Llama attention (q/k/v/o), the first `first_k_dense_replace` layers dense, then a router, routed
# experts and the shared experts fused into one FFN, under DeepSeek-V2's MoE names.

V1_LAYERS, V1_DENSE = 5, 1
V1_HF = {
    "attn_norm": ("model.layers.{i}.input_layernorm.weight", (DS_H,), "attn_norm.weight"),
    "q": ("model.layers.{i}.self_attn.q_proj.weight", (DS_H, DS_H), "attn.q.weight"),
    "k": ("model.layers.{i}.self_attn.k_proj.weight", (DS_H, DS_H), "attn.k.weight"),
    "v": ("model.layers.{i}.self_attn.v_proj.weight", (DS_H, DS_H), "attn.v.weight"),
    "o": ("model.layers.{i}.self_attn.o_proj.weight", (DS_H, DS_H), "attn.o.weight"),
    "ffn_norm": ("model.layers.{i}.post_attention_layernorm.weight", (DS_H,), "ffn_norm.weight"),
}
V1_GGUF = {
    "attn_norm": "blk.{i}.attn_norm.weight",
    "q": "blk.{i}.attn_q.weight",
    "k": "blk.{i}.attn_k.weight",
    "v": "blk.{i}.attn_v.weight",
    "o": "blk.{i}.attn_output.weight",
    "ffn_norm": "blk.{i}.ffn_norm.weight",
}


def _deepseek_v1_table(*, gguf: bool) -> dict[str, tuple[tuple[int, ...], str]]:
    moe_names = GGUF_NAMES if gguf else HF_NAMES
    table = {
        ("token_embd.weight" if gguf else "model.embed_tokens.weight"): ((DS_V, DS_H), "embed.weight"),
        ("output_norm.weight" if gguf else "model.norm.weight"): ((DS_H,), "final_norm.weight"),
        ("output.weight" if gguf else "lm_head.weight"): ((DS_V, DS_H), "lm_head.weight"),
    }
    for i in range(V1_LAYERS):
        for key, (hf_name, shape, role) in V1_HF.items():
            table[(V1_GGUF[key] if gguf else hf_name).format(i=i)] = (shape, role)
        ffn = _deepseek_layer(moe_names, dense=i < V1_DENSE, gguf=gguf)
        for template, entry in ffn.items():
            if entry[1].startswith(("mlp.", "moe.")):
                for e in range(DS_E) if "{e}" in template else [None]:
                    table[template.format(i=i, e=e) if e is not None else template.format(i=i)] = entry
    return table


def test_deepseek_moe_v1_hf_names() -> None:
    table = _deepseek_v1_table(gguf=False)
    result = recognize([(name, shape) for name, (shape, _role) in table.items()])
    assert result.matched_family == "deepseek_moe"
    assert {a.name: a.role for a in result.assignments} == {n: role for n, (_s, role) in table.items()}
    assert result.config["first_k_dense_replace"] == V1_DENSE
    assert (result.config["num_experts"], result.config["intermediate_size"]) == (DS_E, DS_I_EXPERT)


def test_inspect_deepseek_moe_v1_gguf(tmp_path: Path) -> None:
    """llama.cpp's ``deepseek`` architecture: llama attention names, stacked experts, ``_shexp``."""
    table = _deepseek_v1_table(gguf=True)
    metadata = [
        gw.kv_string("general.architecture", "deepseek"),
        gw.kv_scalar("deepseek.block_count", gw.UINT32, V1_LAYERS),
        gw.kv_scalar("deepseek.embedding_length", gw.UINT32, DS_H),
        gw.kv_scalar("deepseek.attention.head_count", gw.UINT32, DS_NH),
        gw.kv_scalar("deepseek.expert_count", gw.UINT32, DS_E),
        gw.kv_scalar("deepseek.expert_used_count", gw.UINT32, 2),
        gw.kv_scalar("deepseek.expert_shared_count", gw.UINT32, DS_SHARED),
        gw.kv_scalar("deepseek.leading_dense_block_count", gw.UINT32, V1_DENSE),
    ]
    infos, data = [], b""
    for name, (shape, _role) in table.items():
        count = 1
        for dim in shape:
            count *= dim
        infos.append(gw.tensor_info(name, list(reversed(shape)), gw.F32, len(data)))
        data += b"\x00" * (4 * count)
        data += b"\x00" * (-len(data) % 32)
    path = tmp_path / "tiny-deepseek-moe.gguf"
    path.write_bytes(gw.gguf_file(gw.GGUFParts(kvs=metadata, infos=infos, data=data)))
    result = unshell.inspect(path)
    assert result.recognition.matched_family == "deepseek_moe"
    assert result.recognition.confidence == "high"
    assert {a.name: a.role for a in result.recognition.assignments} == {n: r for n, (_s, r) in table.items()}
    assert result.recognition.config["first_k_dense_replace"] == V1_DENSE
