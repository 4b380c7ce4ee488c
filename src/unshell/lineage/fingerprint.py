"""Compact fingerprints: test a suspect against a base without the base's weights.

A fingerprint (format version 3) holds A's side of `compare`'s calibrated test, computed in one
streaming pass over A's weights (tensor by tensor), so that `compare_with_fingerprint` runs
`compare`'s own weighing (`compare.weigh_lineage`, over the `BaseEvidence` a fingerprint provides
as `FingerprintEvidence`) and reaches its verdicts:

- **unit sketches**: every matrix that touches the residual stream, as `sketch.gram_sketch` of its
  vectors in `compare`'s own basis (``r = min(H, 256)`` dimensions, `FINGERPRINT_DIM`), stored as
  upper triangles in float16; a matrix with more than ``row_sample`` vectors (8 r) is sketched from
  `compare`'s fixed sample of them (`sketch.sampled_rows`), as `compare` sketches it;
- **anchors**: A's embedding rows at the ids `compare` anchors on (every `sketch.anchor_stride`-th
  id), whole up to width `FULL_ANCHOR_MAX_HIDDEN`, so the residual alignment is `compare`'s
  Procrustes fit; above it, their projection on the sketch basis, fitted by least squares
  (`fit_anchor_basis`: exact for a rotated, permuted or sign-flipped stream, not `compare`'s fit);
- **anchor token strings**: an 8-byte hash of each anchor row's token, so a renumbered or new
  vocabulary pairs rows by string, as `compare` does when both sides carry tokenizers;
- **layer moments**: each layer matrix's second moment (`compare.layer_grams`, H x H, float16) up
  to width `LAYER_GRAM_MAX_HIDDEN`, for the alignment read off the layer matrices when the anchors
  fail (a new vocabulary);
- **content hashes** (exact, bf16-rounded and multiset, name-blind, `hashes.py`) for identical
  copies and exact twins;
- the architecture signature and shape config, the tokenizer's content-defined sample
  (`tokenizers.families`), and a sha256 of the tensor table (`header_hash`, for scan resume).

Sizes, before and after format 2, and the null pairs: `benchmarks/RESULTS.md` ("search as strong
as compare"). Format 1 (64-dimension sketches, no token strings nor layer moments) is refused with
`StaleFingerprintError`: re-fingerprint the checkpoint. Format 2 is format 3 without row sampling
(every vector of every matrix sketched; ``row_sample`` 0): it still loads, and a checkpoint
compared against it is sketched the same way (all vectors), so the test is the one it was made for.
Against a format 3 fingerprint the checkpoint is sampled as the fingerprint was. Two fingerprints
that sampled differently are still compared (each side's sketch depends on its own weights only,
so the null holds), with a note: a derivative's match is weaker there.

Where a fingerprint comparison still differs from the full one: `how` is `compare --quick`'s
(no finetune / continued-pretraining distinction: both need A's raw rows); the tokenizer relation is
computed on A's sample (about 1 token in 32), reported in the notes, and `CompareResult.tokenizer`
stays None; above width 512 the alignment is the least-squares fit and no layer-matrix alignment
is tried.

**Fingerprint against fingerprint** (both compressed) is weaker: B's sketches are in B's own
basis, which is A's basis only when both have the same hidden size (the projection is seeded by the
size) and B's residual stream was not rotated. An ``r x r`` Procrustes fit between the two anchor
sets on shared token ids corrects rotations *inside* the sketch subspace but not out of it, so a
derivative whose residual stream was rotated, permuted or sign-flipped (an obfuscation) is not
reliably detected that way when r is smaller than H, nor one with another hidden size (width
pruning): those give `inconclusive` or `independent`. Fine-tunes, merges, quantized copies, depth
changes and vocabulary extensions are detected; identical copies are found by hashes; calibration
is the same test's.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptCheckpointError, StaleFingerprintError
from ..formats import open_checkpoint
from ..formats.base import Checkpoint, sanitize
from ..inspection import InspectResult
from ..model import Model
from ..numbers import checked_float, checked_int, describe
from ..progress import BYTES, ProgressReporter, reporting, stage
from ..tokenizers import families
from ..tokenizers.vocab import Vocabulary, vocabulary_of
from .canonical import LAYER_ROLES, CanonicalModel
from .compare import (
    INDEPENDENT_P,
    MIN_ANCHORS_PER_DIMENSION,
    MIN_UNITS,
    CompareResult,
    Lineage,
    Unit,
    alignment_plan,
    choose_anchor,
    derivation_kinds,
    embedding_candidates,
    exact_twin_match,
    hashable_names,
    hashed_and_sketched,
    identical_by_hashes,
    layer_grams,
    read_row_ids,
    read_rows,
    screening_layers,
    tensor_units,
    units_ahead,
    weigh_lineage,
    weigh_units,
)
from .hashes import ContentHashes, TensorHashes, TwinMatch, match_hashes
from .sketch import (
    CHANCE_SEED,
    IDENTITY_KEPT_RESIDUAL,
    SKETCH_DIM,
    Alignment,
    align_embeddings,
    anchor_stride,
    finite,
    polar_factor,
    projection,
    row_sample_size,
    untransformed_residual,
)
from .summary import ModelSummary

__all__ = [
    "FINGERPRINT_DIM",
    "FINGERPRINT_VERSION",
    "Fingerprint",
    "FingerprintEvidence",
    "compare_with_fingerprint",
    "fingerprint",
    "fingerprint_checkpoint",
    "header_hash",
]

FINGERPRINT_VERSION = 3
# Version 1 sketched in 64 dimensions and kept no token strings nor layer moments: its verdicts
# were weaker than `compare`'s, so it is refused (re-fingerprint), never silently used. Version 2
# sketched every vector of every matrix (no ``row_sample``): still read, and compared as it was made.
ROW_SAMPLING_VERSION = 3
MIN_READ_VERSION = 2
FINGERPRINT_DIM = SKETCH_DIM  # sketches in min(H, 256) dimensions: `compare`'s own
# A's layer second moments (H x H each, for the alignment read off the layer matrices) are kept up
# to this width: they cost H^2 / 2 float16 values per matrix (benchmarks/RESULTS.md).
LAYER_GRAM_MAX_HIDDEN = 512
# Up to this width the anchors are the very rows `compare` aligns on (`anchor_stride`), whole, so
# the alignment is `compare`'s Procrustes fit: fewer rows shift a noisy fit enough to change a
# verdict (a sibling of all-MiniLM-L6-v2: p = 2e-14 on all 30,522 rows, 2e-6 on every 8th). Above
# it they are projections on the sketch basis, at most max(FINGERPRINT_ANCHOR_ROWS, 2 H) of them,
# and the alignment a least-squares fit to them: compact (a rotation of H dimensions is fixed by a
# few H rows), not `compare`'s own.
FULL_ANCHOR_MAX_HIDDEN = 512
FINGERPRINT_ANCHOR_ROWS = 4096
TOKEN_HASH_BYTES = 8
_NO_TOKEN = bytes(TOKEN_HASH_BYTES)
MAGIC = b"UNSHELL-FINGERPRINT\n"
RIDGE = 1e-6  # relative ridge of the anchor least squares (only matters when rows < hidden)
OBFUSCATED_OFF_BASIS = (
    1.0  # RMS distance of the fitted basis from A's: a rotated stream gives ~1.4, heavy retraining <= 0.6
)
_HEADER_LIMIT = 64 << 20
MAX_LAYER = 1 << 20
"""The largest layer number a stored fingerprint may name (real models have at most a few hundred)."""
_ARRAY_DTYPES = {
    "sketches": "<f2",
    "anchors": "<f2",
    "hashes": "|u1",
    "anchor_tokens": "|u1",
    "grams": "<f2",
}


def token_hash(token: bytes) -> bytes:
    """A token string's 8-byte digest (what a fingerprint keeps of its anchor rows' tokens)."""
    digest = hashlib.blake2b(token, digest_size=TOKEN_HASH_BYTES).digest()
    return digest if digest != _NO_TOKEN else b"\x01" + digest[1:]


def header_hash(checkpoint: Checkpoint) -> str:
    """sha256 of the checkpoint's tensor table (names, dtypes, shapes, file, offsets, sizes) and its
    format: changes when any header changes, reads no weight data (for resuming scans)."""
    table = [
        [name, info.dtype, list(info.shape), info.file.name, info.offset, info.nbytes, len(info.parts)]
        for name, info in checkpoint.tensors.items()
    ]
    document = json.dumps([checkpoint.format, table], separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(document.encode("ascii")).hexdigest()


def signature_of(family: str | None, config: dict[str, Any]) -> str:
    """Architecture signature: family and shape config, e.g. ``llama|h128|l4|q4|kv2|ffn256|v512``."""
    keys = (
        ("h", "hidden_size"),
        ("l", "num_hidden_layers"),
        ("q", "num_attention_heads"),
        ("kv", "num_key_value_heads"),
        ("ffn", "intermediate_size"),
        ("v", "vocab_size"),
    )
    parts = [family or "unknown"]
    parts.extend(f"{short}{config[key]}" for short, key in keys if config.get(key) is not None)
    return "|".join(parts)


# --- the fingerprint ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Fingerprint:
    """A's side of the lineage test, compact and self-describing (see the module docstring).

    ``content_hashes`` holds two hex sha256 per weight tensor, in tensor order: ``[2i]`` the stored
    bytes (exact), ``[2i + 1]`` the values rounded to bfloat16 (matches across lossless casts);
    ``multiset_hashes[i]`` and ``tensor_numels[i]`` go with tensor ``i``. Any shared hash means a
    shared tensor, whatever the names.
    """

    version: int
    name: str
    source: str
    format: str
    family: str | None
    signature: str
    hidden: int | None
    layers: int | None
    vocab_size: int | None
    parameters: int
    tokenizer: dict[str, Any] | None
    content_hashes: list[str]
    header_hash: str
    # --- the weight evidence ---
    config: dict[str, Any] = field(default_factory=dict)
    dtypes: dict[str, dict[str, int]] = field(default_factory=dict)
    multiset_hashes: list[str] = field(default_factory=list)
    tensor_numels: list[int] = field(default_factory=list)
    sketch_dim: int = 0
    units: list[dict[str, Any]] = field(default_factory=list)  # name, layer, role, orientation, std
    sketches: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float16))
    anchor_names: list[str] = field(default_factory=list)  # embedding candidates (one row of anchors each)
    anchor_rows: int = 0  # rows of A's embedding
    anchor_stride: int = 1  # anchor token ids: 0, stride, 2 stride, ... (anchors.shape[1] of them)
    anchors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), dtype=np.float16))
    anchor_scale: float = 1.0  # the anchors are stored divided by this (float16 range)
    total_bytes: int = 0
    # `token_hash` of each anchor row's token (zeros: none, special, or not its lowest id), so a
    # renumbered or new vocabulary still pairs rows by string; empty without a tokenizer.
    anchor_tokens: np.ndarray = field(default_factory=lambda: np.zeros((0, TOKEN_HASH_BYTES), dtype=np.uint8))
    # A's layer second moments (`compare.layer_grams`), unit Frobenius norm, upper triangles.
    gram_keys: list[tuple[int, str]] = field(default_factory=list)
    grams: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float16))
    # The most vectors of a matrix its sketches took (`compare.tensor_units`' ``sample``): 0 for
    # every vector (format 2, which predates row sampling).
    row_sample: int = 0

    # -- views ------------------------------------------------------------------------------------

    def hashes(self) -> ContentHashes:
        """The content hashes in `hashes.py`'s form (names are positions: the hashes are name-blind)."""
        return ContentHashes(
            [
                TensorHashes(
                    f"#{i}", numel, self.content_hashes[2 * i], self.content_hashes[2 * i + 1], multiset
                )
                for i, (numel, multiset) in enumerate(
                    zip(self.tensor_numels, self.multiset_hashes, strict=True)
                )
            ]
        )

    def unit_list(self) -> list[Unit]:
        """A's units with their full sketches (float32, unit norm)."""
        r = self.sketch_dim
        upper = np.triu_indices(r)
        units = []
        for info, packed in zip(self.units, self.sketches, strict=True):
            full = np.zeros((r, r), dtype=np.float32)
            full[upper] = packed.astype(np.float32)
            full = full + np.triu(full, 1).T
            norm = float(np.linalg.norm(full))
            sketch = (full / norm if norm > 0 else full).ravel()
            units.append(
                Unit(info["name"], info["layer"], info["role"], info["orientation"], sketch, info["std"])
            )
        return units

    def anchor_projection(self, candidate: int) -> np.ndarray:
        """A's anchor rows for one embedding candidate (up to `FULL_ANCHOR_MAX_HIDDEN` dimensions
        A's rows themselves, else their projection on the sketch basis), float32, not centered."""
        return self.anchors[candidate].astype(np.float32) * np.float32(self.anchor_scale)

    def layer_grams(self) -> dict[tuple[int, str], np.ndarray] | None:
        """A's layer second moments by (layer, role), or None when none were kept."""
        if not self.gram_keys or not self.hidden:
            return None
        h = self.hidden
        upper = np.triu_indices(h)
        out = {}
        for key, packed in zip(self.gram_keys, self.grams, strict=True):
            full = np.zeros((h, h), dtype=np.float64)
            full[upper] = packed.astype(np.float64)
            out[key] = full + np.triu(full, 1).T
        return out

    def summary(self) -> ModelSummary:
        """What a comparison reports about this side (renamed tensors are not recorded)."""
        return ModelSummary(
            path=self.source,
            format=self.format,
            family=self.family,
            confidence="fingerprint",
            config=dict(self.config),
            parameters=self.parameters,
            dtypes=dict(self.dtypes),
        )

    # -- bytes --------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """``MAGIC``, a little-endian u32 header length, a JSON header, then raw little-endian arrays
        (the header lists each array's dtype, shape and offset, and the payload's sha256)."""
        hashes = np.zeros((len(self.tensor_numels), 3, 32), dtype=np.uint8)
        for i in range(len(self.tensor_numels)):
            for k, text in enumerate(
                (self.content_hashes[2 * i], self.content_hashes[2 * i + 1], self.multiset_hashes[i])
            ):
                hashes[i, k] = np.frombuffer(bytes.fromhex(text), dtype=np.uint8)
        arrays = {
            "sketches": np.ascontiguousarray(self.sketches, dtype="<f2"),
            "anchors": np.ascontiguousarray(self.anchors, dtype="<f2"),
            "hashes": hashes,
            "anchor_tokens": np.ascontiguousarray(self.anchor_tokens, dtype=np.uint8),
            "grams": np.ascontiguousarray(self.grams, dtype="<f2"),
        }
        layout: dict[str, Any] = {}
        payload = bytearray()
        for key, array in arrays.items():
            layout[key] = {"dtype": _ARRAY_DTYPES[key], "shape": list(array.shape), "offset": len(payload)}
            payload += array.tobytes()
        header = {
            "version": self.version,
            "name": self.name,
            "source": self.source,
            "format": self.format,
            "family": self.family,
            "signature": self.signature,
            "hidden": self.hidden,
            "layers": self.layers,
            "vocab_size": self.vocab_size,
            "parameters": self.parameters,
            "tokenizer": self.tokenizer,
            "header_hash": self.header_hash,
            "config": self.config,
            "dtypes": self.dtypes,
            "tensor_numels": self.tensor_numels,
            "sketch_dim": self.sketch_dim,
            "units": self.units,
            "anchor_names": self.anchor_names,
            "anchor_rows": self.anchor_rows,
            "anchor_stride": self.anchor_stride,
            "anchor_scale": self.anchor_scale,
            "total_bytes": self.total_bytes,
            "gram_keys": [[layer, role] for layer, role in self.gram_keys],
            **({"row_sample": self.row_sample} if self.version >= ROW_SAMPLING_VERSION else {}),
            "arrays": layout,
            "payload_bytes": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
        }
        encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
            "ascii"
        )
        return MAGIC + struct.pack("<I", len(encoded)) + encoded + bytes(payload)

    @classmethod
    def from_bytes(cls, data: bytes) -> Fingerprint:
        """Parse and validate strictly; any inconsistency raises `CorruptCheckpointError`."""
        try:
            return _parse(bytes(data))
        except (CorruptCheckpointError, StaleFingerprintError):
            raise
        except RecursionError:
            raise _bad("header nested too deeply") from None
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, struct.error) as error:
            raise CorruptCheckpointError(f"fingerprint: malformed ({sanitize(str(error))})") from None


def _bad(message: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"fingerprint: {message}")


def _typed(header: dict[str, Any], key: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
    value = header.get(key) if optional else header[key]
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (
        isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        raise _bad(f"field {key!r} has the wrong type")
    return value


def _count(header: dict[str, Any], key: str, *, optional: bool = False) -> int | None:
    """A count or size: None (when optional) or an int in 0..2**63-1 (what SQLite stores)."""
    value = header.get(key) if optional else header[key]
    if value is None and optional:
        return None
    return checked_int(value, where=f"fingerprint: field {key!r}", error=CorruptCheckpointError)


def _check_unit(unit: object) -> None:
    """A sketched matrix's record: its name, layer (None or 0..MAX_LAYER), role, orientation and
    the finite spread of its values."""
    if (
        not isinstance(unit, dict)
        or set(unit) != {"name", "layer", "role", "orientation", "std"}
        or not isinstance(unit["name"], str)
        or not (unit["role"] is None or isinstance(unit["role"], str))
        or unit["orientation"] not in ("rows", "columns")
    ):
        raise _bad("bad unit record")
    if unit["layer"] is not None:
        checked_int(
            unit["layer"],
            where="fingerprint: a unit's layer",
            maximum=MAX_LAYER,
            error=CorruptCheckpointError,
        )
    checked_float(unit["std"], where="fingerprint: a unit's std", minimum=0.0, error=CorruptCheckpointError)


def _check_config(config: dict[str, Any]) -> None:
    """The shape config's top-level floats are finite (`to_bytes` never writes NaN or infinity); its
    other values are what JSON holds (an int that JSON parsed has at most 4,300 digits: it prints)."""
    for key, value in config.items():
        if isinstance(value, float):
            checked_float(
                value, where=f"fingerprint: config {sanitize(str(key), 40)!r}", error=CorruptCheckpointError
            )


def _check_dtypes(dtypes: dict[str, Any]) -> None:
    """The dtype table: per dtype, counts (tensors, parameters, bytes) in 0..2**63-1."""
    for dtype, row in dtypes.items():
        if not isinstance(row, dict):
            raise _bad(f"dtype row {sanitize(str(dtype), 40)!r} holds {describe(row)}")
        for key, value in row.items():
            checked_int(
                value,
                where=f"fingerprint: dtype {sanitize(str(dtype), 40)!r} {sanitize(str(key), 40)}",
                error=CorruptCheckpointError,
            )


def _parse(data: bytes) -> Fingerprint:
    if not data.startswith(MAGIC):
        raise _bad("not an unshell fingerprint (bad magic)")
    start = len(MAGIC) + 4
    if len(data) < start:
        raise _bad("truncated header")
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    if length > _HEADER_LIMIT or start + length > len(data):
        raise _bad("truncated header")
    try:
        header = json.loads(data[start : start + length].decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _bad("header is not JSON") from None
    if not isinstance(header, dict):
        raise _bad("header is not an object")
    version = header.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and 1 <= version < MIN_READ_VERSION:
        raise StaleFingerprintError(stale_message(f"a fingerprint of format version {version}"))
    if (
        not isinstance(version, int)
        or isinstance(version, bool)
        or not MIN_READ_VERSION <= version <= FINGERPRINT_VERSION
    ):
        raise _bad(f"unsupported fingerprint version {sanitize(repr(version))}")
    if version >= ROW_SAMPLING_VERSION:
        row_sample = _count(header, "row_sample") or 0
    elif "row_sample" in header:
        raise _bad(f"a row sample in a fingerprint of format version {version}")
    else:
        row_sample = 0
    payload = data[start + length :]
    if len(payload) != _count(header, "payload_bytes"):
        raise _bad(f"payload holds {len(payload)} bytes, the header says {header.get('payload_bytes')}")
    if hashlib.sha256(payload).hexdigest() != _typed(header, "payload_sha256", str):
        raise _bad("payload checksum mismatch (corrupt or truncated)")
    layout = _typed(header, "arrays", dict)
    if set(layout) != set(_ARRAY_DTYPES):
        raise _bad("unexpected array table")
    arrays: dict[str, np.ndarray] = {}
    end = 0
    for key in _ARRAY_DTYPES:  # contiguous, in this order, tiling the payload exactly
        spec = layout[key]
        if not isinstance(spec, dict) or spec.get("dtype") != _ARRAY_DTYPES[key] or spec.get("offset") != end:
            raise _bad(f"array {key!r}: bad layout")
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise _bad(f"array {key!r}: bad shape")
        dtype = np.dtype(_ARRAY_DTYPES[key])
        nbytes = math.prod(shape) * dtype.itemsize
        if end + nbytes > len(payload):
            raise _bad(f"array {key!r} runs past the payload")
        arrays[key] = np.frombuffer(payload, dtype=dtype, count=math.prod(shape), offset=end).reshape(shape)
        end += nbytes
    if end != len(payload):
        raise _bad("trailing bytes after the arrays")

    numels = _typed(header, "tensor_numels", list)
    for numel in numels:
        checked_int(numel, where="fingerprint: a tensor size", error=CorruptCheckpointError)
    hashes = arrays["hashes"]
    if hashes.shape != (len(numels), 3, 32):
        raise _bad("hash table does not match the tensor count")
    r = _count(header, "sketch_dim") or 0
    units = _typed(header, "units", list)
    sketches = arrays["sketches"]
    if sketches.shape != (len(units), r * (r + 1) // 2) and not (len(units) == 0 and sketches.size == 0):
        raise _bad("sketch table does not match the units")
    if 0 < row_sample < r:  # a second moment in r dimensions needs at least r vectors
        raise _bad(f"row sample {row_sample} is smaller than the sketch dimension {r}")
    for unit in units:
        _check_unit(unit)
    anchors = arrays["anchors"]
    anchor_names = _typed(header, "anchor_names", list)
    hidden_header = _count(header, "hidden", optional=True) or 0
    width = hidden_header if hidden_header <= FULL_ANCHOR_MAX_HIDDEN else r
    if (
        anchors.ndim != 3
        or anchors.shape[0] != len(anchor_names)
        or (anchors.size and anchors.shape[2] != width)
    ):
        raise _bad("anchor table does not match its candidates")
    if not all(isinstance(n, str) for n in anchor_names):
        raise _bad("bad anchor names")
    stride = _count(header, "anchor_stride") or 0
    rows = _count(header, "anchor_rows") or 0
    if anchors.size and (stride < 1 or anchors.shape[1] != -(-rows // stride)):
        raise _bad("anchor ids do not match the embedding rows")
    scale = _typed(header, "anchor_scale", (int, float))
    if not math.isfinite(scale) or scale <= 0:
        raise _bad("bad anchor scale")
    anchor_tokens = arrays["anchor_tokens"]
    if (
        anchor_tokens.ndim != 2
        or anchor_tokens.shape[1] != TOKEN_HASH_BYTES
        or (anchor_tokens.shape[0] and (anchors.ndim != 3 or anchor_tokens.shape[0] != anchors.shape[1]))
    ):
        raise _bad("anchor token table does not match the anchors")
    gram_keys = _typed(header, "gram_keys", list)
    for key in gram_keys:
        if (
            not isinstance(key, list)
            or len(key) != 2
            or not isinstance(key[1], str)
            or key[1] not in LAYER_ROLES
        ):
            raise _bad("bad layer moment key")
        checked_int(
            key[0], where="fingerprint: a moment's layer", maximum=MAX_LAYER, error=CorruptCheckpointError
        )
    grams = arrays["grams"]
    hidden_value = _count(header, "hidden", optional=True) or 0
    if gram_keys and (
        hidden_value > LAYER_GRAM_MAX_HIDDEN
        or grams.shape != (len(gram_keys), hidden_value * (hidden_value + 1) // 2)
    ):
        raise _bad("layer moment table does not match the hidden size")
    if not gram_keys and grams.size:
        raise _bad("layer moments without keys")
    if not (np.isfinite(sketches).all() and np.isfinite(anchors).all() and np.isfinite(grams).all()):
        raise _bad("non-finite values")
    tokenizer = _typed(header, "tokenizer", dict, optional=True)
    if tokenizer is not None:
        sample = tokenizer.get("sample")
        if not isinstance(sample, dict):
            raise _bad("bad tokenizer sample")
        try:
            families.TokenizerFingerprint.from_dict(sample)
        except (ValueError, TypeError, KeyError) as error:
            raise _bad(f"bad tokenizer sample ({sanitize(str(error))})") from None
    config, dtypes = _typed(header, "config", dict), _typed(header, "dtypes", dict)
    _check_config(config)
    _check_dtypes(dtypes)
    header_hash_value = _typed(header, "header_hash", str)
    if len(header_hash_value) != 64 or any(c not in "0123456789abcdef" for c in header_hash_value):
        raise _bad("bad header hash")
    content: list[str] = []
    multiset: list[str] = []
    for row in hashes:
        content.extend((row[0].tobytes().hex(), row[1].tobytes().hex()))
        multiset.append(row[2].tobytes().hex())
    return Fingerprint(
        version=version,
        name=_typed(header, "name", str),
        source=_typed(header, "source", str),
        format=_typed(header, "format", str),
        family=_typed(header, "family", str, optional=True),
        signature=_typed(header, "signature", str),
        hidden=_count(header, "hidden", optional=True),
        layers=_count(header, "layers", optional=True),
        vocab_size=_count(header, "vocab_size", optional=True),
        parameters=_count(header, "parameters") or 0,
        tokenizer=tokenizer,
        content_hashes=content,
        header_hash=header_hash_value,
        config=config,
        dtypes=dtypes,
        multiset_hashes=multiset,
        tensor_numels=list(numels),
        sketch_dim=r,
        units=list(units),
        sketches=sketches.copy(),
        anchor_names=list(anchor_names),
        anchor_rows=rows,
        anchor_stride=max(stride, 1),
        anchors=anchors.copy(),
        anchor_scale=float(scale),
        total_bytes=_count(header, "total_bytes") or 0,
        anchor_tokens=anchor_tokens.copy(),
        gram_keys=[(int(layer), str(role)) for layer, role in gram_keys],
        grams=grams.copy(),
        row_sample=row_sample,
    )


def stale_message(what: str) -> str:
    """The one line for a fingerprint of an older format (`StaleFingerprintError`)."""
    return (
        f"{what} is no longer read: its sketches (64 dimensions, no token strings nor layer moments) "
        f"cannot reach compare's verdicts; re-fingerprint the checkpoint (version {FINGERPRINT_VERSION})"
    )


# --- computing one ---------------------------------------------------------------------------


def _tokenizer_entry(checkpoint: Checkpoint) -> dict[str, Any] | None:
    return _tokenizer_record(vocabulary_of(checkpoint))


def _tokenizer_record(vocabulary: Vocabulary | None) -> dict[str, Any] | None:
    if vocabulary is None:
        return None
    match = families.match_family(vocabulary)
    sample = families.fingerprint(
        vocabulary, family=match.family if match else "", name=match.name if match else ""
    )
    return {
        "family": match.family if match else None,
        "relation": match.relation if match else None,
        "sample": sample.to_dict(),
    }


def _anchors(model: CanonicalModel, hidden: int, basis: np.ndarray) -> tuple[list[str], int, int, np.ndarray]:
    """(candidate names, embedding rows, stride, anchors (candidates x n x w, float32)): every
    `anchor_stride`-th row, as `compare` reads them (at most max(`FINGERPRINT_ANCHOR_ROWS`, 2 H)),
    whole up to `FULL_ANCHOR_MAX_HIDDEN` dimensions, else projected on ``basis``; not centered."""
    names = _embedding_names(model, hidden)
    width = hidden if hidden <= FULL_ANCHOR_MAX_HIDDEN else basis.shape[1]
    if not names:
        return [], 0, 1, np.zeros((0, 0, width), dtype=np.float32)
    rows = min(model.checkpoint.info(n).shape[0] for n in names)
    stride = anchor_stride(
        rows, hidden, most=None if width == hidden else max(FINGERPRINT_ANCHOR_ROWS, 2 * hidden)
    )
    count = -(-rows // stride)
    anchors = []
    for name in names:
        matrix = read_rows(model, name, stride)[:count]
        anchors.append(matrix if width == hidden else matrix @ basis)
    return names, rows, stride, np.stack(anchors).astype(np.float32)


def _anchor_tokens(vocabulary: Vocabulary | None, rows: int, stride: int, count: int) -> np.ndarray:
    """`token_hash` of the token at each anchor id (0, stride, ...), where that id is the token's
    lowest ordinary id (as `compare.token_pairs` pairs rows); zeros elsewhere."""
    if vocabulary is None or count == 0:
        return np.zeros((0, TOKEN_HASH_BYTES), dtype=np.uint8)
    lowest = {index: key for key, index in _token_positions(vocabulary, rows).items()}
    out = np.zeros((count, TOKEN_HASH_BYTES), dtype=np.uint8)
    for k in range(count):
        key = lowest.get(k * stride)
        if key is not None:
            out[k] = np.frombuffer(key, dtype=np.uint8)
    return out


def _packed_grams(model: CanonicalModel, hidden: int) -> tuple[list[tuple[int, str]], np.ndarray]:
    """A's layer second moments at unit norm, as float16 upper triangles (none above
    `LAYER_GRAM_MAX_HIDDEN`): what the alignment read off the layer matrices needs of A."""
    if not hidden or hidden > LAYER_GRAM_MAX_HIDDEN:
        return [], np.zeros((0, 0), dtype=np.float16)
    grams = layer_grams(model, hidden, quick=False)
    if not grams:
        return [], np.zeros((0, 0), dtype=np.float16)
    upper = np.triu_indices(hidden)
    keys = sorted(grams)
    packed = np.stack([(grams[k] / max(float(np.linalg.norm(grams[k])), 1e-30))[upper] for k in keys]).astype(
        np.float16
    )
    return keys, packed


def fingerprint_checkpoint(
    opened: Model | Checkpoint, *, name: str | None = None, path: str = ""
) -> Fingerprint:
    """A's fingerprint, in one streaming pass over the weights (one tensor in memory at a time).
    Its hashes are the `Model`'s, so a search or an audit of the same model does not hash again."""
    analysed = Model.of(opened)
    checkpoint, result = analysed.checkpoint, analysed.inspection
    model = analysed.canonical
    config = dict(result.recognition.config)
    hidden = model.hidden
    source = path or str(checkpoint.path)
    display = name if name is not None else (Path(source).name or source)
    r = min(FINGERPRINT_DIM, hidden) if hidden else 0
    basis = projection(hidden, FINGERPRINT_DIM) if hidden else np.zeros((0, 0), dtype=np.float32)
    sample = row_sample_size(r)  # `compare`'s (`CheckpointEvidence.row_sample`)
    vocabulary = analysed.vocabulary
    if hidden:
        anchor_names, rows, stride, anchors = _anchors(model, hidden, basis)
    else:
        anchor_names, rows, stride, anchors = [], 0, 1, np.zeros((0, 0, 0), dtype=np.float32)
    tokens = _anchor_tokens(vocabulary, rows, stride, anchors.shape[1] if anchors.ndim == 3 else 0)
    gram_keys, grams = _packed_grams(model, hidden or 0)
    peak = float(np.max(np.abs(anchors))) if anchors.size else 0.0
    scale = peak / 32768.0 if peak > 0 else 1.0  # keep float16 far from overflow
    hash_names = set(hashable_names(checkpoint))
    roles = {a.name: a for a in result.recognition.assignments}

    def hash_job(tensor: str) -> TensorHashes | None:
        return analysed.tensor_hashes(tensor) if tensor in hash_names else None

    def sketch_job(tensor: str) -> list[Unit]:
        return tensor_units(model, tensor, roles, hidden, basis, sample=sample) if hidden else []

    # Each tensor's hashes (sha256 and a count, no BLAS) and its sketches (projections) are two
    # jobs on the budget's workers (one BLAS thread each), as `compare` reads a model: both cores
    # stay busy whichever job is longer, and a tensor's sketch follows its hash closely, so its
    # bytes are read from the disk once (RESULTS.md, sessions 10 and 12).
    with stage(f"fingerprinting {checkpoint.path.name}", checkpoint.total_bytes, BYTES) as shown:
        found, made = hashed_and_sketched(
            list(checkpoint.tensors),
            hash_job,
            sketch_job,
            done=lambda tensor: shown.advance(checkpoint.info(tensor).nbytes),
            name="unshell-fingerprint",
        )
    tensor_hashes = [h for h in found if h is not None]
    units = [u for each in made for u in each]
    upper = np.triu_indices(r)
    sketches = (
        np.stack([u.sketch.reshape(r, r)[upper] for u in units]).astype(np.float16)
        if units
        else np.zeros((0, r * (r + 1) // 2), dtype=np.float16)
    )
    layers = config.get("num_hidden_layers")
    vocab = config.get("vocab_size")
    return Fingerprint(
        version=FINGERPRINT_VERSION,
        name=display,
        source=sanitize(source, limit=4096),
        format=checkpoint.format,
        family=result.recognition.family,
        signature=signature_of(result.recognition.family, config),
        hidden=hidden,
        layers=int(layers) if layers else None,
        vocab_size=int(vocab) if vocab else None,
        parameters=result.parameters,
        tokenizer=_tokenizer_record(vocabulary),
        content_hashes=ContentHashes(tensor_hashes).digests,
        header_hash=header_hash(checkpoint),
        config=_json_safe(config),
        dtypes=result.dtypes,
        multiset_hashes=[t.counted_multiset for t in tensor_hashes],
        tensor_numels=[t.numel for t in tensor_hashes],
        sketch_dim=r,
        units=[
            {
                "name": u.name,
                "layer": u.layer,
                "role": u.role,
                "orientation": u.orientation,
                "std": _finite(u.std),
            }
            for u in units
        ],
        sketches=sketches,
        anchor_names=anchor_names,
        anchor_rows=rows,
        anchor_stride=stride,
        anchors=(anchors / scale).astype(np.float16),
        anchor_scale=scale,
        total_bytes=result.total_bytes,
        anchor_tokens=tokens,
        gram_keys=gram_keys,
        grams=grams,
        row_sample=sample,
    )


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, allow_nan=True).replace("NaN", "null"))


def fingerprint(
    path: str | os.PathLike[str], *, name: str | None = None, progress: ProgressReporter | None = None
) -> Fingerprint:
    """Fingerprint the checkpoint at ``path`` (any format `unshell inspect` reads). ``progress``:
    where to report the bytes read (`unshell.progress`)."""
    with reporting(progress), open_checkpoint(path) as checkpoint:
        return fingerprint_checkpoint(
            checkpoint, name=name if name is not None else Path(path).name, path=str(Path(path))
        )


# --- comparing against one -------------------------------------------------------------------


def fit_anchor_basis(rows_b: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """B's sketch basis from its anchor rows: the polar factor of the ridge least-squares map from
    B's centered rows (n x H_B) onto A's anchor projections (n x r), and the relative residual of
    the fit (with a free scale). Exact for a rotated, permuted or sign-flipped residual stream."""
    return AnchorGram(rows_b).fit(rows_b, [target])[0]


class AnchorGram:
    """B's side of `fit_anchor_basis` for one set of anchor rows: the ridge-regularized Gram of the
    centered rows (H_B x H_B, float64), the costliest part of the fit (n x H_B² products), which
    depends on B's rows alone. Made once, it serves every fit against those rows: each of A's
    embedding candidates, the fit with the rows paired at random (a permutation of the rows leaves
    the Gram and the mean as they are), and every candidate of a search (`AnchorGrams`).
    ``inverted``: the Gram's inverse is kept too, and every fit is a product with it instead of a
    solve (`AnchorGrams.invert`)."""

    def __init__(self, rows_b: np.ndarray, *, inverted: bool = False) -> None:
        x = _centered(rows_b)
        gram = finite(x.T @ x)
        del x
        self.ridge = RIDGE * max(float(np.trace(gram)) / gram.shape[0], 1e-30)
        gram[np.diag_indices_from(gram)] += self.ridge  # gram + ridge * I, without a second H² array
        self.regularized = gram
        self.inverse = finite(np.linalg.inv(gram)) if inverted else None

    def fit(
        self,
        rows_b: np.ndarray,
        targets: list[np.ndarray],
        *,
        paired: np.ndarray | None = None,
        centered: np.ndarray | None = None,
    ) -> list[tuple[np.ndarray, float]]:
        """`fit_anchor_basis(rows_b, target)` for each target, with one solve for all of them.
        ``rows_b``: the rows this Gram was made of, in any order. ``paired``: a permutation, B's row
        ``paired[k]`` fitted to row k of each target (the rows paired at random), where None pairs
        them as given; the targets' rows are put in B's order instead, which is the same sum.
        ``centered``: ``_centered(rows_b)``, when the caller fits the same rows again (a
        candidate's alignment, then its rows paired at random) and keeps it between the fits."""
        x = _centered(rows_b) if centered is None else centered
        ys = [np.asarray(t, dtype=np.float64) for t in targets]
        ys = [y - y.mean(axis=0, keepdims=True) for y in ys]
        if paired is not None:
            order = np.empty_like(paired)
            order[paired] = np.arange(paired.size)
            ys = [y[order] for y in ys]
        widths = [y.shape[1] for y in ys]
        cross = finite(x.T @ np.concatenate(ys, axis=1))
        del x
        if self.inverse is not None:
            solutions = finite(self.inverse @ cross)
        else:
            solutions = finite(np.linalg.solve(self.regularized, cross))
        fits = []
        start = 0
        for y, width in zip(ys, widths, strict=True):
            basis = polar_factor(solutions[:, start : start + width])
            # The fitted rows x @ basis in closed form, no n x H x r product: |x basis|² is
            # tr(basisᵀ xᵀx basis), the regularized Gram less the ridge, and
            # sum((x basis) * y) = sum(basis * xᵀy).
            fitted_norm = float(np.sum(basis * (self.regularized @ basis))) - self.ridge * float(
                np.sum(basis * basis)
            )
            dot = float(np.sum(basis * cross[:, start : start + width]))
            target_norm = float(np.sum(y * y))
            scale = dot / max(fitted_norm, 1e-30)
            residual_sq = scale * scale * fitted_norm - 2 * scale * dot + target_norm
            residual = math.sqrt(max(residual_sq, 0.0)) / max(math.sqrt(target_norm), 1e-30)
            fits.append((basis.astype(np.float32), residual))
            start += width
        return fits


def _centered(rows: np.ndarray) -> np.ndarray:
    """``rows`` as float64 less their mean, in one new array (centered in place: no second n x H copy)."""
    x = np.array(rows, dtype=np.float64)
    x -= x.mean(axis=0, keepdims=True)
    return x


# A search compares one suspect with many candidates, each fitted twice against the same Gram
# (its alignment, and the rows paired at random when that alignment is poor). Inverting the Gram
# costs about three solves (4.4 s against 1.4 s at H 4096, one thread); each fit is then a product
# (0.18 s). A search of at least this many candidates inverts it (`AnchorGrams.invert`).
INVERT_FOR_CANDIDATES = 3


class AnchorGrams:
    """`AnchorGram`s by the content of their rows, shared by the comparisons of one suspect
    (`PreparedSuspect`): a search's candidates anchor on the same rows of B whenever their
    embeddings have the same rows and width, so B's Gram is made once per search, not once per
    candidate and embedding pairing. Safe to share between the search's threads. ``invert``: the
    Grams made keep their inverse (`INVERT_FOR_CANDIDATES`); a search sets it before it compares,
    so that every candidate is fitted the same way whatever the order."""

    KEEP = 2  # Grams kept (H² float64 each: 134 MB at H 4096, twice that inverted), the most recently used
    KEEP_PROJECTED = 8  # B's projected anchor rows kept (8 MB each at 8,000 rows), the most recently used
    # B's anchor rows kept (n x H float32: 134 MB at 8,192 rows of 4096), the most recently used
    KEEP_ROWS = 2

    def __init__(self, *, invert: bool = False) -> None:
        self._grams: OrderedDict[tuple[bytes, tuple[int, ...]], AnchorGram] = OrderedDict()
        self._projected: OrderedDict[tuple[tuple[bytes, tuple[int, ...]], tuple[int, ...]], np.ndarray] = (
            OrderedDict()
        )
        self._rows: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._keys: dict[tuple[Hashable, tuple[int, ...]], tuple[bytes, tuple[int, ...]]] = {}
        self._lock = threading.Lock()
        self.invert = invert

    @staticmethod
    def key(rows_b: np.ndarray) -> tuple[bytes, tuple[int, ...]]:
        """What identifies a set of rows: a digest of their bytes, their dtype and shape."""
        rows = np.ascontiguousarray(rows_b)
        return (hashlib.blake2b(rows.data, digest_size=16).digest() + rows.dtype.str.encode(), rows.shape)

    def rows(self, recipe: Hashable, read: Callable[[], np.ndarray]) -> np.ndarray:
        """B's anchor rows that ``recipe`` names (a tensor of B and the rows taken of it: one recipe
        reads the same rows, since these Grams serve one suspect), as ``read()`` gives them, read
        and decoded once for every candidate of a search that anchors on them (0.4 s each at H
        4096, RESULTS.md, session 11). Read-only: a fit copies what it changes."""
        return self._kept(self._rows, recipe, lambda: np.ascontiguousarray(read()), self.KEEP_ROWS)

    def _kept(
        self, cache: OrderedDict[Any, np.ndarray], key: Any, make: Callable[[], np.ndarray], keep: int
    ) -> np.ndarray:
        """``cache[key]``, or ``make()`` made read-only and kept there among the ``keep`` most
        recently used. ``make`` runs outside the lock: two threads asking for a new key at once
        may both make it (the same value), and the first kept is the one both get."""
        with self._lock:
            found = cache.get(key)
            if found is not None:
                cache.move_to_end(key)
                return found
        made = make()
        made.setflags(write=False)
        with self._lock:
            found = cache.setdefault(key, made)
            cache.move_to_end(key)
            while len(cache) > keep:
                cache.popitem(last=False)
        return found

    def rows_key(self, recipe: Hashable, rows: np.ndarray) -> tuple[bytes, tuple[int, ...]]:
        """The `key` of ``rows``, the first rows of what `rows` gave for ``recipe`` (a candidate
        takes as many as both sides have): their count names them, so they are keyed once
        (0.14 s at 8,192 rows of 4096)."""
        with self._lock:
            found = self._keys.get((recipe, rows.shape))
        if found is None:
            found = self.key(rows)
            with self._lock:
                self._keys[(recipe, rows.shape)] = found
        return found

    def of(self, rows_b: np.ndarray, key: tuple[bytes, tuple[int, ...]] | None = None) -> AnchorGram:
        """The Gram of ``rows_b`` (``key``: their `key`, when the caller has it)."""
        key = self.key(rows_b) if key is None else key
        with self._lock:  # one Gram per rows; a thread that needs the same one waits for it
            gram = self._grams.get(key)
            if gram is None:
                gram = self._grams[key] = AnchorGram(np.ascontiguousarray(rows_b), inverted=self.invert)
                while len(self._grams) > self.KEEP:
                    self._grams.popitem(last=False)
            self._grams.move_to_end(key)
            return gram

    def projected(
        self, rows_b: np.ndarray, basis: np.ndarray, key: tuple[bytes, tuple[int, ...]] | None = None
    ) -> np.ndarray:
        """``rows_b`` centered, on ``basis`` (n x r float32, read-only): what keeping the identity is
        judged on, the same for every candidate of one width. ``basis`` is the stored basis
        (`sketch.projection`), which its shape determines: the shape keys it."""
        key = self.key(rows_b) if key is None else key

        def make() -> np.ndarray:
            x = np.asarray(rows_b, dtype=np.float32)
            return (x - x.mean(axis=0, keepdims=True)) @ basis

        return self._kept(self._projected, (key, basis.shape), make, self.KEEP_PROJECTED)


def _embedding_names(model: CanonicalModel, hidden: int) -> list[str]:
    return [
        n
        for n in embedding_candidates(model)
        if len(shape := model.checkpoint.info(n).shape) == 2 and shape[1] == hidden
    ]


def _token_positions(vocabulary: Vocabulary, rows: int) -> dict[bytes, int]:
    """Each ordinary token's `token_hash`, at its lowest id below ``rows`` (as `token_pairs` pairs them)."""
    where: dict[bytes, int] = {}
    for index in range(min(len(vocabulary.tokens), rows) - 1, -1, -1):
        token = vocabulary.tokens[index]
        if token is not None and index not in vocabulary.special:
            where[token_hash(token)] = index
    return where


@dataclass
class FingerprintEvidence:
    """A fingerprint as `BaseEvidence`: what `weigh_lineage` reads of A, from what it recorded.

    Its sketches, anchors and layer moments are the ones `compare` computes from A's checkpoint
    (sketches in ``min(H, 256)`` dimensions, all in float16), so the test is `compare`'s own; above
    `FULL_ANCHOR_MAX_HIDDEN` the anchor rows are
    projections and the alignment a least-squares fit to them (`fit_anchor_basis`), and above
    `LAYER_GRAM_MAX_HIDDEN` no layer-matrix alignment is tried."""

    base: Fingerprint
    anchor_grams: AnchorGrams = field(default_factory=AnchorGrams)  # B's, shared across a search
    # `anchor_alignment` by (model, vocabulary): a search's screen and its full test fit it once.
    _anchored: dict[tuple[int, int], Alignment | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def summary(self) -> ModelSummary:
        return self.base.summary()

    @property
    def hidden(self) -> int | None:
        return self.base.hidden if self.base.units else None

    def basis(self) -> np.ndarray:
        return projection(self.base.hidden or 0, FINGERPRINT_DIM)

    def units(self) -> list[Unit]:
        return self.base.unit_list()

    def row_sample(self) -> int:
        return self.base.row_sample

    def _in_sketch_space(self, transform: np.ndarray) -> bool:
        """An alignment fitted to projected anchors maps B straight into A's sketch space."""
        hidden = self.base.hidden or 0
        return self.base.sketch_dim < hidden and transform.shape[1] == self.base.sketch_dim

    def _identity_kept(self, projected_a: np.ndarray, projected_b: np.ndarray) -> Alignment | None:
        """The stored basis as B's, unfitted, when B's centered anchor rows projected on it
        (``projected_b``) already agree with A's recorded projections (`sketch.IDENTITY_KEPT_RESIDUAL`,
        the rule `compare`'s own alignment follows); None when they do not. Spares the search a
        Gram of B's rows and a solve at H x H per candidate, and every candidate of one basis
        shares B's sketches."""
        y = np.asarray(projected_a, dtype=np.float32)
        residual = untransformed_residual(y - y.mean(axis=0, keepdims=True), projected_b)
        if not residual <= IDENTITY_KEPT_RESIDUAL:
            return None
        rows = projected_b.shape[0]
        return Alignment(
            self.basis(), residual, rows, "procrustes-embeddings", untransformed=residual, fitted=False
        )

    def suspect_basis(self, alignment: Alignment) -> np.ndarray:
        if self._in_sketch_space(alignment.transform):
            return alignment.transform
        return alignment.transform @ self.basis()

    def layer_grams(self) -> dict[tuple[int, str], np.ndarray] | None:
        return self.base.layer_grams()

    def derivation_kinds(
        self,
        summary_b: ModelSummary,
        layers: list[dict[str, Any]],
        alignment: Alignment,
        model_b: CanonicalModel,
    ) -> list[str]:
        # `compare --quick`'s `how`: A's raw rows are not at hand.
        how = derivation_kinds(self.summary, summary_b, layers, alignment, None, model_b, quick=True)
        hidden = self.base.hidden or 0
        if self._in_sketch_space(alignment.transform) and alignment.transform.shape[0] == hidden:
            reference = self.basis()
            off_basis = float(np.linalg.norm(alignment.transform - reference)) / math.sqrt(reference.shape[1])
            if off_basis > OBFUSCATED_OFF_BASIS and "obfuscated" not in how:
                how.append("obfuscated")
        return how

    def anchor_alignment(self, model_b: CanonicalModel, vocabulary_b: Vocabulary | None) -> Alignment | None:
        """`compare`'s embedding alignment (`_best_alignment`) on the recorded anchor rows: rows of
        the same token string when both sides know their tokens and some moved, else of the same id.
        Fitted once per model and vocabulary (both stay open while this evidence is used)."""
        key = (id(model_b), id(vocabulary_b))
        if key not in self._anchored:
            self._anchored[key] = self._fit_anchor_alignment(model_b, vocabulary_b)
        return self._anchored[key]

    def _fit_anchor_alignment(
        self, model_b: CanonicalModel, vocabulary_b: Vocabulary | None
    ) -> Alignment | None:
        base = self.base
        hidden_a, hidden_b = base.hidden or 0, model_b.hidden or 0
        names_b = _embedding_names(model_b, hidden_b)
        if not base.anchor_names or not names_b or not base.anchors.size:
            return None
        hidden = max(hidden_a, hidden_b)
        rows_b = model_b.checkpoint.info(names_b[0]).shape[0]
        stride = base.anchor_stride
        by_strings = False
        if vocabulary_b is not None and base.anchor_tokens.size:
            positions = _token_positions(vocabulary_b, rows_b)
            pairs = sorted(
                (positions[key], k)
                for k, row in enumerate(base.anchor_tokens)
                if (key := row.tobytes()) != _NO_TOKEN and key in positions
            )
            moved = sum(1 for id_b, k in pairs if id_b != k * stride)
            if moved > 0 and len(pairs) >= MIN_ANCHORS_PER_DIMENSION * hidden:
                step = anchor_stride(len(pairs), hidden)
                chosen = pairs[::step]
                rows_a_index = np.array([k for _, k in chosen], dtype=np.int64)
                ids_b = np.array([i for i, _ in chosen], dtype=np.int64)
                candidates_a = [
                    base.anchor_projection(i)[rows_a_index] for i in range(len(base.anchor_names))
                ]
                ids_digest = hashlib.blake2b(ids_b.tobytes(), digest_size=16).digest()
                recipes: list[Hashable] = [("ids", n, ids_digest) for n in names_b]
                candidates_b = [
                    self.anchor_grams.rows(recipe, functools.partial(read_row_ids, model_b, n, ids_b))
                    for n, recipe in zip(names_b, recipes, strict=True)
                ]
                by_strings = True
        if not by_strings:
            count = min(base.anchors.shape[1], -(-rows_b // stride))
            candidates_a = [base.anchor_projection(i)[:count] for i in range(len(base.anchor_names))]
            recipes = [("every", n, stride) for n in names_b]
            candidates_b = [
                self.anchor_grams.rows(recipe, functools.partial(read_rows, model_b, n, stride))[:count]
                for n, recipe in zip(names_b, recipes, strict=True)
            ]
        rows = min(c.shape[0] for c in candidates_a + candidates_b)
        if rows < 2:
            return None
        candidates_a = [c[:rows] for c in candidates_a]
        candidates_b = [c[:rows] for c in candidates_b]

        solved: dict[int, list[tuple[np.ndarray, float]]] = {}
        # B's last-fitted candidate centered (n x H float64, 268 MB at 8,192 rows of 4096), kept
        # for the fit with its rows paired at random, which follows when the alignment is poor.
        centered: dict[int, np.ndarray] = {}

        def rows_key(j: int) -> tuple[bytes, tuple[int, ...]]:
            return self.anchor_grams.rows_key(recipes[j], candidates_b[j])

        def fit(i: int, j: int, chance: bool = False) -> Alignment:
            if base.anchors.shape[2] == hidden_a:  # the anchors are A's rows themselves
                return align_embeddings(candidates_a[i].copy(), candidates_b[j].copy(), chance=chance)
            if not chance and hidden_a == hidden_b:
                projected = self.anchor_grams.projected(candidates_b[j], self.basis(), rows_key(j))
                kept = self._identity_kept(candidates_a[i], projected)
                if kept is not None:
                    return kept
            gram = self.anchor_grams.of(candidates_b[j], rows_key(j))
            if j not in centered:
                centered.clear()
                centered[j] = _centered(candidates_b[j])
            if j not in solved:  # every pairing with B's candidate j is fitted: all of A's at once
                solved[j] = gram.fit(candidates_b[j], candidates_a, centered=centered[j])
            transform, residual = solved[j][i]
            shuffled = float("nan")
            if chance:
                order = np.random.default_rng(CHANCE_SEED).permutation(rows)
                ((_, shuffled),) = gram.fit(
                    candidates_b[j], [candidates_a[i]], paired=order, centered=centered[j]
                )
            return Alignment(transform, residual, rows, "procrustes-embeddings", chance=shuffled)

        alignment = choose_anchor(len(candidates_a), len(candidates_b), fit)
        return replace(alignment, anchored_by="token strings" if by_strings else "token ids")


_RELATION_PHRASE = {
    "identical": "identical to A's",
    "extension": "an extension of A's",
    "shifted-extension": "a shifted extension of A's",
    "subset": "a subset of A's",
}


def _tokenizer_note(base: Fingerprint, ids: np.ndarray, hashes: np.ndarray, size: int) -> str | None:
    if base.tokenizer is None:
        return None
    sample = families.TokenizerFingerprint.from_dict(base.tokenizer["sample"])
    sampled = min(len(sample.ids), len(ids))
    if sampled < families.MIN_SAMPLES:
        return (
            f"tokenizer (on A's sample, 1 token in 32): not related, {sampled} tokens sampled "
            f"(fewer than {families.MIN_SAMPLES}: the vocabulary is too small for a sample to tell)"
        )
    match = families._relation_to(sample, ids, hashes, size)
    if match is None:
        return "tokenizer (on A's sample, 1 token in 32): no id-preserving relation to A's vocabulary"
    return (
        f"tokenizer (on A's sample, 1 token in 32): B's vocabulary is {_RELATION_PHRASE.get(match.relation, match.relation)} "
        f"({match.kept} of {match.sampled} sampled tokens kept"
        + (f", at offset {match.offset})" if match.offset else ")")
    )


@dataclass
class PreparedSuspect:
    """B's side of fingerprint comparisons, computed once for many bases (`unshell search`):
    the recognition, the canonical roles, the vocabulary and the content hashes (the one full
    hashing pass). Alignment and sketches depend on each base's anchors, so they are not here.
    The checkpoint must stay open while the prepared suspect is used."""

    checkpoint: Checkpoint
    path: str
    inspect: InspectResult
    model: CanonicalModel
    hashes: ContentHashes
    vocabulary: Vocabulary | None
    vocabulary_sample: tuple[np.ndarray, np.ndarray, int] | None
    tokenizer: dict[str, Any] | None
    anchor_grams: AnchorGrams = field(default_factory=AnchorGrams)
    # What `prepare` fitted for a batch of bases, by the base's id (with the base, so that a new
    # object at a freed one's address is not taken for it), each taken by its comparison once.
    _prepared: dict[int, tuple[Fingerprint, FingerprintEvidence]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _prepared_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    @property
    def summary(self) -> ModelSummary:
        return ModelSummary.of(self.inspect, self.path)

    def expect(self, comparisons: int) -> None:
        """Say, before the first, how many fingerprints this suspect will be compared with (a
        search's candidates): from `INVERT_FOR_CANDIDATES` on, B's anchor Grams keep their inverse,
        so that each candidate's fits are products instead of solves. Set once, before any Gram
        is made, every candidate is fitted the same way whatever their order."""
        self.anchor_grams.invert = comparisons >= INVERT_FOR_CANDIDATES

    def prepare(self, bases: list[Fingerprint]) -> bool:
        """Before the screens against ``bases`` (a batch of a search's candidates, compared next
        with ``screen=True``): fit each base's anchor alignment, then sketch B's screened matrices
        under all of their bases in one pass (`compare.units_ahead`). Each comparison then finds its
        alignment and its sketches made, the same as it would have made them; B's screened
        matrices are read, decoded and sampled once per batch instead of once per candidate. The
        batch's sketches are held until the next batch (`CanonicalModel.hold`). Does nothing for a
        suspect too shallow to screen, or a batch of one. Returns whether it prepared the batch."""
        screened = screening_layers(self.model.layers)
        hidden_b = self.model.hidden
        with self._prepared_lock:
            self._prepared = {}
        self.model.hold({})  # the last batch's sketches
        if screened is None or not hidden_b or len(bases) < 2:
            return False
        prepared: dict[int, tuple[Fingerprint, FingerprintEvidence]] = {}
        by_sample: dict[int, list[np.ndarray]] = {}
        for base in bases:  # one at a time, on every BLAS thread: the fits share B's anchor Gram
            evidence = FingerprintEvidence(base, self.anchor_grams)
            prepared[id(base)] = (base, evidence)
            if not evidence.hidden:
                continue
            anchored = evidence.anchor_alignment(self.model, self.vocabulary)
            for alignment in alignment_plan(anchored, evidence.hidden, hidden_b):  # as `weigh_lineage`
                if alignment.method != "layer-matrices":  # sketched by its own pass, when it is fitted
                    by_sample.setdefault(evidence.row_sample(), []).append(evidence.suspect_basis(alignment))
        with self._prepared_lock:
            self._prepared = prepared
        held: dict[Hashable, Any] = {}
        for sample, suspect_bases in by_sample.items():
            held.update(units_ahead(self.model, hidden_b, suspect_bases, sample=sample, layers=screened))
        self.model.hold(held)
        return True

    def evidence(self, base: Fingerprint) -> FingerprintEvidence:
        """``base`` as `BaseEvidence` against this suspect: what `prepare` fitted for it, once, or new."""
        with self._prepared_lock:
            found = self._prepared.pop(id(base), None)
        if found is not None and found[0] is base:
            return found[1]
        return FingerprintEvidence(base, self.anchor_grams)

    @property
    def signals(self) -> Fingerprint:
        """What the library's cheap stage reads: a fingerprint without the weight evidence."""
        config = self.inspect.recognition.config
        layers, vocab = config.get("num_hidden_layers"), config.get("vocab_size")
        return Fingerprint(
            name=Path(self.path).name or self.path,
            family=self.inspect.recognition.family,
            signature=signature_of(self.inspect.recognition.family, dict(config)),
            hidden=self.model.hidden,
            layers=int(layers) if layers else None,
            vocab_size=int(vocab) if vocab else None,
            parameters=self.inspect.parameters,
            tokenizer=self.tokenizer,
            format=self.checkpoint.format,
            source=sanitize(self.path, limit=4096),
            version=FINGERPRINT_VERSION,
            content_hashes=self.hashes.digests,
            header_hash=header_hash(self.checkpoint),
        )


def prepare_suspect(source: Model | Checkpoint, path: str = "") -> PreparedSuspect:
    """Read what every comparison of the model against a fingerprint needs, once (its `Model`'s
    facts: a model fingerprinted first is not hashed again)."""
    suspect = Model.of(source)
    checkpoint = suspect.checkpoint
    inspect_b = suspect.inspection
    model_b = suspect.canonical
    vocabulary = suspect.vocabulary
    sample = None
    if vocabulary is not None:
        ids, sample_hashes = families._sample(vocabulary)
        sample = (ids, sample_hashes, len(vocabulary.tokens))
    return PreparedSuspect(
        checkpoint=checkpoint,
        path=path or str(checkpoint.path),
        inspect=inspect_b,
        model=model_b,
        hashes=suspect.content_hashes(hashable_names(checkpoint)),
        vocabulary=vocabulary,
        vocabulary_sample=sample,
        tokenizer=_tokenizer_record(vocabulary),
    )


def compare_with_fingerprint(
    base: Fingerprint,
    suspect: Checkpoint | str | os.PathLike[str] | Fingerprint | PreparedSuspect,
    *,
    screen: bool = False,
) -> CompareResult:
    """`compare`'s test of H0 "B was trained independently of A", with A given as a fingerprint.

    Against a checkpoint, the verdict comes from `compare`'s own weighing (`weigh_lineage`) on
    what the fingerprint recorded; the fields it cannot fill (A's tokenizer relation, the finer
    `how`) stay None or coarse, and the notes say it was a fingerprint comparison. What
    Fingerprint-vs-Fingerprint can and cannot detect: see the module docstring. Comparing one
    suspect with many bases: pass a `prepare_suspect` result, so that B is recognized and hashed once.
    ``screen`` (a search's candidates): weigh B's `compare.screening_layers` first and stop there
    when they show no match (`_screen_says_nothing`; a note says so); B's other layers are weighed
    only otherwise.
    """
    if isinstance(suspect, Fingerprint):
        return _compare_fingerprints(base, suspect)
    if isinstance(suspect, PreparedSuspect):
        return _compare_checkpoint(base, suspect, screen=screen)
    if isinstance(suspect, Checkpoint):
        return _compare_checkpoint(base, prepare_suspect(suspect), screen=screen)
    with open_checkpoint(suspect) as checkpoint:
        return _compare_checkpoint(base, prepare_suspect(checkpoint, str(Path(suspect))), screen=screen)


def _result(
    base: Fingerprint,
    summary_b: ModelSummary,
    path_b: str,
    hashes: Any,
    notes: list[str],
    verdict: str,
    reason: str,
    **fields: Any,
) -> CompareResult:
    """A comparison's result with A given as a fingerprint: no tokenizer relation (A's vocabulary
    is only sampled) and, unless the caller says otherwise, no weight evidence."""
    evidence: dict[str, Any] = {
        "how": [],
        "p_value": None,
        "score": None,
        "layers": [],
        "alignment": None,
        "profile_correlation": None,
    }
    return CompareResult(
        path_a=base.source,
        path_b=path_b,
        summary_a=base.summary(),
        summary_b=summary_b,
        verdict=verdict,
        reason=reason,
        hashes=hashes,
        notes=notes,
        **{**evidence, **fields},
    )


def _identical(base: Fingerprint, hashes_b: ContentHashes) -> tuple[Any, tuple[str, list[str]] | None]:
    hashes_a = base.hashes()
    if not hashes_a.tensors or not hashes_b.tensors:
        return None, None
    forward, reverse = match_hashes(hashes_a, hashes_b), match_hashes(hashes_b, hashes_a)
    return forward, identical_by_hashes(forward, reverse)


def _compare_checkpoint(
    base: Fingerprint, suspect: PreparedSuspect, *, screen: bool = False
) -> CompareResult:
    summary_b, path_b = suspect.summary, suspect.path
    notes = [f"fingerprint comparison: A is the fingerprint of {base.name!r}; B's weights were read in full"]
    if suspect.vocabulary_sample is not None:
        note = _tokenizer_note(base, *suspect.vocabulary_sample)
        if note:
            notes.append(note)
    hashes, same = _identical(base, suspect.hashes)
    if same is not None:
        return _result(base, summary_b, path_b, hashes, notes, "identical", same[0], how=same[1], score=1.0)
    hashes_a = base.hashes()
    twins = exact_twin_match(hashes_a if hashes_a.tensors else None, suspect.hashes, suspect.model)
    evidence = suspect.evidence(base)
    screened = screening_layers(suspect.model.layers) if screen else None
    if screened is not None:
        lineage = weigh_lineage(
            evidence, suspect.model, summary_b, suspect.vocabulary, twins=twins, layers=screened
        )
        if _screen_says_nothing(lineage, twins):
            shown = ", ".join(str(n) for n in sorted(screened))
            screen_text = f"screened on {len(screened)} of B's {len(suspect.model.layers)} layers ({shown})"
            notes.append(
                f"{screen_text}: no sign of derivation there, so the other layers were not weighed "
                "(`unshell compare` weighs them all)"
            )
            fields = lineage.fields()
            fields["reason"] = f"{lineage.reason} ({screen_text}; the others were not weighed)"
            return _result(base, summary_b, path_b, hashes, notes, twins=twins, **fields)
    lineage = weigh_lineage(evidence, suspect.model, summary_b, suspect.vocabulary, twins=twins)
    return _result(base, summary_b, path_b, hashes, notes, twins=twins, **lineage.fields())


def _screen_says_nothing(lineage: Lineage, twins: TwinMatch | None) -> bool:
    """Whether a search may stop at a candidate's screen: enough of B's matrices were weighed
    (`MIN_UNITS`), none matched A's beyond `INDEPENDENT_P` under any alignment tried, and no tensor
    of B is an exact twin of one of A's. The verdict is then the screen's (`independent`, or
    `inconclusive` where the embedding alignment failed), never `derived`."""
    return (
        lineage.verdict in ("independent", "inconclusive")
        and lineage.p_value is not None
        and lineage.p_value >= INDEPENDENT_P
        and len(lineage.matches) >= MIN_UNITS
        and (twins is None or twins.tensors == 0)
    )


def _relative_residual(fitted: np.ndarray, target: np.ndarray) -> float:
    """|scale * fitted - target| / |target| at the best free scale (shapes compared, not scales)."""
    scale = float(np.sum(fitted * target)) / max(float(np.sum(fitted * fitted)), 1e-30)
    return float(np.linalg.norm(scale * fitted - target)) / max(float(np.linalg.norm(target)), 1e-30)


def _compare_fingerprints(base: Fingerprint, suspect: Fingerprint) -> CompareResult:
    """Both sides compressed (weaker: see the module docstring)."""
    summary_b = suspect.summary()
    notes = [
        f"fingerprint comparison: A is the fingerprint of {base.name!r}, B the fingerprint of {suspect.name!r}; "
        "fingerprint against fingerprint cannot see through a rotated residual stream or a change of hidden size"
    ]
    if suspect.tokenizer is not None:
        sample = families.TokenizerFingerprint.from_dict(suspect.tokenizer["sample"])
        note = _tokenizer_note(base, sample.ids, sample.hashes, sample.size)
        if note:
            notes.append(note)
    hashes, same = _identical(base, suspect.hashes())
    if same is not None:
        return _result(
            base, summary_b, suspect.source, hashes, notes, "identical", same[0], how=same[1], score=1.0
        )
    if (
        not base.hidden
        or base.hidden != suspect.hidden
        or base.sketch_dim != suspect.sketch_dim
        or not base.units
    ):
        return _result(
            base,
            summary_b,
            suspect.source,
            hashes,
            notes,
            "inconclusive",
            "fingerprints of different hidden sizes (or without sketches) cannot be compared; compare against the checkpoint",
        )
    # Both bases are the same seeded projection; an r x r Procrustes fit on shared anchor ids
    # corrects what moved inside it.
    r = base.sketch_dim
    rotation = np.eye(r, dtype=np.float32)
    alignment = Alignment(rotation, float("nan"), 0, "identity")
    step = math.lcm(base.anchor_stride, suspect.anchor_stride)
    rows = min(base.anchor_rows, suspect.anchor_rows)
    if base.anchor_names and suspect.anchor_names and rows > step * 2 * r:
        ids = np.arange(0, rows, step)
        pa = base.anchor_projection(0)[ids // base.anchor_stride].astype(np.float64)
        pb = suspect.anchor_projection(0)[ids // suspect.anchor_stride].astype(np.float64)
        if pa.shape[1] != r:  # whole rows: into the (shared) sketch basis
            basis = projection(base.hidden, FINGERPRINT_DIM).astype(np.float64)
            pa, pb = pa @ basis, pb @ basis
        pa -= pa.mean(axis=0)
        pb -= pb.mean(axis=0)
        rotation = polar_factor(pb.T @ pa).astype(np.float32)
        fitted = pb @ rotation
        residual = _relative_residual(fitted, pa)
        alignment = Alignment(
            rotation,
            residual,
            len(ids),
            "procrustes-fingerprint-anchors",
            untransformed=_relative_residual(pb, pa),  # `compare`'s test of a transformed stream
        )
    else:
        notes.append("no shared anchor rows: B's sketches compared in the stored basis")
    if base.row_sample != suspect.row_sample:
        notes.append(
            f"the two fingerprints sampled their matrices' vectors differently (at most {base.row_sample or 'all'} "
            f"against {suspect.row_sample or 'all'}): still a valid test, but a derivative matches less closely; "
            "re-fingerprint the older one"
        )
    units_b = []
    for unit in suspect.unit_list():
        sketch = unit.sketch.reshape(r, r)
        rotated = rotation.T @ sketch @ rotation
        norm = float(np.linalg.norm(rotated))
        unit.sketch = (rotated / norm if norm > 0 else rotated).ravel().astype(np.float32)
        units_b.append(unit)
    units_a = base.unit_list()
    if len(units_a) < 2 or len(units_b) < 1:
        return _result(
            base,
            summary_b,
            suspect.source,
            hashes,
            notes,
            "inconclusive",
            "no comparable weight matrices",
            alignment=alignment,
        )
    weighed = weigh_units(units_a, units_b, r)
    how: list[str] = []
    if weighed.verdict == "derived":
        how = derivation_kinds(base.summary(), summary_b, weighed.layers, None, None, None, quick=True)
    return _result(
        base,
        summary_b,
        suspect.source,
        hashes,
        notes,
        weighed.verdict,
        weighed.reason,
        how=how,
        p_value=weighed.p_value,
        score=weighed.score,
        layers=weighed.layers,
        alignment=alignment,
        profile_correlation=weighed.profile_correlation,
        matches=weighed.matches,
        layer_similarity=weighed.layer_similarity,
        std_profiles=weighed.std_profiles,
    )
