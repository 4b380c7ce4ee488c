"""Name-agnostic content hashes: cheap evidence of copying.

Three hashes per tensor, each blind to the tensor's name:

- ``exact``: the stored bytes (same dtype, same layout);
- ``rounded``: the values rounded to bfloat16, so a lossless or bf16 cast of the same weights
  still matches;
- ``multiset``: the histogram of bfloat16-rounded values, so transposition, fused/split layouts
  and permutations of rows or columns still match.

Counting the histogram costs more than the sha256 beside it (1.4 GB/s against 1.8 for bf16 bytes),
and `compare` needs it only where two tensors could share one. So `compare` hashes without it
(``counted=False``): each tensor keeps the lowest, highest and sum of its bfloat16 bit patterns
(`TensorHashes.key`, 6 to 29 GB/s), which equal histograms share, and `settle_multisets` counts
only the tensors whose key is found on the other side. A fingerprint counts every tensor: a
library matches multisets against models it has not seen.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
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
    # None, both: not digested, and no tensor on the other side of a comparison shares its size
    # and leading values (`digest_candidates`), so neither digest could match there.
    exact: str | None
    rounded: str | None
    # None: not counted, and no tensor on the other side of a comparison can share it
    # (`settle_multisets`). "values:<rounded>": a comparison's stand-in for the histogram of values
    # that only tensors with these very values have there (never stored).
    multiset: str | None
    # Distinct bfloat16 values: every one where the multiset was counted; else those among the
    # first `_CHUNK_ELEMENTS` values, a lower bound (0: not counted, as in a fingerprint's records).
    distinct: int = 0
    # (lowest, highest, sum) of the bfloat16 bit patterns: equal histograms have equal keys (None:
    # not hashed here, as in a fingerprint's records).
    key: tuple[int, int, int] | None = None

    @property
    def digests(self) -> tuple[str, str]:
        """(exact, rounded), which a fingerprint stores: only a digested tensor has them."""
        if self.exact is None or self.rounded is None:
            raise ValueError(f"the content of {self.name!r} was not digested")
        return self.exact, self.rounded

    @property
    def counted_multiset(self) -> str:
        """The multiset's digest, which a fingerprint stores: only a counted tensor has one."""
        if self.multiset is None or self.multiset.startswith(_STAND_IN):
            raise ValueError(f"the multiset of {self.name!r} was not counted")
        return self.multiset


@dataclass
class ContentHashes:
    tensors: list[TensorHashes] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors)

    def by(self, kind: str) -> Counter[str]:
        return Counter(getattr(t, kind) for t in self.tensors)

    @property
    def digests(self) -> list[str]:
        """Every tensor's exact and rounded digests, in order: a fingerprint's content hashes
        (`TensorHashes.digests`: an undigested tensor is refused)."""
        return [digest for tensor in self.tensors for digest in tensor.digests]


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


def _rounded_bits(checkpoint: Checkpoint, info: TensorInfo) -> Iterator[np.ndarray]:
    """A tensor's values rounded to bfloat16 bits (`_bf16_bits`), in order, `_CHUNK_ELEMENTS` at
    a time (`_value_blocks`: never more than a block of rows decoded)."""
    for values in _value_blocks(checkpoint, info):
        for start in range(0, values.size, _CHUNK_ELEMENTS):
            yield _bf16_bits(values[start : start + _CHUNK_ELEMENTS])


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


_STAND_IN = "values:"
_BIT_VALUES = np.arange(1 << 16, dtype=np.int64)


def _count(histogram: np.ndarray, bits: np.ndarray) -> None:
    """Add the counts of ``bits`` (uint16) to ``histogram``, `_CHUNK_ELEMENTS` at a time."""
    for start in range(0, bits.size, _CHUNK_ELEMENTS):
        histogram += np.bincount(bits[start : start + _CHUNK_ELEMENTS], minlength=1 << 16)


# uint16 values summed per uint32 partial sum: 65,536 x 65,535 < 2**32, so no partial overflows.
_SUM_GROUP = 1 << 16


def _sum_bits(bits: np.ndarray) -> int:
    """The exact sum of uint16 values: uint32 sums of `_SUM_GROUP` values each, then their uint64
    total. Widening every value to uint64 in the reduction took twice as long (0.55 against 0.28 ms
    per 4 MiB), and a comparison sums every stored value of both models."""
    whole = bits.size - bits.size % _SUM_GROUP
    grouped = bits[:whole].reshape(-1, _SUM_GROUP).sum(axis=1, dtype=np.uint32)
    return int(grouped.sum(dtype=np.uint64)) + int(bits[whole:].sum(dtype=np.uint64))


class _Tally:
    """What one pass learns of a tensor's bfloat16 bit patterns, given in order: their histogram
    (``counted``), or only their `TensorHashes.key` and the distinct values among the first
    `_CHUNK_ELEMENTS`."""

    def __init__(self, counted: bool) -> None:
        self.histogram = np.zeros(1 << 16, dtype=np.int64) if counted else None
        self.seen = 0
        self.low, self.high, self.total = 1 << 16, -1, 0
        self.first_distinct = 0
        self._head: np.ndarray | None = None  # counts of the first `_CHUNK_ELEMENTS` values so far

    def add(self, bits: np.ndarray) -> None:
        if self.histogram is not None:
            _count(self.histogram, bits)
            return
        if not bits.size:
            return
        if self.seen < _CHUNK_ELEMENTS:
            head = np.bincount(bits[: _CHUNK_ELEMENTS - self.seen], minlength=1 << 16)
            if self._head is not None:  # a first chunk split across blocks: count it whole
                head += self._head
            self._head = head
            self.first_distinct = int(np.count_nonzero(head))
        self.seen += bits.size
        self.low = min(self.low, int(bits.min()))
        self.high = max(self.high, int(bits.max()))
        self.total += _sum_bits(bits)

    def hashes(self, info: TensorInfo, exact: str | None, rounded: str | None) -> TensorHashes:
        histogram = self.histogram
        if histogram is None:
            key = (self.low, self.high, self.total) if self.seen else (0, 0, 0)
            return TensorHashes(info.name, info.numel, exact, rounded, None, self.first_distinct, key)
        return _counted(TensorHashes(info.name, info.numel, exact, rounded, None), histogram)


def _counted(hashes: TensorHashes, histogram: np.ndarray) -> TensorHashes:
    """``hashes`` with the multiset, distinct count and key of its values' ``histogram``."""
    # The histogram of the 65,536 bfloat16 bit patterns is the multiset, exactly, in O(n).
    present = np.flatnonzero(histogram)
    key = (int(present[0]), int(present[-1]), int(histogram @ _BIT_VALUES)) if present.size else (0, 0, 0)
    multiset = hashlib.sha256(histogram.tobytes()).hexdigest()
    return replace(hashes, multiset=multiset, distinct=int(present.size), key=key)


def _release_step(checkpoint: Checkpoint, info: TensorInfo, start: int) -> None:
    """Drop the pages of the `_STEP_BYTES` of ``info``'s stored bytes from ``start``."""
    step = replace(info, offset=info.offset + start, nbytes=min(_STEP_BYTES, info.nbytes - start))
    checkpoint.release(step)


def _tally_stored_bf16(checkpoint: Checkpoint, info: TensorInfo, tally: _Tally) -> None:
    """A bf16 tensor's stored values given to ``tally``, `_STEP_BYTES` at a time, no sha256."""
    raw = checkpoint.raw_bytes(info)
    for start in range(0, info.nbytes, _STEP_BYTES):
        tally.add(raw[start : start + _STEP_BYTES].view("<u2"))
        _release_step(checkpoint, info, start)


def _hash_stored_bf16(checkpoint: Checkpoint, info: TensorInfo, tally: _Tally) -> str:
    """The sha256 of a bf16 tensor's stored bytes, its values given to ``tally``, in one pass over
    the mapped bytes, `_STEP_BYTES` at a time. When the thread budget allows
    (`unshell.threads.budget`), each step's sha256 runs on a second thread, in order, while this
    one counts (hashlib releases the GIL), at most `_HASH_LAG` steps behind; a step's pages are
    released once both are done with it."""
    raw = checkpoint.raw_bytes(info)
    digest = hashlib.sha256()

    def release(start: int) -> None:
        _release_step(checkpoint, info, start)

    steps = range(0, info.nbytes, _STEP_BYTES)
    if budget() < 2 or info.nbytes < _THREAD_MIN_BYTES:
        for start in steps:
            step = raw[start : start + _STEP_BYTES]
            tally.add(step.view("<u2"))
            digest.update(step.data)
            release(start)
        return digest.hexdigest()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="unshell-sha256") as pool:
        hashing: deque[tuple[Future[None], int]] = deque()
        for start in steps:
            step = raw[start : start + _STEP_BYTES]
            hashing.append((pool.submit(digest.update, step.data), start))  # one worker: in order
            tally.add(step.view("<u2"))
            while len(hashing) > _HASH_LAG or (hashing and hashing[0][0].done()):
                done, begun = hashing.popleft()
                done.result()
                release(begun)
        for done, begun in hashing:
            done.result()
            release(begun)
    return digest.hexdigest()


def hash_tensor(
    checkpoint: Checkpoint, name: str, *, counted: bool = True, digested: bool = True
) -> TensorHashes:
    """A tensor's content hashes, in one pass over its bytes. ``counted=False``: its multiset is
    not counted, only its `TensorHashes.key` kept (`settle_multisets` counts what a comparison
    needs). ``digested=False``: no sha256 is taken (its digests None), for a tensor that no tensor
    on the other side of a comparison may equal (`digest_candidates`); the sha256 is nearly all of
    a stored bf16 tensor's cost when it is not counted."""
    info = checkpoint.info(name)
    tally = _Tally(counted)
    stored_bf16 = _stored_bf16(checkpoint, info)
    if not digested:
        if stored_bf16:
            _tally_stored_bf16(checkpoint, info, tally)
        else:
            for bits in _rounded_bits(checkpoint, info):
                tally.add(bits)
            for part in info.parts or (info,):
                checkpoint.release(part)
        return tally.hashes(info, None, None)
    if stored_bf16:
        # One pass over the bytes: no decoding, no rounding, one sha256 for both digests.
        digest = rounded_digest = _hash_stored_bf16(checkpoint, info, tally)
    else:
        parts = list(info.parts or (info,))
        with _exact_digest([checkpoint.raw_bytes(part) for part in parts]) as exact:
            rounded = hashlib.sha256()
            for bits in _rounded_bits(checkpoint, info):
                rounded.update(bits.data)
                tally.add(bits)
            digest = exact()
        for part in parts:
            checkpoint.release(part)
        rounded_digest = rounded.hexdigest()
    return tally.hashes(info, digest, rounded_digest)


def count_tensor(checkpoint: Checkpoint, hashes: TensorHashes) -> TensorHashes:
    """``hashes`` (of a tensor of ``checkpoint``, not counted) with its multiset counted: its
    values read and rounded again, no sha256."""
    info = checkpoint.info(hashes.name)
    histogram = np.zeros(1 << 16, dtype=np.int64)
    if _stored_bf16(checkpoint, info):
        raw = checkpoint.raw_bytes(info)
        for start in range(0, info.nbytes, _STEP_BYTES):  # a step's pages dropped once counted
            _count(histogram, raw[start : start + _STEP_BYTES].view("<u2"))
            _release_step(checkpoint, info, start)
    else:
        for bits in _rounded_bits(checkpoint, info):
            _count(histogram, bits)
        for part in info.parts or (info,):
            checkpoint.release(part)
    return _counted(hashes, histogram)


# Leading values of a tensor that `probe_key` reads: a few pages, which tell two different tensors
# of one size apart unless they differ only further in.
_PROBE_VALUES = 4096
# A tensor whose first row holds more values than this is probed by its size alone (a stacked
# expert tensor's first "row" is a whole matrix).
_PROBE_MAX_ROW = 1 << 20
# Tensors of A probed in vain before `probably_identical` gives up: a pair it gives up on is hashed
# and sketched in one pass, as a pair that differs.
_PROBE_MISSES = 8


def probe_key(checkpoint: Checkpoint, name: str) -> tuple[int, str | None]:
    """(size, digest of its first `_PROBE_VALUES` values rounded to bfloat16): what a tensor shares
    with any tensor whose rounded digest (`hash_tensor`) equals its own, read from its first pages
    (the digest None where its rows cannot be read a few at a time)."""
    info = checkpoint.info(name)
    rows = _probe_rows(checkpoint, info)
    if rows is None:
        return info.numel, None
    values = checkpoint.read(name) if info.numel <= _PROBE_VALUES else checkpoint.read_rows(name, rows)
    checkpoint.release(info)
    bits = _bf16_bits(_float32_values(values)[:_PROBE_VALUES])
    return info.numel, hashlib.blake2b(bits.data, digest_size=16).hexdigest()


def _probe_rows(checkpoint: Checkpoint, info: TensorInfo) -> slice | None:
    """The leading rows `probe_key` reads of a tensor (all of a tensor of at most `_PROBE_VALUES`
    values), or None where it reads none: its rows cannot be read a few at a time."""
    rows = info.shape[0] if info.shape else 0
    row_values = info.numel // rows if rows else 0
    if 0 < info.numel <= _PROBE_VALUES:  # a norm's gains, a bias: read whole
        return slice(0, max(rows, 1))
    if 0 < row_values <= _PROBE_MAX_ROW and checkpoint.row_bytes(info) is not None:
        return slice(0, -(-_PROBE_VALUES // row_values))
    return None


def probe_keys(checkpoint: Checkpoint, names: list[str]) -> dict[str, tuple[int, str | None]]:
    """`probe_key` of each of ``names``, the leading pages of all of them asked for at once and
    read without readahead (`Checkpoint.rows_apart`): a fault in a file the disk reads ahead 8 MB
    at a time would read that much for the few kilobytes a probe needs."""
    with ExitStack() as advised:
        for name in names:
            info = checkpoint.info(name)
            rows = _probe_rows(checkpoint, info)
            if rows is not None:  # a tensor read whole (no rows of its own) has its readahead off
                advised.enter_context(checkpoint.rows_apart(info, rows))
        return {name: probe_key(checkpoint, name) for name in names}


def probably_identical(a: Checkpoint, names_a: list[str], b: Checkpoint, names_b: list[str]) -> bool:
    """Whether every tensor of B may have a rounded twin in A, one for one (`probe_key`: the same
    size and leading values). False where one has none, or where `_PROBE_MISSES` of A's tensors
    probed for B's were not their twins: a derived pair is told in a few reads (B's first tensor is
    its twin's in A, by name, when it has one). True is a guess that the content hashes settle."""
    if Counter(a.info(n).numel for n in names_a) != Counter(b.info(n).numel for n in names_b):
        return False
    unprobed = set(names_a)
    in_order: dict[int, deque[str]] = {}  # A's names of each size, in order (some probed since)
    for name in names_a:
        in_order.setdefault(a.info(name).numel, deque()).append(name)
    found: Counter[tuple[int, str | None]] = Counter()  # A's keys probed, not yet matched
    misses = 0
    for name in names_b:
        key = probe_key(b, name)
        while not found[key]:
            pool = in_order[key[0]]
            while pool and pool[0] not in unprobed:
                pool.popleft()
            if not pool or misses == _PROBE_MISSES:
                return False
            # Its namesake in A first (a copy keeps most names), else A's next tensor of its size.
            candidate = name if name in unprobed and a.info(name).numel == key[0] else pool[0]
            unprobed.discard(candidate)
            probed = probe_key(a, candidate)
            found[probed] += 1
            misses += probed != key
        found[key] -= 1
    return True


def digest_candidates(
    a: Checkpoint, names_a: list[str], b: Checkpoint, names_b: list[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """The tensors of A, and those of B, whose digests may equal a digest of a tensor on the other
    side: the ones whose `probe_key` (size and leading values rounded to bfloat16) a tensor there
    shares. Equal stored bytes, or equal values rounded to bfloat16, have equal leading values, so
    a tensor left out has no digest twin there, and a comparison need not take its sha256
    (``hash_tensor(digested=False)``). A probe that cannot read a tensor's leading values (None)
    shares with every tensor of its size; a tensor of a size the other side lacks is not read."""
    sizes_a = {a.info(name).numel for name in names_a}
    sizes_b = {b.info(name).numel for name in names_b}
    probes_a = probe_keys(a, [name for name in names_a if a.info(name).numel in sizes_b])
    probes_b = probe_keys(b, [name for name in names_b if b.info(name).numel in sizes_a])
    return _sharing(probes_a, probes_b), _sharing(probes_b, probes_a)


def _sharing(
    probes: dict[str, tuple[int, str | None]], others: dict[str, tuple[int, str | None]]
) -> frozenset[str]:
    """The names among ``probes`` whose probe one of ``others`` may share (None: any of its size)."""
    keys = set(others.values())
    unread = {size for size, probe in keys if probe is None}
    return frozenset(
        name
        for name, (size, probe) in probes.items()
        if probe is None or size in unread or (size, probe) in keys
    )


def settle_multisets(
    a: ContentHashes,
    b: ContentHashes,
    count_a: Callable[[TensorHashes], TensorHashes],
    count_b: Callable[[TensorHashes], TensorHashes],
    *,
    min_distinct: int,
) -> tuple[ContentHashes, ContentHashes]:
    """A's and B's hashes with every multiset a comparison needs: `match_hashes` and `exact_twins`
    then give what they give with every tensor counted, for a fraction of the counting.

    Tensors with equal histograms have equal `TensorHashes.key` (and ``numel``), so a tensor whose
    key has no match on the other side shares no multiset there: it stays uncounted (None), and
    `match_hashes` finds it no twin, as counting would have. Tensors whose key does match are
    grouped by it. Where the whole group holds one set of values in one order (one ``rounded``
    digest: a copy, a cast), their histograms are equal and differ from every other group's, so
    they share a stand-in digest ("values:" and that digest) and need no counting, unless one of
    them was counted already (its digest then serves all) or their distinct values, a lower bound
    until counted, fall short of ``min_distinct`` (one is then counted: `exact_twins` reads it).
    A group with values in more than one order (a permuted or re-laid-out copy, or a chance
    collision) is counted, tensor by tensor. ``count_a``, ``count_b``: a tensor's hashes with its
    multiset counted."""
    groups: dict[tuple[int, tuple[int, int, int] | None], list[tuple[int, int]]] = {}
    sides = (list(a.tensors), list(b.tensors))
    for side, tensors in enumerate(sides):
        for index, tensor in enumerate(tensors):
            groups.setdefault((tensor.numel, tensor.key), []).append((side, index))
    counters = (count_a, count_b)
    for (_, key), members in groups.items():
        if key is None or len({side for side, _ in members}) < 2:
            continue
        group = [sides[side][index] for side, index in members]
        if all(t.multiset is not None for t in group):
            continue
        # One set of values in one order (a group holding an undigested tensor is counted).
        if len({t.rounded for t in group}) == 1 and group[0].rounded is not None:
            known = next((t for t in group if t.multiset is not None), None)
            if known is None and group[0].distinct < min_distinct:
                side, index = members[0]
                known = sides[side][index] = counters[side](group[0])
            multiset = _STAND_IN + group[0].rounded if known is None else known.multiset
            distinct = group[0].distinct if known is None else known.distinct
            for side, index in members:
                sides[side][index] = replace(sides[side][index], multiset=multiset, distinct=distinct)
            continue
        for side, index in members:
            if sides[side][index].multiset is None:
                sides[side][index] = counters[side](sides[side][index])
    return ContentHashes(sides[0]), ContentHashes(sides[1])


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
    """A multiset not counted (None, `settle_multisets`) has no twin."""

    def fraction(kind: str) -> float:
        available = a.by(kind)
        matched = 0
        for tensor in b.tensors:
            key = getattr(tensor, kind)
            if key is not None and available[key] > 0:
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
        if tensor.rounded is None:  # not digested: no twin in A (`hash_tensor`)
            continue
        if available[tensor.rounded] > 0:
            available[tensor.rounded] -= 1
            tensors += 1
            parameters += tensor.numel
    fraction = parameters / b.parameters if b.parameters else 0.0
    return TwinMatch(fraction, tensors, parameters, min_elements, min_distinct)
