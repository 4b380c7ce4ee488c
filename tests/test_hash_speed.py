"""The fast paths of content hashing and row reading give exactly what the plain definitions give.

`hashes.hash_tensor` hashes a bf16 tensor in one pass over its stored bytes, and every other dtype in
cache-sized chunks of rows; `Checkpoint.read_rows` decodes only the rows asked for, quantized
blocks included. The references here are the definitions written out: decode the whole tensor to
float32, round it to bfloat16, hash the bits, count them.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from gguf_writer import F16, F32, Q4_0, Q8_0, GGUFParts, gguf_file, kv_scalar, kv_string, tensor_info
from unshell.formats import open_checkpoint
from unshell.formats.base import bf16_to_f32
from unshell.lineage import hashes
from unshell.lineage.hashes import hash_tensor
from unshell.threads import limited


def reference_hashes(values: np.ndarray, stored: bytes) -> tuple[str, str, str, int]:
    bits32 = np.ascontiguousarray(values, dtype=np.float32).ravel().view(np.uint32)
    rounded = ((bits32 + (((bits32 >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
    histogram = np.bincount(rounded, minlength=1 << 16).astype(np.int64)
    return (
        hashlib.sha256(stored).hexdigest(),
        hashlib.sha256(rounded.tobytes()).hexdigest(),
        hashlib.sha256(histogram.tobytes()).hexdigest(),
        int(np.count_nonzero(histogram)),
    )


def write_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> None:
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(t[2] for t in tensors.values()))


# One thread hashes the stored bytes in line; two hash them on a second thread beside the counting.
@pytest.mark.parametrize("threads", [1, 2])
def test_bf16_one_pass_equals_the_definition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    monkeypatch.setattr(hashes, "_THREAD_MIN_BYTES", 0)  # these tiny tensors take the threaded path too
    monkeypatch.setattr(hashes, "_CHUNK_ELEMENTS", 1000)  # many chunks, one ending mid-row
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 1 << 16, size=(37, 129), dtype=np.uint16)
    bits[0, :4] = [0x7FC0, 0xFFFF, 0x7F80, 0x7F81]  # NaNs with payloads and infinity round to themselves
    plain = (rng.standard_normal((37, 129)).astype(np.float32) * 0.02).view(np.uint32)
    f32 = plain.view(np.float32)
    path = tmp_path / "model.safetensors"
    write_safetensors(
        path,
        {
            "bf16": ("BF16", bits.shape, bits.tobytes()),
            "f32": ("F32", f32.shape, f32.tobytes()),
            "f16": ("F16", f32.shape, f32.astype(np.float16).tobytes()),
        },
    )
    checkpoint = open_checkpoint(path)
    for name, values, stored in (
        ("bf16", bf16_to_f32(bits), bits.tobytes()),
        ("f32", f32, f32.tobytes()),
        ("f16", f32.astype(np.float16).astype(np.float32), f32.astype(np.float16).tobytes()),
    ):
        with limited(threads):
            got = hash_tensor(checkpoint, name)
        assert (got.exact, got.rounded, got.multiset, got.distinct) == reference_hashes(values, stored), name


def quantized_gguf(path: Path) -> dict[str, np.ndarray]:
    """A GGUF with Q8_0, Q4_0, F16 and F32 matrices of 40 rows x 64 values (finite scales)."""
    rng = np.random.default_rng(7)
    rows, cols = 40, 64

    def blocks(quant_bytes: int) -> bytes:
        out = bytearray()
        for _ in range(rows * cols // 32):
            out += np.float16(rng.uniform(0.001, 0.1)).tobytes() + rng.bytes(quant_bytes)
        return bytes(out)

    payloads = {
        "q8": (Q8_0, blocks(32)),
        "q4": (Q4_0, blocks(16)),
        "f16": (F16, rng.standard_normal((rows, cols)).astype(np.float16).tobytes()),
        "f32": (F32, rng.standard_normal((rows, cols)).astype(np.float32).tobytes()),
    }
    infos, data = [], b""
    for name, (kind, raw) in payloads.items():
        data += b"\x00" * (-len(data) % 32)
        infos.append(tensor_info(name, [cols, rows], kind, len(data)))
        data += raw
    parts = GGUFParts(
        kvs=[kv_string("general.architecture", "llama"), kv_scalar("llama.block_count", 4, 1)],
        infos=infos,
        data=data,
    )
    path.write_bytes(gguf_file(parts))
    return {name: np.frombuffer(raw, np.uint8) for name, (_, raw) in payloads.items()}


def test_read_rows_decodes_only_the_rows_and_equals_read(tmp_path: Path) -> None:
    path = tmp_path / "q.gguf"
    quantized_gguf(path)
    checkpoint = open_checkpoint(path)
    for name in ("q8", "q4", "f16", "f32"):
        info = checkpoint.info(name)
        assert checkpoint.row_bytes(info) == info.nbytes // 40
        whole = checkpoint.read(name)
        for rows in (slice(None, None, 3), slice(5, 17), np.array([39, 0, 7, 7, 21])):
            assert np.array_equal(checkpoint.read_rows(name, rows), whole[rows], equal_nan=True), (name, rows)


@pytest.mark.parametrize("threads", [1, 2])
def test_quantized_hashes_in_row_blocks_equal_the_definition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    monkeypatch.setattr(hashes, "_BLOCK_ELEMENTS", 64 * 3)  # blocks of 3 rows, the last one short
    monkeypatch.setattr(hashes, "_CHUNK_ELEMENTS", 100)
    monkeypatch.setattr(hashes, "_THREAD_MIN_BYTES", 0)
    path = tmp_path / "q.gguf"
    raws = quantized_gguf(path)
    checkpoint = open_checkpoint(path)
    for name in ("q8", "q4", "f16", "f32"):
        with limited(threads):
            got = hash_tensor(checkpoint, name)
        expected = reference_hashes(checkpoint.read(name), raws[name].tobytes())
        assert (got.exact, got.rounded, got.multiset, got.distinct) == expected, name


def test_complex_values_hash_both_parts(tmp_path: Path) -> None:
    """A complex64 tensor is hashed as its interleaved real and imaginary float32 parts: two
    tensors that differ only in an imaginary part differ in every hash, and no part is dropped."""
    digests = []
    for name, values in (("a", [[1 + 2j, 3 + 4j]]), ("b", [[1 + 5j, 3 + 4j]])):
        array = np.array(values, dtype=np.complex64)
        path = tmp_path / f"{name}.safetensors"
        write_safetensors(path, {"w": ("C64", array.shape, array.tobytes())})
        with open_checkpoint(path) as checkpoint:
            got = hash_tensor(checkpoint, "w")
        parts = array.view(np.float32)
        assert (got.exact, got.rounded, got.multiset, got.distinct) == reference_hashes(
            parts, array.tobytes()
        )
        digests.append(got)
    assert digests[0].rounded != digests[1].rounded and digests[0].multiset != digests[1].multiset
