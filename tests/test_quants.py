"""GGML dequantizers against gguf-py's (the oracle), bit for bit.

Three kinds of input: values quantized by ``gguf.quants.quantize`` (for the types gguf-py can
quantize), random bytes (any block is a valid input to a dequantizer), and random bytes with the
scale fields forced finite so that every output value is a number. Equality is checked on the
float32 bit patterns, which also tells +0.0 from -0.0.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as oracle_dequantize
from gguf.quants import quantize as oracle_quantize

from unshell.errors import InconsistentHeaderError, UnsupportedFormatError
from unshell.formats import base, quants

DECODABLE = sorted(t.code for t in quants.GGML_TYPES.values() if t.block_elements > 1 and t.decodable)
UNDECODABLE = sorted(t.code for t in quants.GGML_TYPES.values() if not t.decodable)
# Types gguf-py has no dequantizer for; checked against the scalar references below instead.
NO_ORACLE = {"Q8_1", "Q8_K"}
QUANTIZABLE_BY_ORACLE = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0", "MXFP4"]

# Byte offsets of the float16 scale fields in each block (ggml-common.h).
F16_FIELDS = {
    "Q4_0": [0],
    "Q4_1": [0, 2],
    "Q5_0": [0],
    "Q5_1": [0, 2],
    "Q8_0": [0],
    "Q8_1": [0, 2],
    "Q2_K": [80, 82],
    "Q3_K": [108],
    "Q4_K": [0, 2],
    "Q5_K": [0, 2],
    "Q6_K": [208],
    "IQ4_NL": [0],
    "IQ4_XS": [0],
    "TQ1_0": [52],
    "TQ2_0": [64],
    "MXFP4": [],  # an E8M0 exponent byte, set below
    "Q8_K": [],  # a float32 scale, set below
}


def spec(code: str) -> quants.GGMLType:
    return next(t for t in quants.GGML_TYPES.values() if t.code == code)


def dequantize(code: str, raw: np.ndarray, count: int) -> np.ndarray:
    return base.BLOCK_TYPES[code].dequantize(raw.reshape(-1), count)


def random_blocks(code: str, n_blocks: int, seed: int, *, finite: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n_blocks, spec(code).block_bytes), dtype=np.uint8)
    if finite:
        for offset in F16_FIELDS[code]:
            scales = (rng.standard_normal(n_blocks) * 0.05).astype("<f2")
            blocks[:, offset : offset + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
        if code == "MXFP4":
            blocks[:, 0] = rng.integers(100, 150, size=n_blocks)  # 255 would overflow float32
        if code == "Q8_K":
            blocks[:, 0:4] = rng.standard_normal(n_blocks).astype("<f4").view(np.uint8).reshape(n_blocks, 4)
    return blocks


def assert_same_bits(mine: np.ndarray, expected: np.ndarray) -> None:
    assert mine.dtype == np.float32 and expected.dtype == np.float32
    assert mine.shape == expected.shape
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(mine), nan)
    assert np.array_equal(mine[~nan].view(np.uint32), expected[~nan].view(np.uint32))


def test_type_table_matches_gguf_py() -> None:
    for qtype in GGMLQuantizationType:
        ours = quants.GGML_TYPES[qtype.value]
        assert ours.code == qtype.name
        elements, nbytes = GGML_QUANT_SIZES[qtype]
        assert ours.block_elements == elements
        if qtype.name == "Q8_1":
            # gguf-py keeps a stale size (float32 d and s); ggml-common.h asserts two halves + 32.
            assert (nbytes, ours.block_bytes) == (40, 36)
        else:
            assert ours.block_bytes == nbytes, qtype.name
    assert set(quants.GGML_TYPES) == {q.value for q in GGMLQuantizationType}


def test_plain_types_map_to_base_dtypes() -> None:
    plain = {t.code: t.block_bytes for t in quants.GGML_TYPES.values() if t.block_elements == 1}
    assert plain == {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I8": 1, "I16": 2, "I32": 4, "I64": 8}
    for code, itemsize in plain.items():
        assert base.PLAIN_DTYPES[code].itemsize == itemsize


def test_every_block_type_is_registered() -> None:
    for ggml in quants.GGML_TYPES.values():
        if ggml.block_elements > 1:
            registered = base.BLOCK_TYPES[ggml.code]
            assert (registered.block_elements, registered.block_bytes) == (
                ggml.block_elements,
                ggml.block_bytes,
            )
    assert {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"} <= set(
        DECODABLE
    )


@pytest.mark.parametrize("code", [c for c in DECODABLE if c not in NO_ORACLE])
@pytest.mark.parametrize("finite", [True, False])
def test_random_blocks_match_gguf_py(code: str, finite: bool) -> None:
    blocks = random_blocks(code, 257, seed=len(code) + finite, finite=finite)
    count = 257 * spec(code).block_elements
    with np.errstate(all="ignore"):
        expected = oracle_dequantize(blocks, GGMLQuantizationType[code]).reshape(-1)
        mine = dequantize(code, blocks, count)
    if finite:
        assert np.isfinite(expected).all()
    else:
        assert not np.isfinite(expected).all()  # the NaN/inf paths are exercised too
    assert_same_bits(mine, expected)


@pytest.mark.parametrize("code", QUANTIZABLE_BY_ORACLE)
def test_values_quantized_by_gguf_py_round_trip(code: str) -> None:
    rng = np.random.default_rng(7)
    values = (rng.standard_normal((48, 512)) * 0.02).astype(np.float32)
    packed = oracle_quantize(values, GGMLQuantizationType[code])
    mine = dequantize(code, packed, values.size).reshape(values.shape)
    assert_same_bits(mine, oracle_dequantize(packed, GGMLQuantizationType[code]))
    # A sanity bound on the reconstruction, loose enough for the ternary types.
    assert np.abs(mine - values).max() <= np.abs(values).max()
    if code in ("Q8_0", "Q5_0", "Q5_1"):
        assert np.corrcoef(mine.ravel(), values.ravel())[0, 1] > 0.99


def test_q8_0_of_known_values() -> None:
    block = struct.pack("<e", 0.5) + bytes(np.arange(-16, 16, dtype=np.int8).view(np.uint8))
    values = dequantize("Q8_0", np.frombuffer(block, dtype=np.uint8), 32)
    assert values.tolist() == [0.5 * q for q in range(-16, 16)]


def test_q8_k_matches_scalar_reference() -> None:
    blocks = random_blocks("Q8_K", 9, seed=3, finite=True)
    expected: list[np.float32] = []
    for block in blocks:
        (d,) = struct.unpack("<f", block[0:4].tobytes())
        expected.extend(np.float32(d) * np.float32(q) for q in block[4:260].view(np.int8))
    assert_same_bits(dequantize("Q8_K", blocks, 9 * 256), np.array(expected, dtype=np.float32))


def test_q8_1_matches_scalar_reference() -> None:
    blocks = random_blocks("Q8_1", 9, seed=4, finite=True)
    expected: list[np.float32] = []
    for block in blocks:
        d = np.float32(block[0:2].view("<f2")[0])
        expected.extend(d * np.float32(q) for q in block[4:36].view(np.int8))
    assert_same_bits(dequantize("Q8_1", blocks, 9 * 32), np.array(expected, dtype=np.float32))


def test_chunked_decoding_gives_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = random_blocks("Q4_K", 50, seed=5, finite=True)
    whole = dequantize("Q4_K", blocks, 50 * 256)
    monkeypatch.setattr(quants, "_CHUNK_ELEMENTS", 7 * 256)
    assert_same_bits(dequantize("Q4_K", blocks, 50 * 256), whole)


@pytest.mark.parametrize("code", [c for c in DECODABLE if c not in NO_ORACLE])
def test_every_type_decodes_alike_across_steps(code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The decoders write each step into its slice of the output: steps of 3 blocks, the last one
    # short, must give gguf-py's values as one step does.
    blocks = random_blocks(code, 11, seed=9, finite=True)
    monkeypatch.setattr(quants, "_CHUNK_ELEMENTS", 3 * spec(code).block_elements)
    expected = oracle_dequantize(blocks, GGMLQuantizationType[code]).reshape(-1)
    assert_same_bits(dequantize(code, blocks, 11 * spec(code).block_elements), expected)


@pytest.mark.parametrize("code", UNDECODABLE)
def test_undecodable_types_raise_naming_the_type(code: str) -> None:
    blocks = random_blocks(code, 2, seed=6, finite=False)
    with pytest.raises(UnsupportedFormatError, match=code):
        dequantize(code, blocks, 2 * spec(code).block_elements)


def test_byte_count_must_match_element_count() -> None:
    blocks = random_blocks("Q4_0", 3, seed=8, finite=True)
    with pytest.raises(InconsistentHeaderError):
        dequantize("Q4_0", blocks, 4 * 32)
    with pytest.raises(InconsistentHeaderError):
        dequantize("Q4_0", blocks, 3 * 32 - 1)


def test_zero_blocks_decode_to_an_empty_array() -> None:
    empty = dequantize("Q6_K", np.zeros(0, dtype=np.uint8), 0)
    assert empty.shape == (0,) and empty.dtype == np.float32


def test_removed_and_unknown_type_ids() -> None:
    with pytest.raises(UnsupportedFormatError, match="Q4_2"):
        quants.ggml_type(4)
    with pytest.raises(UnsupportedFormatError, match="unknown"):
        quants.ggml_type(1000)
    assert quants.ggml_type(12).code == "Q4_K"
