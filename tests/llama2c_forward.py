"""llama2.c's ``run.c`` in numpy: the forward pass and the tokenizer's decoding, from the C source.

Written against karpathy/llama2.c ``run.c`` (legacy v0 checkpoints, float32), as an oracle for
tests: it parses the original ``.bin`` itself (nothing from unshell), runs one token at a time
with a key/value cache exactly like ``forward()``, and decodes pieces like ``decode()``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BOS = 1


@dataclass
class Llama2cModel:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    token_embedding: np.ndarray  # [vocab, dim]
    rms_att: np.ndarray  # [layers, dim]
    wq: np.ndarray  # [layers, dim, dim]       (out, in)
    wk: np.ndarray  # [layers, kv_dim, dim]
    wv: np.ndarray  # [layers, kv_dim, dim]
    wo: np.ndarray  # [layers, dim, dim]
    rms_ffn: np.ndarray  # [layers, dim]
    w1: np.ndarray  # [layers, hidden, dim]
    w2: np.ndarray  # [layers, dim, hidden]
    w3: np.ndarray  # [layers, hidden, dim]
    rms_final: np.ndarray  # [dim]
    wcls: np.ndarray  # [vocab, dim]

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads


def load_checkpoint(path: Path) -> Llama2cModel:
    """``read_checkpoint`` + ``memory_map_weights`` for a legacy (v0) float32 export."""
    data = path.read_bytes()
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len = struct.unpack("<7i", data[:28])
    shared = vocab_size > 0  # a negative vocab_size means an unshared classifier follows
    vocab_size = abs(vocab_size)
    head_size = dim // n_heads
    kv_dim = n_kv_heads * head_size
    floats = np.frombuffer(data, dtype="<f4", offset=28)
    cursor = 0

    def take(*shape: int) -> np.ndarray:
        nonlocal cursor
        count = int(np.prod(shape))
        out = floats[cursor : cursor + count].reshape(shape)
        cursor += count
        return out

    token_embedding = take(vocab_size, dim)
    rms_att = take(n_layers, dim)
    wq = take(n_layers, n_heads * head_size, dim)
    wk = take(n_layers, kv_dim, dim)
    wv = take(n_layers, kv_dim, dim)
    wo = take(n_layers, dim, n_heads * head_size)
    rms_ffn = take(n_layers, dim)
    w1 = take(n_layers, hidden_dim, dim)
    w2 = take(n_layers, dim, hidden_dim)
    w3 = take(n_layers, hidden_dim, dim)
    rms_final = take(dim)
    cursor += seq_len * head_size // 2  # freq_cis_real, unused since run.c computes rope itself
    cursor += seq_len * head_size // 2  # freq_cis_imag
    wcls = token_embedding if shared else take(vocab_size, dim)
    if cursor != floats.size:
        raise ValueError(f"{path.name}: {floats.size - cursor} float32 values left over; not a v0 export?")
    return Llama2cModel(
        dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len,
        token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, wcls,
    )  # fmt: skip


def _rmsnorm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    ss = np.float32(np.dot(x, x) / x.size + np.float32(1e-5))
    return (weight * (x * np.float32(1.0 / np.sqrt(ss)))).astype(np.float32)


class Llama2cRunner:
    """``forward(transformer, token, pos)`` with its key/value cache."""

    def __init__(self, model: Llama2cModel) -> None:
        self.m = model
        kv_dim = model.n_kv_heads * model.head_size
        self.key_cache = np.zeros((model.n_layers, model.seq_len, kv_dim), dtype=np.float32)
        self.value_cache = np.zeros_like(self.key_cache)

    def forward(self, token: int, pos: int) -> np.ndarray:
        m = self.m
        head_size = m.head_size
        kv_dim = m.n_kv_heads * head_size
        kv_mul = m.n_heads // m.n_kv_heads
        x = m.token_embedding[token].copy()
        for layer in range(m.n_layers):
            xb = _rmsnorm(x, m.rms_att[layer])
            q = m.wq[layer] @ xb
            k = m.wk[layer] @ xb
            v = m.wv[layer] @ xb
            # RoPE relative positional encoding: complex-valued rotate q and k in each head
            for i in range(0, m.dim, 2):
                head_dim = i % head_size
                freq = 1.0 / np.power(np.float32(10000.0), np.float32(head_dim / head_size), dtype=np.float32)
                val = np.float32(pos * freq)
                fcr, fci = np.float32(np.cos(val)), np.float32(np.sin(val))
                rotn = 2 if i < kv_dim else 1  # how many vectors? 2 = q & k, 1 = q only
                for vec in (q, k)[:rotn]:
                    v0, v1 = vec[i], vec[i + 1]
                    vec[i] = v0 * fcr - v1 * fci
                    vec[i + 1] = v0 * fci + v1 * fcr
            self.key_cache[layer, pos] = k
            self.value_cache[layer, pos] = v
            xb = np.zeros(m.dim, dtype=np.float32)
            for h in range(m.n_heads):
                q_h = q[h * head_size : (h + 1) * head_size]
                kv = (h // kv_mul) * head_size
                keys = self.key_cache[layer, : pos + 1, kv : kv + head_size]
                att = (keys @ q_h) / np.float32(np.sqrt(head_size))
                att = np.exp(att - att.max())
                att /= att.sum()
                xb[h * head_size : (h + 1) * head_size] = (
                    att @ self.value_cache[layer, : pos + 1, kv : kv + head_size]
                )
            x = x + m.wo[layer] @ xb
            xb = _rmsnorm(x, m.rms_ffn[layer])
            hb = m.w1[layer] @ xb
            hb2 = m.w3[layer] @ xb
            hb = hb * (1.0 / (1.0 + np.exp(-hb))) * hb2  # SwiGLU
            x = x + m.w2[layer] @ hb
        x = _rmsnorm(x, m.rms_final)
        return (m.wcls @ x).astype(np.float32)


def greedy(model: Llama2cModel, steps: int, prompt: tuple[int, ...] = (BOS,)) -> list[int]:
    """``generate()`` with temperature 0 (argmax sampling): the tokens after the prompt."""
    runner = Llama2cRunner(model)
    token, out = prompt[0], []
    for pos in range(min(steps + len(prompt) - 1, model.seq_len)):
        logits = runner.forward(token, pos)
        if pos < len(prompt) - 1:
            token = prompt[pos + 1]
            continue
        token = int(np.argmax(logits))
        if token == BOS:  # run.c: the BOS token delimits sequences
            break
        out.append(token)
    return out


class Llama2cTokenizer:
    """``build_tokenizer`` + ``decode``: int32 max_token_length, then per token float32 score,
    int32 length and the piece's bytes."""

    def __init__(self, path: Path, vocab_size: int) -> None:
        data = path.read_bytes()
        self.max_token_length = struct.unpack_from("<i", data, 0)[0]
        self.pieces: list[bytes] = []
        self.scores: list[float] = []
        offset = 4
        for _ in range(vocab_size):
            score, length = struct.unpack_from("<fi", data, offset)
            offset += 8
            self.pieces.append(data[offset : offset + length])
            self.scores.append(score)
            offset += length

    def decode_piece(self, prev_token: int, token: int) -> bytes:
        piece = self.pieces[token]
        # following BOS, sentencepiece decoder strips any leading whitespace
        if prev_token == BOS and piece.startswith(b" "):
            piece = piece[1:]
        # raw byte tokens look like '<0x01>'
        if len(piece) == 6 and piece.startswith(b"<0x") and piece.endswith(b">"):
            piece = bytes([int(piece[3:5], 16)])
        return piece

    def encode(self, text: str, bos: bool = True) -> list[int]:
        """run.c's ``encode``: a dummy-prefix space, one token per UTF-8 character (else its bytes
        + 3), then the adjacent pair whose merged piece scores highest is merged, until none is."""
        lookup = {piece: index for index, piece in reversed(list(enumerate(self.pieces)))}
        tokens = [BOS] if bos else []
        if text:
            tokens.append(lookup[b" "])
        for character in text:
            raw = character.encode("utf-8")
            if raw in lookup:
                tokens.append(lookup[raw])
            else:
                tokens.extend(byte + 3 for byte in raw)
        while True:
            best_score, best_id, best_index = -1e10, -1, -1
            for index in range(len(tokens) - 1):
                merged = lookup.get(self.pieces[tokens[index]] + self.pieces[tokens[index + 1]], -1)
                if merged != -1 and self.scores[merged] > best_score:
                    best_score, best_id, best_index = self.scores[merged], merged, index
            if best_index == -1:
                return tokens
            tokens[best_index : best_index + 2] = [best_id]

    def decode(self, tokens: list[int], first_prev: int = BOS) -> str:
        out, prev = b"", first_prev
        for token in tokens:
            out += self.decode_piece(prev, token)
            prev = token
        return out.decode("utf-8", errors="replace")
