"""Small, exact cases for the pieces of recognition: layer indices, expressions, ambiguity."""

from __future__ import annotations

from unshell.arch.expr import parse_linear
from unshell.arch.recognize import observe, recognize


def test_layer_index_is_the_number_that_varies() -> None:
    names = [
        ("model.0.auto_model.embeddings.word_embeddings.weight", (10, 4)),
        ("model.0.auto_model.encoder.layer.0.output.dense.bias", (4,)),
        ("model.0.auto_model.encoder.layer.1.output.dense.bias", (4,)),
    ]
    embed, first, second = observe(names)
    assert embed.layer is None and embed.key == "model.0.auto_model.embeddings.word_embeddings.weight"
    assert (first.layer, second.layer) == (0, 1)
    assert first.key == "model.0.auto_model.encoder.layer.{i}.output.dense.bias"


def test_single_layer_and_expert_indices() -> None:
    (single,) = observe([("blk.0.attn_q.weight", (8, 8))])
    assert single.layer == 0 and single.key == "blk.{i}.attn_q.weight"
    experts = observe(
        [
            (f"model.layers.{i}.block_sparse_moe.experts.{e}.w1.weight", (8, 4))
            for i in range(2)
            for e in range(3)
        ]
    )
    assert {(t.layer, t.expert) for t in experts} == {(i, e) for i in range(2) for e in range(3)}
    assert all(t.key == "model.layers.{i}.block_sparse_moe.experts.{e}.w1.weight" for t in experts)
    # "w1" and "ln_1" are names, not indices.
    (named,) = observe([("h.3.ln_1.weight", (4,))])
    assert named.key == "h.{i}.ln_1.weight"


def test_expressions_linearize_head_products() -> None:
    fused = parse_linear("(nh+2*nkv)*d")
    assert dict(fused.terms) == {"Q": 1, "K": 2}
    assert fused.evaluate({"Q": 64, "K": 16}) == 96
    assert fused.solve_for("K", 96, {"Q": 64}) == 16
    assert parse_linear("2*I").solve_for("I", 7, {}) is None  # not integral


def _llama_block(
    prefix: str, hidden: int = 32, kv: int = 16, ffn: int = 48
) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (f"{prefix}.a", (hidden,)),
        (f"{prefix}.b", (hidden, hidden)),
        (f"{prefix}.c", (kv, hidden)),
        (f"{prefix}.d", (kv, hidden)),
        (f"{prefix}.e", (hidden, hidden)),
        (f"{prefix}.f", (hidden,)),
        (f"{prefix}.g", (ffn, hidden)),
        (f"{prefix}.h", (ffn, hidden)),
        (f"{prefix}.i", (hidden, ffn)),
    ]


def test_structure_alone_declares_what_it_cannot_tell() -> None:
    tensors = [("emb", (100, 32)), ("fin", (32,)), ("head", (100, 32))]
    for layer in range(3):
        tensors += _llama_block(f"blocks.{layer}")
    result = recognize(tensors)
    assert result.family == "llama"
    assert result.confidence == "medium"  # nothing but shapes agrees
    assert result.config["hidden_size"] == 32 and result.config["intermediate_size"] == 48
    assert result.config["num_attention_heads"] is None  # shapes show nh*d, never nh alone
    roles = {a.name: a for a in result.assignments}
    assert set(roles["blocks.0.c"].candidates) == {"attn.k.weight", "attn.v.weight"}
    assert set(roles["blocks.0.g"].candidates) == {"mlp.gate.weight", "mlp.up.weight"}
    assert set(roles["blocks.0.a"].candidates) == {"attn_norm.weight", "ffn_norm.weight"}
    assert roles["blocks.0.i"].role == "mlp.down.weight"
    assert set(roles["emb"].candidates) == {"embed.weight", "lm_head.weight"}


def test_declared_config_supplies_heads_but_never_overrides_shapes() -> None:
    tensors = [("emb", (100, 32)), ("fin", (32,)), ("head", (100, 32))]
    tensors += _llama_block("blocks.0")
    result = recognize(
        tensors, declared_config={"num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 32}
    )
    assert (
        result.config["num_attention_heads"],
        result.config["num_key_value_heads"],
        result.config["head_dim"],
    ) == (4, 2, 8)
    lying = recognize(
        tensors, declared_config={"hidden_size": 64, "num_attention_heads": 4, "model_type": "llama"}
    )
    assert lying.config["hidden_size"] == 32
    assert any("disagrees" in note for note in lying.notes)


def test_unknown_structure_is_reported_as_such() -> None:
    result = recognize([("conv.weight", (3, 3, 7, 7)), ("gru.weight", (5, 11))])
    assert result.family is None and result.confidence == "none"
    assert set(result.unexplained) == {"conv.weight", "gru.weight"}
