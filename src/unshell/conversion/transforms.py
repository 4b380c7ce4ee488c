"""The numeric transforms of a conversion, in numpy, one tensor (or one block of rows) at a time.

Two kinds, because they stream differently:

* **Row maps** move whole rows of a tensor (axis 0; for a 1-D bias, single elements): splitting a
  fused q|k|v or gate|up block, the rotary permutation between Meta's interleaved and Hugging
  Face's rotate-half order. Each is defined once on an array (`split_contiguous`,
  `split_grouped_qkv`, `split_per_head_qkv`, `meta_to_hf`, `hf_to_meta`); applied to
  ``np.arange(rows)`` the same function yields the row index the converter gathers with, so the
  plan composes several maps into one index and reads only the rows it needs. Row maps never
  look at values, so they run on the stored bits (bf16 stays bf16, bit for bit).
* **Value folds** change numbers: a scalar factor (MiniCPM's ``scale_emb``, ``scale_depth/√L``,
  ``dim_model_base/H``) and Baichuan2's NormHead row normalization. They work row-block by
  row-block in float32 (float64 for float64 sources) and are rounded once to the output dtype.

Layouts (``docs/tensor-naming.md`` §2, §3, §5):

* contiguous: ``[q; k; v]`` (Baichuan ``W_pack``, Qwen ``c_attn``, Phi-3 ``qkv_proj``), ``[gate; up]``;
* grouped: ``nkv`` blocks of ``[G query heads, key head, value head]`` (InternLM2 ``wqkv``);
* per-head: ``nh`` blocks of ``[q_h, k_h, v_h]`` (GPT-NeoX ``query_key_value``);
* Meta interleaved rotary: within a head, rows ``2j`` and ``2j+1`` form pair ``j``; rotate-half
  pairs rows ``j`` and ``j + d/2``. Q uses the query head count, K the KV head count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import InconsistentHeaderError
from ..formats.base import bf16_to_f32, f8_to_f32
from ..formats.safetensors import float32_to_bf16

__all__ = [
    "FLOAT_CODES",
    "OUTPUT_DTYPES",
    "QKV_PARTS",
    "cast_values",
    "hf_to_meta",
    "meta_to_hf",
    "normalize_rows",
    "row_index",
    "scale",
    "split_contiguous",
    "split_grouped_qkv",
    "split_per_head_qkv",
    "to_values",
]

QKV_PARTS = ("q", "k", "v")

# -- row maps ---------------------------------------------------------------------------------------


def _check_rows(array: np.ndarray, expected: int, what: str) -> None:
    if array.shape[0] != expected:
        raise InconsistentHeaderError(f"{what}: {array.shape[0]} rows, the layout needs {expected}")


def split_contiguous(array: np.ndarray, sizes: Sequence[int], part: int) -> np.ndarray:
    """Rows of part ``part`` of a block stacked as ``[part 0; part 1; ...]`` with these row counts."""
    _check_rows(array, sum(sizes), "contiguous split")
    start = sum(sizes[:part])
    return array[start : start + sizes[part]]


def split_grouped_qkv(
    array: np.ndarray, part: str, *, kv_heads: int, group: int, head_dim: int
) -> np.ndarray:
    """q, k or v out of ``nkv`` blocks of ``[G query heads, key, value]`` (InternLM2's ``wqkv``).

    Query heads come out group-major (head ``g*G + j``), the order Llama's ``repeat_kv`` expects.
    """
    _check_rows(array, kv_heads * (group + 2) * head_dim, "grouped q|k|v split")
    blocks = array.reshape(kv_heads, group + 2, head_dim, *array.shape[1:])
    if part == "q":
        chosen = blocks[:, :group]
        return chosen.reshape(kv_heads * group * head_dim, *array.shape[1:])
    slot = group if part == "k" else group + 1
    return blocks[:, slot].reshape(kv_heads * head_dim, *array.shape[1:])


def split_per_head_qkv(array: np.ndarray, part: str, *, heads: int, head_dim: int) -> np.ndarray:
    """q, k or v out of ``nh`` blocks of ``[q_h, k_h, v_h]`` (GPT-NeoX's ``query_key_value``)."""
    _check_rows(array, heads * 3 * head_dim, "per-head q|k|v split")
    blocks = array.reshape(heads, 3, head_dim, *array.shape[1:])
    return blocks[:, QKV_PARTS.index(part)].reshape(heads * head_dim, *array.shape[1:])


def meta_to_hf(array: np.ndarray, heads: int) -> np.ndarray:
    """Meta interleaved rotary row order -> Hugging Face rotate-half order (transformers'
    ``convert_llama_weights_to_hf.permute``): per head, view as ``[d/2, 2]`` pairs and transpose."""
    rows = array.shape[0]
    if heads <= 0 or rows % (2 * heads):
        raise InconsistentHeaderError(f"cannot permute {rows} rows as {heads} heads of even size")
    half = rows // heads // 2
    return array.reshape(heads, half, 2, *array.shape[1:]).swapaxes(1, 2).reshape(array.shape)


def hf_to_meta(array: np.ndarray, heads: int) -> np.ndarray:
    """The inverse of `meta_to_hf` (llama.cpp's ``LlamaModel.permute``)."""
    rows = array.shape[0]
    if heads <= 0 or rows % (2 * heads):
        raise InconsistentHeaderError(f"cannot permute {rows} rows as {heads} heads of even size")
    half = rows // heads // 2
    return array.reshape(heads, 2, half, *array.shape[1:]).swapaxes(1, 2).reshape(array.shape)


def row_index(rows: int, maps: Sequence[tuple[str, dict[str, object]]]) -> np.ndarray | None:
    """Compose row maps into one gather index over the source's rows (None: all rows, in order).

    ``maps`` are ``(name, arguments)`` pairs for the functions above, applied left to right, each
    to the output of the previous one. Applying them to the row numbers gives, for every output
    row, the source row it comes from.
    """
    if not maps:
        return None
    index = np.arange(rows, dtype=np.int64)
    for name, arguments in maps:
        index = _ROW_MAPS[name](index, **arguments)
    return np.ascontiguousarray(index)


def _contiguous(index: np.ndarray, *, sizes: Sequence[int], part: int) -> np.ndarray:
    return split_contiguous(index, sizes, part)


def _grouped(index: np.ndarray, *, part: str, kv_heads: int, group: int, head_dim: int) -> np.ndarray:
    return split_grouped_qkv(index, part, kv_heads=kv_heads, group=group, head_dim=head_dim)


def _per_head(index: np.ndarray, *, part: str, heads: int, head_dim: int) -> np.ndarray:
    return split_per_head_qkv(index, part, heads=heads, head_dim=head_dim)


def _meta_to_hf(index: np.ndarray, *, heads: int) -> np.ndarray:
    return meta_to_hf(index, heads)


def _hf_to_meta(index: np.ndarray, *, heads: int) -> np.ndarray:
    return hf_to_meta(index, heads)


_ROW_MAPS: dict[str, Callable[..., np.ndarray]] = {
    "split_contiguous": _contiguous,
    "split_grouped_qkv": _grouped,
    "split_per_head_qkv": _per_head,
    "meta_to_hf": _meta_to_hf,
    "hf_to_meta": _hf_to_meta,
}

# -- value folds ------------------------------------------------------------------------------------


def scale(values: np.ndarray, factor: float) -> np.ndarray:
    """Multiply by a scalar, in the values' own float precision."""
    return values * values.dtype.type(factor)


def normalize_rows(values: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm, as torch's ``F.normalize(w, dim=-1)`` (norm clamped at
    1e-12), accumulated in float64 so that the only rounding is the final one."""
    wide = values.astype(np.float64)
    norms = np.linalg.norm(wide, axis=-1, keepdims=True)
    return (wide / np.maximum(norms, 1e-12)).astype(values.dtype)


# -- stored bits <-> values -------------------------------------------------------------------------

FLOAT_CODES = ("F64", "F32", "F16", "BF16")
# ``--dtype`` choices -> the safetensors dtype every tensor is written in (``auto``: see plan).
OUTPUT_DTYPES = {"bf16": "BF16", "f16": "F16", "f32": "F32"}


def to_values(stored: np.ndarray, code: str) -> np.ndarray:
    """Float values of stored elements: BF16 bits and FP8 codes widened to float32, F16 to float32."""
    if code == "BF16":
        return bf16_to_f32(stored)
    if code.startswith("F8"):
        return f8_to_f32(stored, code)
    if code == "F64":
        return stored.astype(np.float64, copy=False)
    return stored.astype(np.float32, copy=False)


def cast_values(values: np.ndarray, code: str) -> np.ndarray:
    """Values rounded to the stored representation of ``code`` (BF16 as its uint16 bits), little-endian."""
    if code == "BF16":
        return float32_to_bf16(values.astype(np.float32, copy=False))
    target = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}[code]
    return np.ascontiguousarray(values, dtype=target)
