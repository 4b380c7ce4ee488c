"""llama2.c exports: the legacy v0 ``.bin`` and the versioned v1 (fp32) / v2 (int8) files.

v0 is a 7 x int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a
negative vocab_size means the classifier is stored, not tied) followed by fp32 tensors in run.c's
order, RoPE tables included. It has no magic number, so a file is v0 only when its header is
plausible and its size is exactly what the header implies.

v1/v2 (llama2.c's export.py) start with magic ``ak42``, an int32 version, the same 7 ints (vocab
always positive), a uint8 shared-classifier flag, for v2 an int32 group size, zero padding to
256 bytes. v1 stores fp32 tensors; v2 stores the norms in fp32, then each weight as int8 values
followed by one fp32 scale per group of ``group_size`` consecutive values.

Tensor names are those of llama2.c's model.py (Meta style).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    CorruptCheckpointError,
    InconsistentHeaderError,
    NotACheckpointError,
    ResourceLimitError,
    UnsupportedFormatError,
)
from .base import Checkpoint, TensorInfo, register_decoder, sanitize
from .facts import (
    TOKEN_BYTE,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNKNOWN,
    EmbeddedTokenizer,
    FormatFacts,
    ForwardHeader,
    llama_style_config,
    meta_forward_header,
)
from .safetensors import open_regular_file

__all__ = [
    "MAGIC",
    "Llama2cHeader",
    "embedded_tokenizer",
    "looks_like_llama2c_v0",
    "read_llama2c",
    "read_llama2c_tokenizer",
]

MAGIC = 0x616B3432  # "ak42" as a little-endian uint32
V0_HEADER_BYTES = 28
VERSIONED_HEADER_BYTES = 256
GROUPED_INT8 = "Q8_LLAMA2C"

MAX_DIM = 65_536
MAX_HIDDEN_DIM = 1 << 20
MAX_LAYERS = 1024
MAX_VOCAB = 10_000_000
MAX_SEQ_LEN = 1 << 22


@dataclass(frozen=True)
class Llama2cHeader:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool
    version: int
    group_size: int = 0

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.head_size * self.n_kv_heads

    @property
    def header_bytes(self) -> int:
        return V0_HEADER_BYTES if self.version == 0 else VERSIONED_HEADER_BYTES

    def as_metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "dim": self.dim,
            "hidden_dim": self.hidden_dim,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "shared_classifier": self.shared_classifier,
            "version": self.version,
        }
        if self.version == 2:
            metadata["group_size"] = self.group_size
        return metadata


def _implausibility(values: tuple[int, ...]) -> str | None:
    """Why seven header ints cannot describe a llama2.c model (None if they can)."""
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len = values
    bounds = {
        "dim": (dim, MAX_DIM),
        "hidden_dim": (hidden_dim, MAX_HIDDEN_DIM),
        "n_layers": (n_layers, MAX_LAYERS),
        "n_heads": (n_heads, MAX_DIM),
        "n_kv_heads": (n_kv_heads, MAX_DIM),
        "vocab_size": (abs(vocab_size), MAX_VOCAB),
        "seq_len": (seq_len, MAX_SEQ_LEN),
    }
    for field_name, (value, limit) in bounds.items():
        if not 0 < value <= limit:
            return f"{field_name} {value} outside 1..{limit}"
    if dim % n_heads:
        return f"n_heads {n_heads} does not divide dim {dim}"
    if n_heads % n_kv_heads:
        return f"n_kv_heads {n_kv_heads} does not divide n_heads {n_heads}"
    return None


# -- tensor layout ------------------------------------------------------------------------------


def _layered(
    header: Llama2cHeader, template: str, shape: tuple[int, ...]
) -> list[tuple[str, tuple[int, ...]]]:
    return [(template.format(i=i), shape) for i in range(header.n_layers)]


def _weights(header: Llama2cHeader) -> list[tuple[str, tuple[int, ...]]]:
    """The matrices, in the order every version stores them (embedding first)."""
    h = header
    return [
        ("tok_embeddings.weight", (h.vocab_size, h.dim)),
        *_layered(h, "layers.{i}.attention.wq.weight", (h.dim, h.dim)),
        *_layered(h, "layers.{i}.attention.wk.weight", (h.kv_dim, h.dim)),
        *_layered(h, "layers.{i}.attention.wv.weight", (h.kv_dim, h.dim)),
        *_layered(h, "layers.{i}.attention.wo.weight", (h.dim, h.dim)),
        *_layered(h, "layers.{i}.feed_forward.w1.weight", (h.hidden_dim, h.dim)),
        *_layered(h, "layers.{i}.feed_forward.w2.weight", (h.dim, h.hidden_dim)),
        *_layered(h, "layers.{i}.feed_forward.w3.weight", (h.hidden_dim, h.dim)),
    ]


def _classifier(header: Llama2cHeader) -> list[tuple[str, tuple[int, ...]]]:
    return [] if header.shared_classifier else [("output.weight", (header.vocab_size, header.dim))]


def _norms(header: Llama2cHeader) -> list[tuple[str, tuple[int, ...]]]:
    """Versioned files store all norms first: attention norms, FFN norms, final norm."""
    h = header
    return [
        *_layered(h, "layers.{i}.attention_norm.weight", (h.dim,)),
        *_layered(h, "layers.{i}.ffn_norm.weight", (h.dim,)),
        ("norm.weight", (h.dim,)),
    ]


def _v0_order(header: Llama2cHeader) -> list[tuple[str, tuple[int, ...]]]:
    """run.c's legacy order: per kind across layers, norms interleaved with their blocks."""
    h = header
    weights = _weights(h)
    embedding, attention, feed_forward = (
        weights[:1],
        weights[1 : 1 + 4 * h.n_layers],
        weights[1 + 4 * h.n_layers :],
    )
    rope = (h.seq_len, h.head_size // 2)
    return [
        *embedding,
        *_layered(h, "layers.{i}.attention_norm.weight", (h.dim,)),
        *attention,
        *_layered(h, "layers.{i}.ffn_norm.weight", (h.dim,)),
        *feed_forward,
        ("norm.weight", (h.dim,)),
        ("freqs_cos", rope),
        ("freqs_sin", rope),
        *_classifier(h),
    ]


def _layout(header: Llama2cHeader, path: Path) -> list[TensorInfo]:
    """Every tensor's TensorInfo, at consecutive offsets after the header."""
    offset = header.header_bytes
    infos = []

    def add(name: str, shape: tuple[int, ...], dtype: str, nbytes: int, extra: dict[str, Any]) -> None:
        nonlocal offset
        infos.append(TensorInfo(name, dtype, shape, path, offset, nbytes, extra=extra))
        offset += nbytes

    if header.version == 0:
        for name, shape in _v0_order(header):
            buffer = {"buffer": True} if name.startswith("freqs_") else {}
            add(name, shape, "F32", 4 * math.prod(shape), buffer)
    elif header.version == 1:
        for name, shape in _norms(header) + _weights(header) + _classifier(header):
            add(name, shape, "F32", 4 * math.prod(shape), {})
    else:
        for name, shape in _norms(header):
            add(name, shape, "F32", 4 * math.prod(shape), {})
        for name, shape in _weights(header) + _classifier(header):
            count = math.prod(shape)
            if count % header.group_size:
                raise InconsistentHeaderError(
                    f"{sanitize(path.name)}: {name} has {count} values, not a multiple of group size {header.group_size}"
                )
            add(
                name,
                shape,
                GROUPED_INT8,
                count + 4 * (count // header.group_size),
                {"group_size": header.group_size},
            )
    return infos


def _expected_size(header: Llama2cHeader) -> int:
    return header.header_bytes + sum(info.nbytes for info in _layout(header, Path()))


# -- v2 values ----------------------------------------------------------------------------------


def _decode_grouped_int8(raw: np.ndarray, info: TensorInfo) -> np.ndarray:
    """int8 values times their group's fp32 scale, in float32 exactly as run.c dequantizes."""
    group_size = int(info.extra["group_size"])
    count = info.numel
    groups = count // group_size
    if raw.size != count + 4 * groups:
        raise InconsistentHeaderError(
            f"tensor {sanitize(info.name)!r}: {raw.size} bytes, expected {count + 4 * groups}"
        )
    values = raw[:count].view(np.int8).astype(np.float32)
    scales = raw[count:].view("<f4").astype(np.float32)
    # A damaged or hostile scale overflows float32 (to an infinity, or NaN times a zero value), as
    # run.c would compute it; every reader of the values treats non-finite ones (`sketch.finite`).
    with np.errstate(over="ignore", invalid="ignore"):
        return (values.reshape(groups, group_size) * scales[:, None]).reshape(info.shape)


register_decoder(GROUPED_INT8, _decode_grouped_int8)


# -- header parsing -----------------------------------------------------------------------------


def _parse_v0(head: bytes) -> Llama2cHeader | None:
    if len(head) < V0_HEADER_BYTES:
        return None
    values = struct.unpack("<7i", head[:V0_HEADER_BYTES])
    if _implausibility(values) is not None:
        return None
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len = values
    if (dim // n_heads) % 2:
        return None  # the RoPE tables need an even head size
    return Llama2cHeader(
        dim, hidden_dim, n_layers, n_heads, n_kv_heads, abs(vocab_size), seq_len, vocab_size > 0, 0
    )


def _parse_versioned(head: bytes, where: str) -> Llama2cHeader:
    if len(head) < VERSIONED_HEADER_BYTES:
        raise CorruptCheckpointError(f"{where}: {len(head)} bytes, too short for a llama2.c v1/v2 header")
    (version,) = struct.unpack_from("<i", head, 4)
    if version not in (1, 2):
        raise UnsupportedFormatError(f"{where}: llama2.c export version {version} (unshell reads 0, 1 and 2)")
    values = struct.unpack_from("<7i", head, 8)
    problem = _implausibility(values)
    if problem is not None or values[5] < 0:
        raise InconsistentHeaderError(
            f"{where}: implausible llama2.c header ({problem or 'negative vocab_size'})"
        )
    shared = head[36]
    if shared not in (0, 1):
        raise InconsistentHeaderError(f"{where}: shared-classifier flag is {shared}, not 0 or 1")
    group_size = 0
    padding_start = 37
    if version == 2:
        (group_size,) = struct.unpack_from("<i", head, 37)
        padding_start = 41
        if not 0 < group_size <= values[0] or values[0] % group_size:
            raise InconsistentHeaderError(f"{where}: group size {group_size} does not divide dim {values[0]}")
    if any(head[padding_start:VERSIONED_HEADER_BYTES]):
        raise InconsistentHeaderError(f"{where}: non-zero bytes in the header padding")
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len = values
    return Llama2cHeader(
        dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len, bool(shared), version, group_size
    )


def _read_header(path: Path) -> tuple[Llama2cHeader | None, int, str]:
    """(header or None when v0 is implausible, file size, the first bytes' kind)."""
    handle, size = open_regular_file(path)
    with handle:
        head = handle.read(VERSIONED_HEADER_BYTES)
    where = sanitize(path.name)
    if len(head) >= 4 and struct.unpack_from("<I", head)[0] == MAGIC:
        return _parse_versioned(head, where), size, "versioned"
    return _parse_v0(head), size, "v0"


def looks_like_llama2c_v0(path: Path) -> bool:
    """True when the file is a legacy llama2.c export: plausible header and exactly the size it implies.

    A file whose vocab_size sign says "tied" but whose size fits an untied classifier (or the reverse)
    is accepted too; `read_llama2c` trusts the size and records a note.
    """
    try:
        header, size, kind = _read_header(path)
    except Exception:
        return False
    return kind == "v0" and header is not None and _v0_variant(header, size) is not None


def _v0_variant(header: Llama2cHeader, size: int) -> Llama2cHeader | None:
    """The header with the classifier flag the file size confirms, or None if neither fits."""
    if _expected_size(header) == size:
        return header
    flipped = dataclasses.replace(header, shared_classifier=not header.shared_classifier)
    return flipped if _expected_size(flipped) == size else None


def read_llama2c(path: Path) -> Checkpoint:
    """Open a llama2.c export (v0, v1 or v2): header checks, tensor table, no data read.

    Raises:
        NotACheckpointError: no magic and no plausible v0 header.
        CorruptCheckpointError: shorter than the header implies.
        InconsistentHeaderError: implausible header values, longer than the header implies.
        UnsupportedFormatError: an export version other than 0, 1, 2.
    """
    where = sanitize(path.name)
    header, size, kind = _read_header(path)
    notes: list[str] = []
    if header is None:
        raise NotACheckpointError(f"{where}: neither a llama2.c v1/v2 file nor a plausible legacy header")
    if kind == "v0":
        variant = _v0_variant(header, size)
        if variant is None:
            _raise_size_mismatch(where, size, _expected_size(header))
        assert variant is not None
        if variant.shared_classifier != header.shared_classifier:
            notes.append(
                f"{where}: the vocab_size sign contradicts the file size; the size decides the classifier"
            )
        header = variant
    elif size != _expected_size(header):
        _raise_size_mismatch(where, size, _expected_size(header))
    infos = _layout(header, path)
    return Checkpoint(
        format="llama2c",
        path=path,
        files=[path],
        tensors={info.name: info for info in infos},
        layout="file",
        metadata={"llama2c": header.as_metadata()},
        notes=notes,
    )


def _raise_size_mismatch(where: str, size: int, expected: int) -> None:
    if size < expected:
        raise CorruptCheckpointError(f"{where}: {size} bytes but the header implies {expected} (truncated?)")
    raise InconsistentHeaderError(
        f"{where}: {size} bytes but the header implies {expected} ({size - expected} extra)"
    )


def format_facts(checkpoint: Checkpoint) -> FormatFacts:
    """A llama2.c export is a Llama by construction, with no names and no metadata fields."""
    header = checkpoint.metadata.get("llama2c")
    config = llama_style_config(header) if isinstance(header, dict) else None
    return FormatFacts(
        config=config,
        config_source="llama2.c header" if config is not None else None,
        header_vocab_size=_header_vocab_size(header),
        label="llama2.c",
        can_declare=False,
        names_from="format",
        native_conventions=frozenset({"meta"}),
        family_hint="llama",
        naming_note="llama2.c exports have no tensor names: the layout is positional",
    )


def forward_header(checkpoint: Checkpoint) -> ForwardHeader:
    """The header's sizes; run.c fixes the rest (RMSNorm epsilon 1e-5, rotary base 10000)."""
    header = checkpoint.metadata.get("llama2c")
    forward = meta_forward_header(header if isinstance(header, dict) else {}, "llama2.c header", graph="meta")
    return replace(forward, note="llama2.c run.c: eps 1e-5, rotary base 10000, adjacent pairs")


def _header_vocab_size(header: object) -> int | None:
    value = header.get("vocab_size") if isinstance(header, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value != 0:
        # llama2.c stores a negative vocab size to flag an untied classifier.
        return abs(value)
    return None


# -- the tokenizer beside an export ------------------------------------------------------------------

MAX_TOKENIZER_FILE_BYTES = 64 << 20
# run.c's fixed ids, and the strings llama2.c's tokenizer.py writes for BOS and EOS.
_UNK, _BOS, _EOS = 0, 1, 2
_SPECIAL_PIECES = {b"<unk>": "<unk>", b"\n<s>\n": "<s>", b"\n</s>\n": "</s>", b"<s>": "<s>", b"</s>": "</s>"}
_SPACE_MARK = "\u2581"


def embedded_tokenizer(checkpoint: Checkpoint) -> EmbeddedTokenizer | None:
    """The llama2.c tokenizer beside the export: ``tokenizer.bin`` (Llama 2's, run.c's default) or
    ``tok{vocab_size}.bin`` (what llama2.c's ``tokenizer.py --tokenizer-model`` names a custom
    one), whichever holds exactly the model's vocabulary size; None when neither does."""
    header = checkpoint.metadata.get("llama2c") or {}
    vocab = abs(int(header.get("vocab_size", 0)))
    folder = checkpoint.path.parent
    for name in ("tokenizer.bin", f"tok{vocab}.bin"):
        candidate = folder / name
        if candidate.is_file():
            tokenizer = read_llama2c_tokenizer(candidate)
            if len(tokenizer.tokens) == vocab:
                return tokenizer
    return None


def read_llama2c_tokenizer(path: Path) -> EmbeddedTokenizer:
    """A llama2.c ``tokenizer.bin``: int32 max_token_length, then per token a float32 score, an int32
    length and the piece's bytes. llama2.c's export turned SentencePiece's ``\u2581`` into spaces
    and BOS/EOS into ``"\\n<s>\\n"``/``"\\n</s>\\n"``; both are undone here, so the pieces are the
    SentencePiece model's again (a BPE ranked by score; run.c encodes the same way).

    Raises:
        CorruptCheckpointError: lengths that run past the file, pieces that are not UTF-8.
        ResourceLimitError: a file over `MAX_TOKENIZER_FILE_BYTES`.
    """
    where = sanitize(path.name)
    handle, _size = open_regular_file(path)
    with handle:
        data = handle.read(MAX_TOKENIZER_FILE_BYTES + 1)
    if len(data) > MAX_TOKENIZER_FILE_BYTES:
        raise ResourceLimitError(f"{where}: over the {MAX_TOKENIZER_FILE_BYTES}-byte limit for a tokenizer")
    if len(data) < 4:
        raise CorruptCheckpointError(f"{where}: too short for a llama2.c tokenizer")
    (longest,) = struct.unpack_from("<i", data, 0)
    pieces: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    position = 4
    while position < len(data):
        index = len(pieces)
        if position + 8 > len(data):
            raise CorruptCheckpointError(f"{where}: ends inside the record of token {index}")
        score, length = struct.unpack_from("<fi", data, position)
        start, position = position + 8, position + 8 + length
        if not 0 <= length <= max(longest, 0) or position > len(data):
            raise CorruptCheckpointError(f"{where}: token {index} claims {length} bytes past its limit")
        raw = data[start:position]
        if index <= _EOS and raw in _SPECIAL_PIECES:
            piece, kind = _SPECIAL_PIECES[raw], TOKEN_UNKNOWN if index == _UNK else TOKEN_CONTROL
        else:
            try:
                piece = raw.decode("utf-8").replace(" ", _SPACE_MARK)
            except UnicodeDecodeError:
                raise CorruptCheckpointError(f"{where}: token {index} is not UTF-8") from None
            is_byte = len(raw) == 6 and raw.startswith(b"<0x") and raw.endswith(b">")
            kind = TOKEN_BYTE if is_byte else TOKEN_NORMAL
        pieces.append(piece)
        scores.append(float(score) if math.isfinite(score) else 0.0)
        types.append(kind)
    if len(pieces) <= _EOS:
        raise CorruptCheckpointError(f"{where}: {len(pieces)} tokens, fewer than run.c's fixed ids")
    return EmbeddedTokenizer(
        model="sentencepiece-bpe",
        tokens=tuple(pieces),
        source=f"llama2.c tokenizer {where}",
        token_types=tuple(types),
        scores=tuple(scores),
        bos_id=_BOS,
        eos_id=_EOS,
        unk_id=_UNK,
        add_bos=True,
        add_eos=False,
        add_space_prefix=True,
        files=(path,),
    )
