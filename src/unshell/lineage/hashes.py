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
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

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
# pass over 64k bins; 512k values per call is the compromise measured in session 8 (RESULTS.md):
# counting stored bf16 runs at 1.69 GB/s (1.64 at 256k, 1.72 at 1M, 1.65 at 2M, whose int64 copy
# leaves the caches) and rounding float32 is at its fastest (1M is 13% slower there).
_CHUNK_ELEMENTS = 1 << 19
# Stored bf16 bytes counted and hashed per step; each step's pages leave the process once both are
# done (`Checkpoint.release`), so the pass holds a few steps of a tensor (`_HASH_LAG` + 1 at most),
# never the whole of it (a 262k-token bf16 embedding is over 1 GB). A multiple of the page size.
_STEP_BYTES = 1 << 22
# Steps the sha256 thread may fall behind the count before the count waits for it: enough that a
# busy machine's scheduling (a thread not run for a few milliseconds) does not stall the other.
_HASH_LAG = 8
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
    with np.errstate(over="ignore"):  # past float32's range: infinities, as a float32 copy stores them
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


def hashed_on_one_core(checkpoint: Checkpoint, name: str) -> bool:
    """Whether `hash_tensor` works on one core for this tensor: it decodes the values (quantized
    blocks, f16, f32...), against a stored bf16 tensor's count and sha256 on two threads."""
    return not _stored_bf16(checkpoint, checkpoint.info(name))


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
    """The sha256 of a bf16 tensor's stored bytes, its values counted into ``histogram``, in one
    pass over the mapped bytes, `_STEP_BYTES` at a time. When the thread budget allows
    (`unshell.threads.budget`), each step's sha256 runs on a second thread, in order, while this
    one counts (hashlib releases the GIL), at most `_HASH_LAG` steps behind; a step's pages are
    released once both are done with it."""
    raw = checkpoint.raw_bytes(info)
    digest = hashlib.sha256()

    def release(start: int) -> None:
        step = replace(info, offset=info.offset + start, nbytes=min(_STEP_BYTES, info.nbytes - start))
        checkpoint.release(step)

    steps = range(0, info.nbytes, _STEP_BYTES)
    if budget() < 2 or info.nbytes < _THREAD_MIN_BYTES:
        for start in steps:
            step = raw[start : start + _STEP_BYTES]
            _count(histogram, step.view("<u2"))
            digest.update(step.data)
            release(start)
        return digest.hexdigest()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="unshell-sha256") as pool:
        hashing: deque[tuple[Future[None], int]] = deque()
        for start in steps:
            step = raw[start : start + _STEP_BYTES]
            hashing.append((pool.submit(digest.update, step.data), start))  # one worker: in order
            _count(histogram, step.view("<u2"))
            while len(hashing) > _HASH_LAG or (hashing and hashing[0][0].done()):
                done, begun = hashing.popleft()
                done.result()
                release(begun)
        for done, begun in hashing:
            done.result()
            release(begun)
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
