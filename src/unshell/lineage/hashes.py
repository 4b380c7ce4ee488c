"""Name-agnostic content hashes: cheap evidence of copying.

Three hashes per tensor, each blind to the tensor's name:

- ``exact``: the stored bytes (same dtype, same layout);
- ``rounded``: the values rounded to bfloat16, so a lossless or bf16 cast of the same weights
  still matches;
- ``multiset``: the histogram of bfloat16-rounded values, so transposition, fused/split layouts
  and permutations of rows or columns still match.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..formats.base import Checkpoint, TensorInfo
from ..threads import budget


def _bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest even), as uint16 bits."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    # In place on one temporary (callers pass cache-sized chunks): the same uint32 arithmetic as
    # ``(bits + ((bits >> 16) & 1) + 0x7FFF) >> 16``, wrapping alike.
    rounded = bits >> 16
    rounded &= 1
    rounded += 0x7FFF
    rounded += bits
    rounded >>= 16
    return rounded.astype(np.uint16)


@dataclass(frozen=True)
class TensorHashes:
    name: str
    numel: int
    exact: str
    rounded: str
    multiset: str
    distinct: int = 0  # distinct bfloat16 values (0: not counted, as in a fingerprint's records)


@dataclass
class ContentHashes:
    tensors: list[TensorHashes] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors)

    def by(self, kind: str) -> Counter[str]:
        return Counter(getattr(t, kind) for t in self.tensors)


_BLOCK_ELEMENTS = 1 << 22  # 4M values (16 MB as float32) decoded per step
# Values rounded, counted and hashed per step. Each bincount widens its values to int64 and pays a
# pass over 64k bins: 1M values per call was the fastest measured (1.72 GB/s of bf16 against 1.47
# at 256k and 1.46 at 2M, whose int64 copy no longer fits the caches; RESULTS.md, session 8).
_CHUNK_ELEMENTS = 1 << 20
# Stored bytes of a bf16 tensor read per step into a reused buffer (`Checkpoint.read_into`): the
# buffer stays in the caches for the sha256 and the count, which mapped pages read once from memory
# for each do not. Even, so a step always ends between two values.
_READ_BYTES = 1 << 22
# Below this, a tensor's sha256 runs in line: starting a thread would cost more than it overlaps.
_THREAD_MIN_BYTES = 1 << 22


def _value_blocks(checkpoint: Checkpoint, info: TensorInfo) -> Iterator[np.ndarray]:
    """A tensor's values as float32, in blocks of rows (quantized rows too), so hashing a 262k x 640
    embedding never holds more than one block."""
    row_bytes = checkpoint.row_bytes(info)
    if row_bytes is None:
        yield _float32_values(checkpoint.read(info.name))
        return
    rows = info.shape[0]
    step = max(1, _BLOCK_ELEMENTS // max(1, info.numel // rows))
    for start in range(0, rows, step):
        yield _float32_values(checkpoint.read_rows(info.name, slice(start, start + step)))
    checkpoint.release(info)


def _float32_values(values: np.ndarray) -> np.ndarray:
    """Flat float32 values; a complex tensor's real and imaginary parts both count (interleaved),
    so two tensors that differ only in imaginary parts do not hash alike."""
    values = np.asarray(values)
    if values.dtype.kind == "c":
        values = np.ascontiguousarray(values).view(values.real.dtype)
    return np.asarray(values, dtype=np.float32).ravel()


def _stored_bf16(checkpoint: Checkpoint, info: TensorInfo) -> bool:
    """Whether the stored bytes are the tensor's bfloat16 bit patterns, in order (then rounding to
    bfloat16 changes nothing, so ``rounded`` hashes the very bytes ``exact`` hashes)."""
    return (
        info.dtype == "BF16"
        and checkpoint.raw_is_value(info)
        and not info.parts
        and info.strides is None
        and sys.byteorder == "little"
    )


def _sha256(parts: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.data)  # hashlib releases the GIL while it hashes a large buffer
    return digest.hexdigest()


@contextmanager
def _exact_digest(parts: list[np.ndarray]) -> Iterator[Callable[[], str]]:
    """The sha256 of ``parts``' bytes, hashed on a second thread while the caller counts values
    on this one when the thread budget allows (`unshell.threads.budget`): the two passes over the
    bytes then overlap (the stored bytes are read from the page cache once, by whichever is first).
    Yields a function that waits for the digest."""
    if budget() < 2 or sum(part.size for part in parts) < _THREAD_MIN_BYTES:
        yield lambda: _sha256(parts)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="unshell-sha256") as pool:
        future = pool.submit(_sha256, parts)
        yield future.result


def _count(histogram: np.ndarray, bits: np.ndarray) -> None:
    """Add the counts of ``bits`` (uint16) to ``histogram``, `_CHUNK_ELEMENTS` at a time."""
    for start in range(0, bits.size, _CHUNK_ELEMENTS):
        histogram += np.bincount(bits[start : start + _CHUNK_ELEMENTS], minlength=1 << 16)


def _hash_stored_bf16(checkpoint: Checkpoint, info: TensorInfo, histogram: np.ndarray) -> str:
    """The sha256 of a bf16 tensor's stored bytes, its values counted into ``histogram``: one pass,
    read `_READ_BYTES` at a time into a buffer (`Checkpoint.read_into`). When the thread budget
    allows (`unshell.threads.budget`), a second thread hashes each buffer and then reads the next
    one into a second buffer while this thread counts: hashlib and ``pread`` release the GIL, so
    the sha256, the read and the count run side by side, two buffers in memory."""
    size = max(2, min(_READ_BYTES, info.nbytes) & ~1)
    digest = hashlib.sha256()
    if budget() < 2 or info.nbytes < _THREAD_MIN_BYTES:
        buffer = np.empty(size, dtype=np.uint8)
        for start in range(0, info.nbytes, size):
            chunk = buffer[: checkpoint.read_into(info, start, buffer)]
            _count(histogram, chunk.view("<u2"))
            digest.update(chunk)  # while the chunk is still in the caches
        return digest.hexdigest()
    buffers = (np.empty(size, dtype=np.uint8), np.empty(size, dtype=np.uint8))

    def hash_then_read(index: int, count: int, start: int) -> int:
        # Writes only the buffer this thread's caller is not counting (the other one).
        digest.update(buffers[index][:count])
        return checkpoint.read_into(info, start, buffers[1 - index]) if start < info.nbytes else 0

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="unshell-sha256") as pool:
        index, count = 0, checkpoint.read_into(info, 0, buffers[0])
        start = count
        while count:
            following = pool.submit(hash_then_read, index, count, start)
            _count(histogram, buffers[index][:count].view("<u2"))
            count = following.result()  # the buffer just counted is free again only after this
            start += count
            index = 1 - index
    return digest.hexdigest()


def hash_tensor(checkpoint: Checkpoint, name: str) -> TensorHashes:
    info = checkpoint.info(name)
    histogram = np.zeros(1 << 16, dtype=np.int64)
    if _stored_bf16(checkpoint, info):
        # One pass over the bytes: no decoding, no rounding, one sha256 for both digests.
        digest = rounded_digest = _hash_stored_bf16(checkpoint, info, histogram)
    else:
        parts = list(info.parts or (info,))
        with _exact_digest([checkpoint.raw_bytes(part) for part in parts]) as exact:
            rounded = hashlib.sha256()
            for values in _value_blocks(checkpoint, info):
                for start in range(0, values.size, _CHUNK_ELEMENTS):
                    bits = _bf16_bits(values[start : start + _CHUNK_ELEMENTS])
                    rounded.update(bits.data)
                    histogram += np.bincount(bits, minlength=1 << 16)
            digest = exact()
        for part in parts:
            checkpoint.release(part)
        rounded_digest = rounded.hexdigest()
    # The histogram of the 65,536 bfloat16 bit patterns is the multiset, exactly, in O(n).
    multiset = hashlib.sha256(histogram.tobytes()).hexdigest()
    distinct = int(np.count_nonzero(histogram))
    return TensorHashes(name, info.numel, digest, rounded_digest, multiset, distinct)


@dataclass(frozen=True)
class HashMatch:
    """Fraction of B's parameters whose tensor has a twin in A under each hash."""

    exact: float
    rounded: float
    multiset: float

    def to_dict(self) -> dict[str, float]:
        return {
            "exact": round(self.exact, 6),
            "rounded": round(self.rounded, 6),
            "multiset": round(self.multiset, 6),
        }


def match_hashes(a: ContentHashes, b: ContentHashes) -> HashMatch:
    def fraction(kind: str) -> float:
        available = a.by(kind)
        matched = 0
        for tensor in b.tensors:
            key = getattr(tensor, kind)
            if available[key] > 0:
                available[key] -= 1
                matched += tensor.numel
        return matched / b.parameters if b.parameters else 0.0

    return HashMatch(fraction("exact"), fraction("rounded"), fraction("multiset"))


@dataclass(frozen=True)
class TwinMatch:
    """B's tensors whose values (after bf16 rounding) equal one of A's, counting only tensors that
    independent training cannot reproduce (see `exact_twins`)."""

    fraction: float  # of B's parameters
    tensors: int
    parameters: int
    min_elements: int
    min_distinct: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "fraction": round(self.fraction, 6),
            "tensors": self.tensors,
            "parameters": self.parameters,
            "min_elements": self.min_elements,
            "min_distinct": self.min_distinct,
        }


def exact_twins(
    a: ContentHashes,
    b: ContentHashes,
    *,
    min_elements: int,
    min_distinct: int,
    excluded: frozenset[str] = frozenset(),
) -> TwinMatch:
    """Twins of A's tensors among B's, each of A's tensors vouching for one of B's. A tensor of B
    counts only with at least ``min_elements`` values, ``min_distinct`` of them distinct, and a
    name outside ``excluded`` (tables fixed by design, such as sinusoidal positions)."""
    available = a.by("rounded")
    tensors = parameters = 0
    for tensor in b.tensors:
        if tensor.numel < min_elements or tensor.distinct < min_distinct or tensor.name in excluded:
            continue
        if available[tensor.rounded] > 0:
            available[tensor.rounded] -= 1
            tensors += 1
            parameters += tensor.numel
    fraction = parameters / b.parameters if b.parameters else 0.0
    return TwinMatch(fraction, tensors, parameters, min_elements, min_distinct)
