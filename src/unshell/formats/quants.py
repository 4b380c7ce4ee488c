"""GGML tensor types: the type-id table of GGUF and vectorized numpy dequantizers for block types.

Every dequantizer works on whole arrays of blocks at once (no Python loop over blocks) and
reproduces ggml's reference ``dequantize_row_*`` arithmetic in the same float32 operation order,
so results are bit-identical to llama.cpp and to gguf-py. Large tensors are processed in chunks
of blocks to bound the memory taken by intermediates.

Importing this module registers the block types with `base.register_block_type`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InconsistentHeaderError, UnsupportedFormatError
from .base import BlockType, register_block_type

QK_K = 256
"""Elements per super-block of the k-quants and the IQ types."""

# Values decoded per step: each intermediate stays near the CPU's caches (1 MB as float32),
# which runs the several passes of a decoder about twice as fast as 8 MB steps did.
_CHUNK_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class GGMLType:
    """One GGML tensor type: its dtype code in unshell, and how many elements fit in how many bytes."""

    type_id: int
    code: str
    block_elements: int
    block_bytes: int
    decodable: bool = True


def _plain(type_id: int, code: str, itemsize: int) -> GGMLType:
    return GGMLType(type_id, code, 1, itemsize)


# The one table from GGML type ids (GGMLQuantizationType in gguf-py's constants.py) to dtype codes.
# Block sizes follow ggml-common.h's static_asserts; those equal gguf-py's GGML_QUANT_SIZES except
# Q8_1, where gguf-py still lists the old 40-byte block with float32 scales (ggml stores two halves).
GGML_TYPES: dict[int, GGMLType] = {
    t.type_id: t
    for t in (
        _plain(0, "F32", 4),
        _plain(1, "F16", 2),
        GGMLType(2, "Q4_0", 32, 2 + 16),
        GGMLType(3, "Q4_1", 32, 2 + 2 + 16),
        GGMLType(6, "Q5_0", 32, 2 + 4 + 16),
        GGMLType(7, "Q5_1", 32, 2 + 2 + 4 + 16),
        GGMLType(8, "Q8_0", 32, 2 + 32),
        GGMLType(9, "Q8_1", 32, 2 + 2 + 32),
        GGMLType(10, "Q2_K", QK_K, QK_K // 16 + QK_K // 4 + 2 + 2),
        GGMLType(11, "Q3_K", QK_K, QK_K // 8 + QK_K // 4 + 12 + 2),
        GGMLType(12, "Q4_K", QK_K, 2 + 2 + 12 + QK_K // 2),
        GGMLType(13, "Q5_K", QK_K, 2 + 2 + 12 + QK_K // 8 + QK_K // 2),
        GGMLType(14, "Q6_K", QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),
        GGMLType(15, "Q8_K", QK_K, 4 + QK_K + QK_K // 8),
        GGMLType(16, "IQ2_XXS", QK_K, 2 + QK_K // 4, decodable=False),
        GGMLType(17, "IQ2_XS", QK_K, 2 + QK_K // 4 + QK_K // 32, decodable=False),
        GGMLType(18, "IQ3_XXS", QK_K, 2 + QK_K // 4 + QK_K // 8, decodable=False),
        GGMLType(19, "IQ1_S", QK_K, 2 + QK_K // 8 + QK_K // 16, decodable=False),
        GGMLType(20, "IQ4_NL", 32, 2 + 16),
        GGMLType(21, "IQ3_S", QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4, decodable=False),
        GGMLType(22, "IQ2_S", QK_K, 2 + QK_K // 4 + QK_K // 16, decodable=False),
        GGMLType(23, "IQ4_XS", QK_K, 2 + 2 + QK_K // 64 + QK_K // 2),
        _plain(24, "I8", 1),
        _plain(25, "I16", 2),
        _plain(26, "I32", 4),
        _plain(27, "I64", 8),
        _plain(28, "F64", 8),
        GGMLType(29, "IQ1_M", QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32, decodable=False),
        _plain(30, "BF16", 2),
        GGMLType(34, "TQ1_0", QK_K, (QK_K - 4 * QK_K // 64) // 5 + QK_K // 64 + 2),
        GGMLType(35, "TQ2_0", QK_K, QK_K // 4 + 2),
        GGMLType(39, "MXFP4", 32, 1 + 16),
        GGMLType(40, "NVFP4", 64, 4 + 32, decodable=False),
        GGMLType(41, "Q1_0", 128, 2 + 16, decodable=False),
    )
}

# Ids that ggml once used and has since removed: files carrying them are from old or forked builds.
REMOVED_GGML_TYPES: dict[int, str] = {
    4: "Q4_2",
    5: "Q4_3",
    31: "Q4_0_4_4",
    32: "Q4_0_4_8",
    33: "Q4_0_8_8",
    36: "IQ4_NL_4_4",
    37: "IQ4_NL_4_8",
    38: "IQ4_NL_8_8",
}


def ggml_type(type_id: int) -> GGMLType:
    """The table entry for a GGML type id; UnsupportedFormatError for removed or unknown ids."""
    known = GGML_TYPES.get(type_id)
    if known is not None:
        return known
    if type_id in REMOVED_GGML_TYPES:
        raise UnsupportedFormatError(
            f"GGML tensor type {REMOVED_GGML_TYPES[type_id]} (id {type_id}) was removed from ggml "
            "and is not supported"
        )
    raise UnsupportedFormatError(f"unknown GGML tensor type id {type_id}")


# -- helpers over an (n_blocks, block_bytes) uint8 array ---------------------------------------


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The little-endian half at byte ``start`` of every block, as an (n, 1) float32 column."""
    return blocks[:, start : start + 2].view("<f2").astype(np.float32)


def _nibbles(packed: np.ndarray) -> np.ndarray:
    """(n, k) bytes -> (n, 2k): the k low nibbles, then the k high nibbles (ggml's q4 order)."""
    return np.concatenate([packed & 0x0F, packed >> 4], axis=1)


def _bits(packed: np.ndarray) -> np.ndarray:
    """(n, k) bytes -> (n, 8k) bits, least significant bit of the first byte first."""
    return np.unpackbits(packed, axis=1, bitorder="little")


# Byte value -> its eight bits, least significant first, as eight bytes of 0 or 16 (each a fifth
# bit in place), packed in one uint64: one lookup per byte, not per bit.
_HIGH_BIT_TABLE = (
    (((np.arange(256, dtype=np.uint8)[:, None] >> np.arange(8, dtype=np.uint8)) & 1) << 4)
    .astype(np.uint8)
    .view("<u8")
    .reshape(256)
)


def _high_bits(packed: np.ndarray) -> np.ndarray:
    """(n, k) bytes -> (n, 8k): each bit, least significant of the first byte first, as 0 or 16."""
    return _HIGH_BIT_TABLE[packed].view(np.uint8)


def _fields_2bit(packed: np.ndarray) -> np.ndarray:
    """(n, 32m) bytes -> (n, m, 4, 32): for each 32-byte group, its 2-bit fields at shifts 0, 2, 4, 6."""
    groups = packed.reshape(packed.shape[0], -1, 1, 32)
    return (groups >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & 0x03


def _k_scales_and_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eight 6-bit scales and eight 6-bit mins packed in 12 bytes (ggml's get_scale_min_k4)."""
    low, high, extra = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = np.concatenate([low & 0x3F, (extra & 0x0F) | ((low >> 6) << 4)], axis=1)
    mins = np.concatenate([high & 0x3F, (extra >> 4) | ((high >> 6) << 4)], axis=1)
    return scales.astype(np.float32), mins.astype(np.float32)


# -- 32-element blocks --------------------------------------------------------------------------


def _q4_0(blocks: np.ndarray, out: np.ndarray) -> None:
    q = _nibbles(blocks[:, 2:18])
    q -= np.uint8(8)  # wraps: as int8, q - 8
    np.multiply(q.view(np.int8), _f16(blocks, 0), out=out)


def _q4_1(blocks: np.ndarray, out: np.ndarray) -> None:
    np.multiply(_f16(blocks, 0), _nibbles(blocks[:, 4:20]), out=out)
    out += _f16(blocks, 2)


def _q5_0(blocks: np.ndarray, out: np.ndarray) -> None:
    q = _nibbles(blocks[:, 6:22])
    q |= _high_bits(blocks[:, 2:6])
    q -= np.uint8(16)  # wraps: as int8, q - 16
    np.multiply(q.view(np.int8), _f16(blocks, 0), out=out)


def _q5_1(blocks: np.ndarray, out: np.ndarray) -> None:
    q = _nibbles(blocks[:, 8:24])
    q |= _high_bits(blocks[:, 4:8])
    np.multiply(_f16(blocks, 0), q, out=out)
    out += _f16(blocks, 2)


def _q8_0(blocks: np.ndarray, out: np.ndarray) -> None:
    np.multiply(blocks[:, 2:34].view(np.int8), _f16(blocks, 0), out=out)


def _q8_1(blocks: np.ndarray) -> np.ndarray:
    # Bytes 2..3 hold d * sum(qs), a cache for dot products; the values need only d.
    return blocks[:, 4:36].view(np.int8).astype(np.float32) * _f16(blocks, 0)


_IQ4_NL_VALUES = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32
)


def _iq4_nl(blocks: np.ndarray) -> np.ndarray:
    return _f16(blocks, 0) * _IQ4_NL_VALUES[_nibbles(blocks[:, 2:18])]


# E2M1 values doubled, paired with a scale that is half the E8M0 exponent (ggml's convention).
_MXFP4_VALUES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.float32)


def _e8m0_half(exponent: np.ndarray) -> np.ndarray:
    """2**(e - 128) as float32, built from bits like ggml_e8m0_to_fp32_half (exact, subnormals included)."""
    e = exponent.astype(np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - np.uint32(1)) << np.uint32(23))
    return bits.astype(np.uint32).view(np.float32)


def _mxfp4(blocks: np.ndarray) -> np.ndarray:
    return _e8m0_half(blocks[:, 0:1]) * _MXFP4_VALUES[_nibbles(blocks[:, 1:17])]


# -- 256-element super-blocks -------------------------------------------------------------------


def _q2_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    packed_scales = blocks[:, 0:16]
    d, dmin = _f16(blocks, 80), _f16(blocks, 82)
    scale = (d * (packed_scales & 0x0F).astype(np.float32)).reshape(n, 16, 1)
    minimum = (dmin * (packed_scales >> 4).astype(np.float32)).reshape(n, 16, 1)
    q = _fields_2bit(blocks[:, 16:80]).reshape(n, 16, 16).astype(np.float32)
    return (scale * q - minimum).reshape(n, QK_K)


def _q3_k_scales(packed: np.ndarray) -> np.ndarray:
    """Sixteen signed 6-bit scales: low 4 bits in bytes 0..7, high 2 bits in bytes 8..11."""
    low = _nibbles(packed[:, 0:8])
    high = (packed[:, 8:12].reshape(-1, 1, 4) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 4, 1)) & 3
    unsigned = low | (high.reshape(-1, 16) << 4)
    return (unsigned.astype(np.int8) - np.int8(32)).astype(np.float32)


def _q3_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    hmask, packed, d = blocks[:, 0:32], blocks[:, 32:96], _f16(blocks, 108)
    scale = (d * _q3_k_scales(blocks[:, 96:108])).reshape(n, 16, 1)
    low = _fields_2bit(packed).reshape(n, 16, 16)
    # Bit b of hmask[l] is the high bit of element l of the b-th run of 32; a clear bit subtracts 4.
    high_clear = (_bits(hmask).reshape(n, 32, 8).transpose(0, 2, 1) ^ 1).reshape(n, 16, 16)
    q = low.astype(np.int8) - (high_clear << 2).astype(np.int8)
    return (scale * q.astype(np.float32)).reshape(n, QK_K)


def _q4_k(blocks: np.ndarray, out: np.ndarray) -> None:
    n = blocks.shape[0]
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    scales, mins = _k_scales_and_mins(blocks[:, 4:16])
    scale = (d * scales).reshape(n, 8, 1)
    minimum = (dmin * mins).reshape(n, 8, 1)
    q = _nibbles(blocks[:, 16:144].reshape(n * 4, 32)).reshape(n, 8, 32)
    values = out.reshape(n, 8, 32)
    np.multiply(scale, q, out=values)
    values -= minimum


def _q5_k(blocks: np.ndarray, out: np.ndarray) -> None:
    n = blocks.shape[0]
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    scales, mins = _k_scales_and_mins(blocks[:, 4:16])
    scale = (d * scales).reshape(n, 8, 1)
    minimum = (dmin * mins).reshape(n, 8, 1)
    q = _nibbles(blocks[:, 48:176].reshape(n * 4, 32)).reshape(n, 8, 32)
    # Bit s of qh[l] is the fifth bit of element l of sub-block s.
    q |= _high_bits(blocks[:, 16:48]).reshape(n, 32, 8).transpose(0, 2, 1)
    values = out.reshape(n, 8, 32)
    np.multiply(scale, q, out=values)
    values -= minimum


def _q6_k(blocks: np.ndarray, out: np.ndarray) -> None:
    n = blocks.shape[0]
    q = _nibbles(blocks[:, 0:128].reshape(n * 2, 64)).reshape(n, 2, 4, 32)
    high = _fields_2bit(blocks[:, 128:192]).reshape(n, 2, 4, 32)
    high <<= 4
    q |= high
    q -= np.uint8(32)  # wraps: as int8, q - 32
    scale = _f16(blocks, 208) * blocks[:, 192:208].view(np.int8).astype(np.float32)
    np.multiply(scale.reshape(n, 16, 1), q.view(np.int8).reshape(n, 16, 16), out=out.reshape(n, 16, 16))


def _q8_k(blocks: np.ndarray) -> np.ndarray:
    # Bytes 260..291 hold per-16 sums for dot products; the values need only d.
    d = blocks[:, 0:4].view("<f4").astype(np.float32)
    return blocks[:, 4:260].view(np.int8).astype(np.float32) * d


def _iq4_xs(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    d = _f16(blocks, 0)
    high_bits = blocks[:, 2:4].view("<u2").astype(np.uint16)
    high = (high_bits >> np.arange(0, 16, 2, dtype=np.uint16).reshape(1, 8)) & 3
    low = _nibbles(blocks[:, 4:8])[:, [0, 4, 1, 5, 2, 6, 3, 7]]
    sub_scale = (low | (high.astype(np.uint8) << 4)).astype(np.int8) - np.int8(32)
    scale = (d * sub_scale.astype(np.float32)).reshape(n, 8, 1)
    q = _nibbles(blocks[:, 8:136].reshape(n * 8, 16)).reshape(n, 8, 32)
    return (scale * _IQ4_NL_VALUES[q]).reshape(n, QK_K)


_POWERS_OF_3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)


def _ternary_digits(packed: np.ndarray, digits: int) -> np.ndarray:
    """(n, k) bytes -> (n, digits*k): base-3 digits stored as fixed-point fractions of 256, digit-major."""
    shifted = packed[:, None, :] * _POWERS_OF_3[:digits].reshape(1, digits, 1)  # wraps mod 256 on purpose
    return ((shifted.astype(np.uint16) * 3) >> 8).reshape(packed.shape[0], -1)


def _tq1_0(blocks: np.ndarray) -> np.ndarray:
    trits = np.concatenate(
        [
            _ternary_digits(blocks[:, 0:32], 5),
            _ternary_digits(blocks[:, 32:48], 5),
            _ternary_digits(blocks[:, 48:52], 4),
        ],
        axis=1,
    )
    return _f16(blocks, 52) * (trits.astype(np.int8) - np.int8(1)).astype(np.float32)


def _tq2_0(blocks: np.ndarray) -> np.ndarray:
    q = _fields_2bit(blocks[:, 0:64]).reshape(blocks.shape[0], QK_K)
    return _f16(blocks, 64) * (q.astype(np.int8) - np.int8(1)).astype(np.float32)


# -- registration -------------------------------------------------------------------------------


def _into(decode_blocks: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray, np.ndarray], None]:
    """A decoder that returns its values, as one that writes them into ``out``."""

    def decode_into(blocks: np.ndarray, out: np.ndarray) -> None:
        out[...] = decode_blocks(blocks)

    return decode_into


# Each writes the values of an (n, block_bytes) array of blocks into an (n, block_elements)
# float32 array; the ones that matter most write there directly, without a temporary.
_BLOCK_DECODERS: dict[str, Callable[[np.ndarray, np.ndarray], None]] = {
    "Q4_0": _q4_0,
    "Q4_1": _q4_1,
    "Q5_0": _q5_0,
    "Q5_1": _q5_1,
    "Q8_0": _q8_0,
    "Q8_1": _into(_q8_1),
    "Q2_K": _into(_q2_k),
    "Q3_K": _into(_q3_k),
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
    "Q8_K": _into(_q8_k),
    "IQ4_NL": _into(_iq4_nl),
    "IQ4_XS": _into(_iq4_xs),
    "TQ1_0": _into(_tq1_0),
    "TQ2_0": _into(_tq2_0),
    "MXFP4": _into(_mxfp4),
}


def _make_dequantizer(
    spec: GGMLType, decode_blocks: Callable[[np.ndarray, np.ndarray], None]
) -> Callable[[np.ndarray, int], np.ndarray]:
    def dequantize(raw: np.ndarray, count: int) -> np.ndarray:
        blocks = _as_blocks(raw, count, spec)
        out = np.empty((blocks.shape[0], spec.block_elements), dtype=np.float32)
        # Random or corrupt scales may be inf/NaN; the values then are too, as in ggml.
        step = max(1, _CHUNK_ELEMENTS // spec.block_elements)
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, blocks.shape[0], step):
                decode_blocks(blocks[start : start + step], out[start : start + step])
        return out.reshape(-1)

    return dequantize


def _make_refusal(spec: GGMLType) -> Callable[[np.ndarray, int], np.ndarray]:
    def refuse(raw: np.ndarray, count: int) -> np.ndarray:
        raise UnsupportedFormatError(
            f"dequantizing GGML type {spec.code} is not supported (its tensors can be listed, not read)"
        )

    return refuse


def _as_blocks(raw: np.ndarray, count: int, spec: GGMLType) -> np.ndarray:
    flat = raw.reshape(-1).view(np.uint8)
    if count % spec.block_elements or flat.size != count // spec.block_elements * spec.block_bytes:
        raise InconsistentHeaderError(
            f"{spec.code}: {flat.size} bytes cannot hold {count} values in blocks of "
            f"{spec.block_elements} values / {spec.block_bytes} bytes"
        )
    return flat.reshape(-1, spec.block_bytes)


def _register_all() -> None:
    for spec in GGML_TYPES.values():
        if spec.block_elements == 1:
            continue  # plain types are decoded by base.decode
        decoder = _BLOCK_DECODERS.get(spec.code)
        dequantize = _make_dequantizer(spec, decoder) if decoder and spec.decodable else _make_refusal(spec)
        register_block_type(BlockType(spec.code, spec.block_elements, spec.block_bytes, dequantize))


_register_all()
