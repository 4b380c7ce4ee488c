"""Fuzz: safetensors files and shard indexes. Only unshell errors may escape (see `fuzz_support`)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fuzz_support import (
    HUGE_NUMBERS,
    SPECIAL_NUMBERS,
    Pairs,
    adversarial_json,
    deep_nesting,
    dump_json,
    exercise_checkpoint,
    fuzz_settings,
    mutated,
    names,
    reaches,
    scratch_dir,
)
from unshell.formats.base import PLAIN_DTYPES
from unshell.formats.safetensors import write_safetensors

LLAMA_NAMES = (
    "model.embed_tokens.weight",
    "model.layers.0.input_layernorm.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.0.self_attn.v_proj.weight",
    "model.layers.0.self_attn.o_proj.weight",
    "model.layers.0.post_attention_layernorm.weight",
    "model.layers.0.mlp.gate_proj.weight",
    "model.layers.0.mlp.up_proj.weight",
    "model.layers.0.mlp.down_proj.weight",
    "model.norm.weight",
    "lm_head.weight",
)
DTYPES = (*PLAIN_DTYPES, "F13", "Q4_K", "", "f32")

tensor_names = names(*LLAMA_NAMES)
lies = st.one_of(st.sampled_from(SPECIAL_NUMBERS), st.sampled_from(HUGE_NUMBERS), adversarial_json())


@dataclass(frozen=True)
class Planned:
    name: str
    dtype: str
    shape: tuple[int, ...]


planned_tensors = st.lists(
    st.builds(
        Planned,
        tensor_names,
        st.sampled_from(tuple(PLAIN_DTYPES)),
        st.lists(st.integers(0, 6), max_size=3).map(tuple),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda t: t.name,
)


@st.composite
def safetensors_files(draw: st.DrawFn) -> bytes:
    """A valid file from a plan, then maybe one header field replaced by a lie, a duplicate key,
    metadata that is not text, padding or a header length that does not fit."""
    plan = draw(planned_tensors)
    entries: list[tuple[str, Any]] = []
    offset = 0
    for tensor in plan:
        nbytes = int(np.prod(tensor.shape, dtype=np.int64)) * PLAIN_DTYPES[tensor.dtype].itemsize
        entries.append(
            (
                tensor.name,
                {
                    "dtype": tensor.dtype,
                    "shape": list(tensor.shape),
                    "data_offsets": [offset, offset + nbytes],
                },
            )
        )
        offset += nbytes
    data = draw(st.binary(min_size=offset, max_size=offset))
    if draw(st.booleans()):
        index = draw(st.integers(0, len(entries) - 1))
        name, entry = entries[index]
        field = draw(st.sampled_from(("dtype", "shape", "data_offsets", "shape[0]", "data_offsets[1]")))
        lie = draw(lies if field != "dtype" else st.one_of(st.sampled_from(DTYPES), lies))
        entry = dict(entry)
        if field.endswith("]"):
            key = field.split("[")[0]
            entry[key] = [lie, *entry[key][1:]] if field.endswith("[0]") else [entry[key][0], lie]
        else:
            entry[field] = lie
        entries[index] = (name, entry)
    if draw(st.booleans()):
        entries.append(("__metadata__", draw(adversarial_json())))
    if draw(st.integers(0, 9)) == 0:
        entries.append(draw(st.sampled_from(entries)))  # a duplicate key
    header = dump_json(Pairs(tuple(entries)))
    if draw(st.integers(0, 19)) == 0:
        header = dump_json(Pairs((("a", deep_nesting(draw(st.integers(500, 5000)))),)))
    raw = header.encode("utf-8", "surrogatepass") + b" " * draw(st.integers(0, 8))
    length = len(raw) if draw(st.integers(0, 4)) else draw(st.sampled_from((0, 1, 2, len(raw) + 1, 1 << 63)))
    return struct.pack("<Q", length) + raw + data


@reaches("inspect", "read_all", "fingerprint_round_trip")
@fuzz_settings(150)
@given(safetensors_files())
def test_structured_safetensors(data: bytes) -> None:
    with scratch_dir() as directory:
        path = directory / "model.safetensors"
        path.write_bytes(data)
        exercise_checkpoint(path, fingerprint=True)


def _valid_file() -> bytes:
    with scratch_dir() as directory:
        path = directory / "v.safetensors"
        rng = np.random.default_rng(0)
        write_safetensors(
            path,
            {
                "model.embed_tokens.weight": rng.standard_normal((16, 8)).astype(np.float32),
                "model.norm.weight": np.ones(8, np.float16),
                "lm_head.weight": rng.standard_normal((16, 8)).astype(np.float32),
            },
            metadata={"format": "pt", "license": "mit"},
        )
        return path.read_bytes()


VALID = _valid_file()
HEADER_END = 8 + struct.unpack("<Q", VALID[:8])[0]


@fuzz_settings(150)
@given(mutated(VALID, hot=HEADER_END))
def test_mutated_safetensors_header(data: bytes) -> None:
    with scratch_dir() as directory:
        path = directory / "model.safetensors"
        path.write_bytes(data)
        exercise_checkpoint(path)


weight_maps = st.one_of(
    st.dictionaries(
        tensor_names,
        st.one_of(
            st.sampled_from(
                ("a.safetensors", "b.safetensors", "missing.safetensors", "../a.safetensors", "")
            ),
            st.sampled_from(("/etc/passwd", "C:\\x", "a.safetensors\x00", "sub/../a.safetensors", "x" * 300)),
            adversarial_json(),
        ),
        max_size=5,
    ),
    adversarial_json(),
)


@reaches("inspect", "read_all")
@fuzz_settings(100)
@given(weight_maps, st.one_of(st.just({}), adversarial_json()))
def test_shard_index(weight_map: Any, metadata: Any) -> None:
    """A ``model.safetensors.index.json`` whose weight map lies about names, files and paths."""
    with scratch_dir() as directory:
        model = directory / "model"
        model.mkdir()
        write_safetensors(model / "a.safetensors", {"model.norm.weight": np.ones(4, np.float32)})
        write_safetensors(model / "b.safetensors", {"lm_head.weight": np.ones((8, 4), np.float32)})
        text = dump_json({"metadata": metadata, "weight_map": weight_map})
        (model / "model.safetensors.index.json").write_text(text, encoding="utf-8", errors="surrogatepass")
        exercise_checkpoint(model)
        exercise_checkpoint(model / "model.safetensors.index.json", read_values=False)
