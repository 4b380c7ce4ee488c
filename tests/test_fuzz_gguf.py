"""Fuzz: GGUF files, built field by field (`gguf_writer`) and mutated from the real fixture.
Only unshell errors may escape (see `fuzz_support`)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import gguf_writer as gw
from fuzz_support import (
    INTERESTING_U64,
    exercise_checkpoint,
    field_mutated,
    fuzz_settings,
    mutated,
    names,
    reaches,
    scratch_dir,
    unshell_errors_only,
)
from unshell.formats.quants import GGML_TYPES, REMOVED_GGML_TYPES

FIXTURE = Path(__file__).resolve().parent / "data" / "fixtures" / "llama-2-tiny-random.gguf"

KEYS = (
    "general.architecture",
    "general.name",
    "general.license",
    "general.alignment",
    "general.base_model.count",
    "general.base_model.0.name",
    "general.base_model.0.repo_url",
    "general.finetune",
    "llama.block_count",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.context_length",
    "llama.rope.freq_base",
    "llama.attention.layer_norm_rms_epsilon",
    "llama.vocab_size",
    "tokenizer.ggml.model",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
)
TENSOR_NAMES = (
    "token_embd.weight",
    "blk.0.attn_norm.weight",
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.0.attn_v.weight",
    "blk.0.attn_output.weight",
    "blk.0.ffn_norm.weight",
    "blk.0.ffn_gate.weight",
    "blk.0.ffn_up.weight",
    "blk.0.ffn_down.weight",
    "output_norm.weight",
    "output.weight",
)
TYPE_IDS = (*GGML_TYPES, *REMOVED_GGML_TYPES, 42, 99, 0xFFFFFFFF)
SCALAR_TYPES = {
    gw.UINT8: st.integers(0, 255),
    gw.INT8: st.integers(-128, 127),
    gw.UINT16: st.integers(0, 0xFFFF),
    gw.INT16: st.integers(-(1 << 15), (1 << 15) - 1),
    gw.UINT32: st.one_of(st.sampled_from((0, 1, 2, 3, 32, 64, 0xFFFFFFFF)), st.integers(0, 0xFFFFFFFF)),
    gw.INT32: st.integers(-(1 << 31), (1 << 31) - 1),
    gw.FLOAT32: st.floats(width=32),
    gw.BOOL: st.booleans(),
    gw.UINT64: st.one_of(st.sampled_from(INTERESTING_U64), st.integers(0, (1 << 64) - 1)),
    gw.INT64: st.integers(-(1 << 63), (1 << 63) - 1),
    gw.FLOAT64: st.floats(),
}
strings = st.one_of(
    st.sampled_from(("llama", "gpt2", "t5", "bert", "gemma3", "", "https://huggingface.co/a/b")),
    st.text(max_size=16),
    st.binary(max_size=16),  # invalid UTF-8 too
).map(lambda text: text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)


@st.composite
def kv_pairs(draw: st.DrawFn) -> bytes:
    key = draw(names(*KEYS)).encode("utf-8", "surrogatepass")
    kind = draw(st.sampled_from(("scalar", "string", "array", "bad type", "lying array")))
    if kind == "scalar":
        value_type = draw(st.sampled_from(tuple(SCALAR_TYPES)))
        return gw.kv_scalar(key, value_type, draw(SCALAR_TYPES[value_type]))
    if kind == "string":
        return gw.kv_string(key, draw(strings))
    if kind == "bad type":
        return gw.kv(key, draw(st.sampled_from((13, 99, 0xFFFFFFFF))), draw(st.binary(max_size=12)))
    element_type = draw(st.sampled_from((*SCALAR_TYPES, gw.STRING)))
    element = strings if element_type == gw.STRING else SCALAR_TYPES[element_type]
    elements = draw(st.lists(element, max_size=8))
    if draw(st.integers(0, 9)) == 0:  # past the lazy threshold: decoded only on demand
        elements = elements * 200
    count = None if kind == "array" else draw(st.sampled_from(INTERESTING_U64))
    if element_type == gw.STRING and draw(st.booleans()):
        return gw.kv(key, gw.ARRAY, struct.pack("<IQ", gw.ARRAY, count or 1) + b"\0" * 12)  # nested
    return gw.kv_array(key, element_type, elements, count)


@dataclass(frozen=True)
class PlannedTensor:
    name: bytes
    ne: tuple[int, ...]
    type_id: int


def _nbytes(tensor: PlannedTensor) -> int:
    spec = GGML_TYPES.get(tensor.type_id)
    if spec is None:
        return 0
    count = 1
    for dim in tensor.ne:
        count *= dim
    return -(-count // spec.block_elements) * spec.block_bytes


block_friendly = st.sampled_from((0, 1, 2, 4, 8, 32, 64, 256))
planned = st.builds(
    PlannedTensor,
    names(*TENSOR_NAMES).map(lambda name: name.encode("utf-8", "surrogatepass")),
    st.lists(st.one_of(block_friendly, st.sampled_from(INTERESTING_U64)), max_size=5).map(tuple),
    st.one_of(st.sampled_from((0, 1, 2, 8, 12, 14, 30)), st.sampled_from(TYPE_IDS)),
)


@st.composite
def gguf_files(draw: st.DrawFn) -> bytes:
    tensors = draw(st.lists(planned, max_size=6))
    alignment = draw(st.sampled_from((32, 32, 32, 1, 64, 0, 3, 1 << 31)))
    offsets, offset = [], 0
    for tensor in tensors:
        offsets.append(offset)
        size = _nbytes(tensor)
        offset += -(-min(size, 1 << 16) // max(alignment, 1)) * max(alignment, 1)
    if draw(st.integers(0, 4)) == 0 and offsets:
        index = draw(st.integers(0, len(offsets) - 1))
        offsets[index] = draw(st.sampled_from((1, 16, offset, *INTERESTING_U64)))
    kvs = [gw.kv_string("general.architecture", "llama"), *draw(st.lists(kv_pairs(), max_size=6))]
    if alignment != 32:
        kvs.append(gw.kv_scalar("general.alignment", gw.UINT32, alignment & 0xFFFFFFFF))
    parts = gw.GGUFParts(
        kvs=kvs,
        infos=[
            gw.tensor_info(t.name, list(t.ne), t.type_id & 0xFFFFFFFF, o)
            for t, o in zip(tensors, offsets, strict=True)
        ],
        data=draw(st.binary(min_size=min(offset, 1 << 16), max_size=min(offset, 1 << 16))),
        version=draw(st.sampled_from((3, 3, 3, 2, 1, 4, 0x03000000))),
        alignment=max(alignment, 1) if alignment <= 4096 else 32,
    )
    if draw(st.integers(0, 9)) == 0:
        parts.tensor_count = draw(st.sampled_from(INTERESTING_U64))
    if draw(st.integers(0, 9)) == 0:
        parts.kv_count = draw(st.sampled_from(INTERESTING_U64))
    return gw.gguf_file(parts)


def _tokenizer_steps(path: Path) -> None:
    from unshell.tokenizers.report import inspect_tokenizer

    def tokenizer_report() -> None:
        inspect_tokenizer(path).to_dict()

    unshell_errors_only(tokenizer_report)


@reaches("inspect", "read_all", "fingerprint_round_trip")
@fuzz_settings(150)
@given(gguf_files())
def test_structured_gguf(data: bytes) -> None:
    with scratch_dir() as directory:
        path = directory / "model.gguf"
        path.write_bytes(data)
        exercise_checkpoint(path, fingerprint=True)
        _tokenizer_steps(path)


def _fixture_fields() -> list[tuple[int, int]]:
    """(offset, width) of every count, length, type, dimension, offset and scalar value in the
    fixture's header (the first elements of each array), found by gguf-py's reader."""
    from gguf import GGUFReader

    reader = GGUFReader(FIXTURE)
    fields: list[tuple[int, int]] = []
    for field in [*reader.fields.values(), *(tensor.field for tensor in reader.tensors)]:
        offset = field.offset
        for part in field.parts[:12]:
            if part.dtype != "uint8":  # names and string bytes: the byte-level mutations cover them
                fields.append((offset, part.nbytes))
            offset += part.nbytes
    return fields


FIXTURE_BYTES = FIXTURE.read_bytes()
FIXTURE_FIELDS = _fixture_fields()


@reaches("inspect", "tokenizer_report")
@fuzz_settings(50)
@given(
    st.one_of(
        field_mutated(FIXTURE_BYTES, FIXTURE_FIELDS, max_mutations=2),
        field_mutated(FIXTURE_BYTES, FIXTURE_FIELDS, max_mutations=1),
        mutated(FIXTURE_BYTES, hot=4096, max_mutations=2),
    )
)
def test_mutated_real_gguf(data: bytes) -> None:
    """The real fixture (the Llama-2 tokenizer, F16/F32 tensors) with header fields changed, or
    bytes of its first key/value pairs."""
    with scratch_dir() as directory:
        path = directory / "model.gguf"
        path.write_bytes(data)
        exercise_checkpoint(path)
        _tokenizer_steps(path)
