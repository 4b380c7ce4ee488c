"""GGUF (llama.cpp) reader: header and tensor table only, tensor bytes stay in the file.

Layout (little-endian): magic ``GGUF``, version u32, tensor count u64, key/value count u64, the
key/value pairs, one info record per tensor (name, n_dims, ne[n_dims] innermost first, ggml type,
offset relative to the data section), padding to ``general.alignment``, then the data section.

Every count and length is checked against the bytes left in the file before it is used, so a
hostile header fails fast with an unshell error and never allocates what it claims. Metadata
arrays longer than `LAZY_ARRAY_THRESHOLD` (a 262,144-string vocabulary, say) are skipped at open
time and kept as `GGUFArray` handles that decode on demand.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    CorruptCheckpointError,
    InconsistentHeaderError,
    NotACheckpointError,
    PathNotFoundError,
    ResourceLimitError,
    UnsupportedFormatError,
)
from . import quants
from .base import (
    MAX_NAME_BYTES,
    Checkpoint,
    TensorInfo,
    expected_nbytes,
    sanitize,
    validate_ranges,
)
from .facts import (
    Claim,
    EmbeddedTokenizer,
    FormatFacts,
    ForwardHeader,
    claim_text,
    claim_texts,
    hub_repo_id,
)

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
GGML_MAX_DIMS = 4
LAZY_ARRAY_THRESHOLD = 1024
"""Arrays with more elements than this are not decoded when the file is opened."""
MAX_KV_PAIRS = 1_000_000
MAX_BASE_MODELS = 64
MAX_GGUF_TENSORS = 100_000
"""Tensors in one GGUF file. llama.cpp stores a layer's experts as one 3-D tensor, so the largest
MoE files hold about 2,000 (DeepSeek-V3); even one tensor per expert (Kimi K2: 61 layers x 384
experts x 3) stays under 75,000. Each record costs about 800 bytes and tens of microseconds to
read, so the cap also bounds a file of millions of empty records."""
MAX_KEY_BYTES = 65_535  # the GGUF spec's limit on key length

_STRING = 8
_ARRAY = 9
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class _ScalarType:
    name: str
    layout: struct.Struct
    dtype: np.dtype[Any]


_SCALAR_TYPES: dict[int, _ScalarType] = {
    type_id: _ScalarType(name, struct.Struct("<" + code), np.dtype("<" + code))
    for type_id, name, code in (
        (0, "uint8", "B"),
        (1, "int8", "b"),
        (2, "uint16", "H"),
        (3, "int16", "h"),
        (4, "uint32", "I"),
        (5, "int32", "i"),
        (6, "float32", "f"),
        (7, "bool", "B"),
        (10, "uint64", "Q"),
        (11, "int64", "q"),
        (12, "float64", "d"),
    )
}
_BOOL = 7


class GGUFArray:
    """A metadata array too large to decode when the file is opened; `decode` reads it on demand.

    ``element_type`` is the GGUF element type name: ``string``, ``uint8``, ``int32``, ``float32``...
    """

    def __init__(self, file: Path, element_type: str, count: int, offset: int, nbytes: int) -> None:
        self.file = file
        self.element_type = element_type
        self.count = count
        self.offset = offset
        self.nbytes = nbytes

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"GGUFArray({self.element_type}, {self.count} elements)"

    def decode(self) -> list[str] | np.ndarray:
        """Strings as a list of str (invalid UTF-8 replaced), numbers as a numpy array, bools as bool."""
        data = self._read_bytes()
        if self.element_type == "string":
            cursor = _Cursor(data, len(data), sanitize(self.file.name))
            return [cursor.string("array element") for _ in range(self.count)]
        scalar = next(t for t in _SCALAR_TYPES.values() if t.name == self.element_type)
        values = np.frombuffer(data, dtype=scalar.dtype, count=self.count)
        return values != 0 if self.element_type == "bool" else values

    def _read_bytes(self) -> bytearray:
        data = bytearray(self.nbytes)
        try:
            with self.file.open("rb") as handle:
                handle.seek(self.offset)
                got = handle.readinto(data)
        except OSError as error:
            raise PathNotFoundError(f"{sanitize(self.file.name)}: cannot read ({error.strerror})") from None
        if got != self.nbytes:
            raise CorruptCheckpointError(f"{sanitize(self.file.name)}: the file shrank after it was opened")
        return data


class _Cursor:
    """Bounds-checked little-endian reads over a buffer. ``bytes_read`` counts what parsing touched."""

    def __init__(self, buffer: bytes | bytearray | mmap.mmap, size: int, where: str) -> None:
        self._buffer = buffer
        self._size = size
        self.where = where
        self.pos = 0
        self.bytes_read = 0

    @property
    def remaining(self) -> int:
        return self._size - self.pos

    def take(self, count: int, what: str) -> int:
        """Claim ``count`` bytes for ``what``; returns their offset."""
        if count > self.remaining:
            raise CorruptCheckpointError(
                f"{self.where}: {what} needs {count} bytes at offset {self.pos}, "
                f"but the file ends {self.remaining} bytes later"
            )
        start = self.pos
        self.pos += count
        self.bytes_read += count
        return start

    def skip(self, count: int, what: str) -> int:
        """Step over ``count`` bytes without reading them; returns their offset."""
        start = self.take(count, what)
        self.bytes_read -= count
        return start

    def peek(self, count: int) -> bytes:
        return bytes(self._buffer[self.pos : self.pos + min(count, self.remaining)])

    def unpack(self, layout: struct.Struct, what: str) -> Any:
        return layout.unpack_from(self._buffer, self.take(layout.size, what))[0]

    def u32(self, what: str) -> int:
        return int(self.unpack(_U32, what))

    def u64(self, what: str) -> int:
        return int(self.unpack(_U64, what))

    def bytes_at(self, start: int, count: int) -> bytes:
        """A copy, so that no view keeps the mapped file open."""
        return bytes(self._buffer[start : start + count])

    def raw_string(self, what: str, limit: int | None = None) -> bytes:
        length = self.u64(f"length of {what}")
        if limit is not None and length > limit:
            raise ResourceLimitError(f"{self.where}: {what} is {length} bytes long (limit {limit})")
        return self.bytes_at(self.take(length, what), length)

    def string(self, what: str) -> str:
        return self.raw_string(what).decode("utf-8", errors="replace")

    def name(self, what: str, limit: int) -> str:
        """A key or tensor name: must be valid UTF-8."""
        raw = self.raw_string(what, limit)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptCheckpointError(
                f"{self.where}: {what} at offset {self.pos - len(raw)} is not valid UTF-8"
            ) from None

    def skip_strings(self, count: int, what: str) -> None:
        """Step over ``count`` length-prefixed strings reading only their lengths."""
        buffer, pos, size, unpack = self._buffer, self.pos, self._size, _U64.unpack_from
        for index in range(count):
            if pos + 8 > size:
                raise CorruptCheckpointError(
                    f"{self.where}: {what} element {index} runs past the end of the file"
                )
            pos += 8 + unpack(buffer, pos)[0]
        if pos > size:
            raise CorruptCheckpointError(
                f"{self.where}: the last string of {what} runs past the end of the file"
            )
        self.bytes_read += 8 * count
        self.pos = pos


def read_gguf(path: Path) -> Checkpoint:
    """Open a GGUF v2/v3 file: tensor table, metadata and lazy tensor access.

    ``metadata["gguf"]`` maps each key to its value (int, float, bool, str, a list for short arrays,
    a `GGUFArray` for long ones); ``metadata["gguf_header"]`` holds ``version``, ``tensor_count``,
    ``kv_count``, ``alignment`` and ``data_offset``. Tensor shapes are numpy order (outermost
    first), the reverse of GGUF's ``ne``.

    Raises:
        NotACheckpointError, UnsupportedFormatError, CorruptCheckpointError,
        InconsistentHeaderError, ResourceLimitError.
    """
    where = sanitize(path.name)
    size = path.stat().st_size
    if size == 0:
        raise CorruptCheckpointError(f"{where}: the file is empty")
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        cursor = _Cursor(mapped, size, where)
        version, tensor_count, kv_count = _read_preamble(cursor)
        metadata = _read_metadata(cursor, kv_count, path)
        alignment = _alignment(metadata, where)
        records = [_read_tensor_record(cursor, index) for index in range(tensor_count)]
    data_offset = _align_up(cursor.pos, alignment)
    tensors = _place_tensors(records, path, data_offset, alignment, size)
    header = {
        "version": version,
        "tensor_count": tensor_count,
        "kv_count": kv_count,
        "alignment": alignment,
        "data_offset": data_offset,
    }
    return Checkpoint(
        format="gguf",
        path=path,
        files=[path],
        tensors=tensors,
        metadata={"gguf": metadata, "gguf_header": header},
    )


def _read_preamble(cursor: _Cursor) -> tuple[int, int, int]:
    if cursor.remaining >= 4 and cursor.peek(4) != GGUF_MAGIC:
        raise NotACheckpointError(f"{cursor.where}: not a GGUF file (no GGUF magic)")
    cursor.take(4, "the magic")
    version = cursor.u32("the version")
    swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
    if version & 0xFFFF == 0 and swapped in (1, 2, 3):
        raise UnsupportedFormatError(f"{cursor.where}: big-endian GGUF (v{swapped}) is not supported")
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedFormatError(
            f"{cursor.where}: GGUF version {version} is not supported (only v2 and v3 are)"
        )
    tensor_count = cursor.u64("the tensor count")
    kv_count = cursor.u64("the metadata count")
    if tensor_count > MAX_GGUF_TENSORS:
        raise ResourceLimitError(
            f"{cursor.where}: {tensor_count} tensors exceeds the limit of {MAX_GGUF_TENSORS} for one GGUF file"
        )
    if kv_count > MAX_KV_PAIRS:
        raise ResourceLimitError(
            f"{cursor.where}: {kv_count} metadata pairs exceeds the limit of {MAX_KV_PAIRS}"
        )
    # Smallest possible records: a key/value is 8 + 4 + 1 bytes, a tensor info 8 + 4 + 4 + 8.
    if kv_count * 13 + tensor_count * 24 > cursor.remaining:
        raise CorruptCheckpointError(
            f"{cursor.where}: the header announces {kv_count} metadata pairs and {tensor_count} tensors, "
            f"more than the {cursor.remaining} bytes left can hold"
        )
    return version, tensor_count, kv_count


def _read_metadata(cursor: _Cursor, kv_count: int, path: Path) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for index in range(kv_count):
        key = cursor.name(f"metadata key #{index}", MAX_KEY_BYTES)
        if key in metadata:
            raise InconsistentHeaderError(f"{cursor.where}: duplicate metadata key {sanitize(key)!r}")
        value_type = cursor.u32(f"the type of {sanitize(key)!r}")
        metadata[key] = _read_value(cursor, value_type, sanitize(key), path)
    return metadata


def _read_value(cursor: _Cursor, value_type: int, key: str, path: Path) -> Any:
    if value_type == _STRING:
        return cursor.string(f"the value of {key!r}")
    if value_type == _ARRAY:
        return _read_array(cursor, key, path)
    scalar = _SCALAR_TYPES.get(value_type)
    if scalar is None:
        raise CorruptCheckpointError(f"{cursor.where}: metadata {key!r} has unknown value type {value_type}")
    value = cursor.unpack(scalar.layout, f"the value of {key!r}")
    return bool(value) if value_type == _BOOL else value


def _read_array(cursor: _Cursor, key: str, path: Path) -> Any:
    element_type = cursor.u32(f"the element type of {key!r}")
    count = cursor.u64(f"the length of {key!r}")
    if element_type == _ARRAY:
        raise UnsupportedFormatError(f"{cursor.where}: metadata {key!r} is a nested array")
    scalar = _SCALAR_TYPES.get(element_type)
    if element_type != _STRING and scalar is None:
        raise CorruptCheckpointError(
            f"{cursor.where}: metadata {key!r} has unknown element type {element_type}"
        )
    element_bytes = 8 if scalar is None else scalar.layout.size  # a string needs at least its length
    if count * element_bytes > cursor.remaining:
        raise CorruptCheckpointError(
            f"{cursor.where}: metadata {key!r} claims {count} elements, more than the rest of the file holds"
        )
    if scalar is None:
        if count <= LAZY_ARRAY_THRESHOLD:
            return [cursor.string(f"element of {key!r}") for _ in range(count)]
        start = cursor.pos
        cursor.skip_strings(count, repr(key))
        return GGUFArray(path, "string", count, start, cursor.pos - start)
    if count > LAZY_ARRAY_THRESHOLD:
        start = cursor.skip(count * element_bytes, repr(key))
        return GGUFArray(path, scalar.name, count, start, count * element_bytes)
    values = np.frombuffer(
        cursor.bytes_at(cursor.take(count * element_bytes, repr(key)), count * element_bytes),
        dtype=scalar.dtype,
    ).tolist()
    return [bool(v) for v in values] if element_type == _BOOL else values


def _alignment(metadata: dict[str, Any], where: str) -> int:
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0:
        raise InconsistentHeaderError(f"{where}: general.alignment is {alignment!r}, not a positive integer")
    if alignment & (alignment - 1):
        raise InconsistentHeaderError(f"{where}: general.alignment {alignment} is not a power of two")
    return alignment


@dataclass(frozen=True)
class _TensorRecord:
    name: str
    ggml: quants.GGMLType
    shape: tuple[int, ...]
    relative_offset: int


def _read_tensor_record(cursor: _Cursor, index: int) -> _TensorRecord:
    name = cursor.name(f"the name of tensor #{index}", MAX_NAME_BYTES)
    label = f"tensor {sanitize(name)!r}"
    n_dims = cursor.u32(f"the rank of {label}")
    if n_dims > GGML_MAX_DIMS:
        raise InconsistentHeaderError(
            f"{cursor.where}: {label} has {n_dims} dimensions; GGUF allows at most {GGML_MAX_DIMS}"
        )
    ne = [cursor.u64(f"a dimension of {label}") for _ in range(n_dims)]
    if any(dim >= 1 << 63 for dim in ne):
        raise InconsistentHeaderError(f"{cursor.where}: {label} has a dimension beyond int64")
    type_id = cursor.u32(f"the type of {label}")
    try:
        ggml = quants.ggml_type(type_id)
    except UnsupportedFormatError as error:
        raise UnsupportedFormatError(f"{cursor.where}: {label}: {error}") from None
    offset = cursor.u64(f"the offset of {label}")
    return _TensorRecord(name, ggml, tuple(reversed(ne)), offset)


def _place_tensors(
    records: list[_TensorRecord], path: Path, data_offset: int, alignment: int, file_size: int
) -> dict[str, TensorInfo]:
    where = sanitize(path.name)
    tensors: dict[str, TensorInfo] = {}
    for record in records:
        label = f"tensor {sanitize(record.name)!r}"
        if record.name in tensors:
            raise InconsistentHeaderError(f"{where}: duplicate {label}")
        if record.relative_offset % alignment:
            raise InconsistentHeaderError(
                f"{where}: {label} starts at offset {record.relative_offset}, "
                f"not a multiple of the alignment {alignment}"
            )
        try:
            nbytes = expected_nbytes(record.ggml.code, record.shape)
        except InconsistentHeaderError as error:
            raise InconsistentHeaderError(f"{where}: {label}: {error}") from None
        tensors[record.name] = TensorInfo(
            name=record.name,
            dtype=record.ggml.code,
            shape=record.shape,
            file=path,
            offset=data_offset + record.relative_offset,
            nbytes=nbytes,
            extra={"ggml_type": record.ggml.type_id},
        )
    validate_ranges(list(tensors.values()), file_size, where=where)
    return tensors


def _align_up(offset: int, alignment: int) -> int:
    return (offset + alignment - 1) // alignment * alignment


# -- what the format declares ----------------------------------------------------------------------

# GGUF architecture names that differ from the catalog's family ids (llama.cpp's LLM_ARCH names).
GGUF_ARCH_TO_FAMILY = {
    "gptneox": "gpt_neox",
    "phi2": "phi",
    "command-r": "cohere",
    "qwen2moe": "qwen2_moe",
    "deepseek2": "deepseek_v2",
    "deepseek": "deepseek_moe",
}

# general.* keys -> declared fields (llama.cpp's gguf-py Keys.General; docs/audit-schema.md).
_GENERAL_FIELDS = {
    "general.name": "name",
    "general.basename": "basename",
    "general.finetune": "finetune",
    "general.organization": "organization",
    "general.license": "license",
    "general.license.name": "license_name",
    "general.license.link": "license_link",
    "general.quantized_by": "quantized_by",
    "general.tags": "tags",
}
_REPO_URL_KEYS = ("general.repo_url", "general.url")
_SOURCE_KEYS = ("general.source.repo_url", "general.source.huggingface.repository", "general.source.url")


def format_facts(checkpoint: Checkpoint) -> FormatFacts:
    """GGUF declares itself in ``general.*``: architecture, name, organization, licence, bases."""
    kv = checkpoint.metadata.get("gguf")
    if not isinstance(kv, dict):
        kv = {}
    claims: list[tuple[str, Claim]] = []
    architecture = claim_text(kv.get("general.architecture"))
    family = GGUF_ARCH_TO_FAMILY.get(architecture, architecture) if architecture else None
    if architecture is not None:
        claims.append(("model_type", Claim(architecture, "GGUF general.architecture")))
    for key, field_name in _GENERAL_FIELDS.items():
        texts = (
            claim_texts(kv.get(key)) if field_name == "tags" else [t for t in [claim_text(kv.get(key))] if t]
        )
        if texts:
            claims.append((field_name, Claim(texts if field_name == "tags" else texts[0], f"GGUF {key}")))
    for key in _REPO_URL_KEYS:
        repo = _repo_of(kv.get(key))
        if repo is not None:
            claims.append(("repo_id", Claim(repo, f"GGUF {key}")))
            break
    for key in _SOURCE_KEYS:
        repo = _repo_of(kv.get(key))
        if repo is not None:
            claims.append(("source_repo", Claim(repo, f"GGUF {key}")))
            break
    base = _base_models(kv)
    if base is not None:
        claims.append(("base_model", base))
        if claim_text(kv.get("general.finetune")) is not None:
            claims.append(("base_model_relation", Claim("finetune", "GGUF general.finetune")))
    return FormatFacts(
        label="GGUF",
        config=_declared_config(kv, architecture, family) if architecture and family else None,
        config_source="GGUF metadata" if architecture else None,
        names_from="format",
        native_conventions=frozenset({"gguf", "gguf-bert"}),
        family_hint=family,
        claims=tuple(claims),
        naming_note="GGUF tensor names (blk.N.attn_q, ...) are the format's own convention",
    )


def _repo_of(value: Any) -> str | None:
    text = claim_text(value)
    return hub_repo_id(text) if text is not None else None


def _base_models(kv: dict[str, Any]) -> Claim | None:
    count = kv.get("general.base_model.count", 0)
    if isinstance(count, bool) or not isinstance(count, int):
        return None
    found: list[tuple[str, str]] = []
    for index in range(min(max(count, 0), MAX_BASE_MODELS)):
        prefix = f"general.base_model.{index}"
        repo = _repo_of(kv.get(f"{prefix}.repo_url"))
        if repo is not None:
            found.append((repo, f"GGUF {prefix}.repo_url"))
            continue
        org, name = claim_text(kv.get(f"{prefix}.organization")), claim_text(kv.get(f"{prefix}.name"))
        if name is not None:
            joined = f"{org}/{name}" if org and hub_repo_id(f"{org}/{name}") else name
            found.append((joined, f"GGUF {prefix}.name"))
    if not found:
        return None
    if len(found) == 1:
        return Claim(found[0][0], found[0][1])
    return Claim([name for name, _ in found], "GGUF general.base_model.*")


# ``<arch>.*`` hyperparameter keys -> config.json names.
_HYPERPARAMETER_KEYS = {
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "feed_forward_length": "intermediate_size",
    "context_length": "max_position_embeddings",
    "vocab_size": "vocab_size",
    # Mixture-of-experts keys (llama.cpp's LLM_KV_EXPERT_*), under Qwen2-MoE's / DeepSeek's names.
    "expert_count": "num_experts",
    "expert_used_count": "num_experts_per_tok",
    "expert_shared_count": "n_shared_experts",
    "expert_feed_forward_length": "moe_intermediate_size",
    "expert_shared_feed_forward_length": "shared_expert_intermediate_size",
    "leading_dense_block_count": "first_k_dense_replace",
    "attention.q_lora_rank": "q_lora_rank",
    "attention.kv_lora_rank": "kv_lora_rank",
}


def _declared_config(kv: dict[str, Any], architecture: str, family: str) -> dict[str, Any]:
    config: dict[str, Any] = {"model_type": family}
    for suffix, target in _HYPERPARAMETER_KEYS.items():
        value = kv.get(f"{architecture}.{suffix}")
        if isinstance(value, int) and not isinstance(value, bool):
            config[target] = value
    tokens = kv.get("tokenizer.ggml.tokens")
    if "vocab_size" not in config and tokens is not None and hasattr(tokens, "__len__"):
        config["vocab_size"] = len(tokens)
    return config


# ``{arch}.<key>`` -> the config.json name a forward pass reads it under (`forward_header`).
_FORWARD_KEYS = {
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "rope.dimension_count": "rotary_dim",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
}
_TOKEN_ID_KEYS = {f"tokenizer.ggml.{name}_token_id": f"{name}_token_id" for name in ("bos", "eos", "pad")}


def forward_header(checkpoint: Checkpoint) -> ForwardHeader:
    """llama.cpp's graph for ``general.architecture``, read from the ``{arch}.*`` keys. Rope scaling
    is ``rope.scaling.type`` with ``rope.scaling.factor`` (older files: ``rope.scale_linear``);
    a ``rope_freqs`` tensor scales per frequency. Reals are stored as float32."""
    kv = checkpoint.metadata.get("gguf")
    if not isinstance(kv, dict):
        kv = {}
    raw_architecture = kv.get("general.architecture")
    architecture = None if raw_architecture is None else str(raw_architecture)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for suffix, name in _FORWARD_KEYS.items():
        key = f"{architecture}.{suffix}"
        sources[name] = f"GGUF {key}"
        if kv.get(key) is not None:
            values[name] = kv[key]
    for key, name in _TOKEN_ID_KEYS.items():
        sources[name] = f"GGUF {key}"
        if kv.get(key) is not None:
            values[name] = kv[key]
    kind = kv.get(f"{architecture}.rope.scaling.type")
    factor = next(
        (
            kv[k]
            for k in (f"{architecture}.rope.scaling.factor", f"{architecture}.rope.scale_linear")
            if kv.get(k) is not None
        ),
        None,
    )
    if kind is not None or factor is not None:
        values["rope_scaling"] = {"type": kind, "factor": factor}
        sources["rope_scaling"] = f"GGUF {architecture}.rope.scaling.*"
    per_frequency = any(name.startswith("rope_freqs") for name in checkpoint.tensors)
    return ForwardHeader(
        label="GGUF",
        values=values,
        sources=sources,
        graph="gguf",
        architecture=architecture,
        float32=True,
        scaled_rope="rope_freqs / rope.scaling.*" if per_frequency or kind else None,
    )


# -- the embedded tokenizer --------------------------------------------------------------------------

MAX_TOKENIZER_ARRAY_BYTES = 512 << 20
"""The largest tokenizer array decoded (the biggest real vocabularies' merges take about 20 MB)."""

# llama.cpp's ``tokenizer.ggml.model`` -> the tokenizer model Hugging Face rebuilds it as.
_TOKENIZER_MODELS = {"gpt2": "byte-level-bpe", "llama": "sentencepiece-bpe"}


def tokenizer_fields(checkpoint: Checkpoint) -> Mapping[str, Any] | None:
    """The file's key/value pairs when they hold a tokenizer (``tokenizer.ggml.model``), else None."""
    kv = checkpoint.metadata.get("gguf")
    return kv if isinstance(kv, Mapping) and "tokenizer.ggml.model" in kv else None


def embedded_tokenizer(checkpoint: Checkpoint) -> EmbeddedTokenizer | None:
    """The tokenizer in ``tokenizer.ggml.*`` and ``tokenizer.chat_template``, for the models
    Hugging Face tokenizers can rebuild (``gpt2``: byte-level BPE, ``llama``: SentencePiece BPE);
    None when the file holds none or another kind (the reason is then the caller's to give).

    Raises:
        CorruptCheckpointError: a tokenizer array of the wrong type or length.
        ResourceLimitError: a tokenizer array larger than `MAX_TOKENIZER_ARRAY_BYTES`.
    """
    kv = checkpoint.metadata.get("gguf") or {}
    model = _TOKENIZER_MODELS.get(str(kv.get("tokenizer.ggml.model")))
    if model is None or "tokenizer.ggml.tokens" not in kv:
        return None
    where = sanitize(checkpoint.path.name)
    tokens = _array(kv["tokenizer.ggml.tokens"], "tokenizer.ggml.tokens", where, ("string",))
    count = len(tokens)

    def sized(key: str, kinds: tuple[str, ...]) -> list[Any] | None:
        if key not in kv:
            return None
        values = _array(kv[key], key, where, kinds)
        if len(values) != count:
            raise CorruptCheckpointError(f"{where}: {count} tokens but {len(values)} entries in {key}")
        return values

    integers = ("int32", "uint32", "int64", "uint64", "int16", "uint16", "int8", "uint8")
    types = sized("tokenizer.ggml.token_type", integers)
    scores = sized("tokenizer.ggml.scores", ("float32", "float64"))
    merges: tuple[tuple[str, str], ...] | None = None
    if "tokenizer.ggml.merges" in kv:
        rules = _array(kv["tokenizer.ggml.merges"], "tokenizer.ggml.merges", where, ("string",))
        pairs = []
        for index, rule in enumerate(rules):
            left, space, right = str(rule).partition(" ")
            if not space or not left or not right:
                raise CorruptCheckpointError(
                    f"{where}: tokenizer.ggml.merges entry {index} is not 'left right'"
                )
            pairs.append((left, right))
        merges = tuple(pairs)

    def token_id(key: str) -> int | None:
        value = kv.get(f"tokenizer.ggml.{key}")
        valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < count
        return int(value) if valid else None  # type: ignore[arg-type]

    def flag(key: str) -> bool | None:
        value = kv.get(f"tokenizer.ggml.{key}")
        return value if isinstance(value, bool) else None

    template = kv.get("tokenizer.chat_template")
    pre = kv.get("tokenizer.ggml.pre")
    return EmbeddedTokenizer(
        model=model,
        tokens=tuple(str(token) for token in tokens),
        source="GGUF tokenizer.ggml.*",
        token_types=tuple(int(t) for t in types) if types is not None else None,
        scores=tuple(float(s) for s in scores) if scores is not None else None,
        merges=merges,
        bos_id=token_id("bos_token_id"),
        eos_id=token_id("eos_token_id"),
        unk_id=token_id("unknown_token_id"),
        pad_id=token_id("padding_token_id"),
        # llama.cpp's defaults when the key is absent: SentencePiece models add BOS, BPE ones do not.
        add_bos=flag("add_bos_token")
        if "tokenizer.ggml.add_bos_token" in kv
        else model == "sentencepiece-bpe",
        add_eos=flag("add_eos_token"),
        add_space_prefix=flag("add_space_prefix"),
        pre_tokenizer=pre if isinstance(pre, str) else None,
        chat_template=template if isinstance(template, str) else None,
    )


def _array(value: Any, key: str, where: str, kinds: tuple[str, ...]) -> list[Any]:
    """A metadata array (decoded at open time, or a lazy `GGUFArray`) as a list, checked for type."""
    if isinstance(value, GGUFArray):
        if value.element_type not in kinds:
            raise CorruptCheckpointError(
                f"{where}: {key} is an array of {value.element_type}, not {kinds[0]}"
            )
        if value.nbytes > MAX_TOKENIZER_ARRAY_BYTES:
            raise ResourceLimitError(
                f"{where}: {key} takes {value.nbytes} bytes, over the {MAX_TOKENIZER_ARRAY_BYTES}-byte limit"
            )
        decoded = value.decode()
        return decoded if isinstance(decoded, list) else decoded.tolist()
    if not isinstance(value, list):
        raise CorruptCheckpointError(f"{where}: {key} is not an array")
    wanted = str if kinds == ("string",) else (float, int) if "float32" in kinds else int
    if not all(isinstance(item, wanted) and not isinstance(item, bool) for item in value):
        raise CorruptCheckpointError(f"{where}: {key} is not an array of {kinds[0]}")
    return value
