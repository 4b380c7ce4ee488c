"""llama2.c file writers for tests, transcribed from karpathy/llama2.c ``export.py`` (numpy, no torch).

``load_legacy`` parses a v0 file on its own (not through unshell) so that tests compare the reader
against an independent implementation. ``write_v1``/``write_v2`` follow ``version1_export`` and
``version2_export`` (including ``quantize_q80``) line by line; ``write_legacy`` follows
``legacy_export``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = 0x616B3432


@dataclass(frozen=True)
class Params:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    max_seq_len: int


def load_legacy(path: Path) -> tuple[Params, dict[str, np.ndarray], bool]:
    """(params, state dict incl. freqs_cos/freqs_sin, shared_classifier) from a v0 file."""
    data = Path(path).read_bytes()
    dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack("<7i", data[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    head = dim // heads
    kv_dim = kv_heads * head
    floats = np.frombuffer(data, dtype="<f4", offset=28)
    cursor = 0

    def take(*shape: int) -> np.ndarray:
        nonlocal cursor
        count = int(np.prod(shape))
        array = floats[cursor : cursor + count].reshape(shape).copy()
        cursor += count
        return array

    state: dict[str, np.ndarray] = {"tok_embeddings.weight": take(vocab, dim)}
    for i in range(layers):
        state[f"layers.{i}.attention_norm.weight"] = take(dim)
    for kind, rows in (("wq", dim), ("wk", kv_dim), ("wv", kv_dim), ("wo", dim)):
        for i in range(layers):
            state[f"layers.{i}.attention.{kind}.weight"] = take(rows, dim)
    for i in range(layers):
        state[f"layers.{i}.ffn_norm.weight"] = take(dim)
    for kind, shape in (("w1", (hidden, dim)), ("w2", (dim, hidden)), ("w3", (hidden, dim))):
        for i in range(layers):
            state[f"layers.{i}.feed_forward.{kind}.weight"] = take(*shape)
    state["norm.weight"] = take(dim)
    state["freqs_cos"] = take(seq, head // 2)
    state["freqs_sin"] = take(seq, head // 2)
    state["output.weight"] = state["tok_embeddings.weight"] if shared else take(vocab, dim)
    assert cursor == floats.size, "file size does not match its header"
    return Params(dim, hidden, layers, heads, kv_heads, vocab, seq), state, shared


def _layer_weights(state: dict[str, np.ndarray], params: Params) -> list[np.ndarray]:
    """export.py's weight list: embedding, then each kind across layers."""
    kinds = [
        "attention.wq",
        "attention.wk",
        "attention.wv",
        "attention.wo",
        "feed_forward.w1",
        "feed_forward.w2",
        "feed_forward.w3",
    ]
    weights = [state["tok_embeddings.weight"]]
    for kind in kinds:
        weights.extend(state[f"layers.{i}.{kind}.weight"] for i in range(params.n_layers))
    return weights


def _norms(state: dict[str, np.ndarray], params: Params) -> list[np.ndarray]:
    return [
        *(state[f"layers.{i}.attention_norm.weight"] for i in range(params.n_layers)),
        *(state[f"layers.{i}.ffn_norm.weight"] for i in range(params.n_layers)),
        state["norm.weight"],
    ]


def _header(version: int, params: Params, shared: bool) -> bytes:
    out = struct.pack("<I", MAGIC) + struct.pack("<i", version)
    p = params
    out += struct.pack(
        "<7i", p.dim, p.hidden_dim, p.n_layers, p.n_heads, p.n_kv_heads, p.vocab_size, p.max_seq_len
    )
    out += struct.pack("B", int(shared))
    return out


def _pad(header: bytes) -> bytes:
    assert len(header) <= 256
    return header + b"\0" * (256 - len(header))


def _fp32(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def write_legacy(path: Path, params: Params, state: dict[str, np.ndarray], shared: bool) -> None:
    p = params
    vocab = p.vocab_size if shared else -p.vocab_size
    out = [struct.pack("<7i", p.dim, p.hidden_dim, p.n_layers, p.n_heads, p.n_kv_heads, vocab, p.max_seq_len)]
    out.append(_fp32(state["tok_embeddings.weight"]))
    out += [_fp32(state[f"layers.{i}.attention_norm.weight"]) for i in range(p.n_layers)]
    for kind in ("wq", "wk", "wv", "wo"):
        out += [_fp32(state[f"layers.{i}.attention.{kind}.weight"]) for i in range(p.n_layers)]
    out += [_fp32(state[f"layers.{i}.ffn_norm.weight"]) for i in range(p.n_layers)]
    for kind in ("w1", "w2", "w3"):
        out += [_fp32(state[f"layers.{i}.feed_forward.{kind}.weight"]) for i in range(p.n_layers)]
    out += [_fp32(state["norm.weight"]), _fp32(state["freqs_cos"]), _fp32(state["freqs_sin"])]
    if not shared:
        out.append(_fp32(state["output.weight"]))
    Path(path).write_bytes(b"".join(out))


def write_v1(path: Path, params: Params, state: dict[str, np.ndarray], shared: bool) -> None:
    weights = [*_norms(state, params), *_layer_weights(state, params)]
    if not shared:
        weights.append(state["output.weight"])
    Path(path).write_bytes(_pad(_header(1, params, shared)) + b"".join(_fp32(w) for w in weights))


def quantize_q80(w: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """export.py's quantize_q80: symmetric int8 in [-127, 127] per group, float32 scales."""
    assert w.size % group_size == 0
    w = w.astype(np.float32).reshape(-1, group_size)
    wmax = np.abs(w).max(axis=1)
    scale = (wmax / np.float32(127.0)).astype(np.float32)
    quant = w / scale[:, None]
    int8val = np.round(quant).astype(np.int8)
    fp32val = (int8val.astype(np.float32) * scale[:, None]).reshape(-1)
    err = np.abs(fp32val.reshape(-1, group_size) - w).max(axis=1)
    return int8val, scale, float(err.max())


def write_v2(
    path: Path, params: Params, state: dict[str, np.ndarray], shared: bool, group_size: int = 64
) -> float:
    """Write a v2 (Q8_0) file; returns the largest quantization error, as export.py prints it."""
    while params.dim % group_size != 0:
        group_size //= 2
    weights = _layer_weights(state, params)
    if not shared:
        weights.append(state["output.weight"])
    header = _pad(_header(2, params, shared) + struct.pack("<i", group_size))
    body = [_fp32(norm) for norm in _norms(state, params)]
    max_error = 0.0
    for w in weights:
        q, s, err = quantize_q80(w, group_size)
        body += [q.astype(np.int8).tobytes(), _fp32(s)]
        max_error = max(max_error, err)
    Path(path).write_bytes(header + b"".join(body))
    return max_error
