"""The content hashes of real fixture tensors, pinned digest for digest.

Fingerprints in a library, search's content-hash index and every `compare` report carry these
digests: a change to how the hash pass reads, chunks, counts or threads its work must leave every
one of them as it was. The pinned values were computed by the hash pass as it stood before session
8's rewrite of its bf16 path (main at 4b887cf); `test_hash_speed.py` checks the definitions on
synthetic tensors, this file checks that real ones did not move.

Three paths: stories260K's float32 tensors (decoded, rounded to bfloat16, hashed), the llama-2-tiny
GGUF's float16 ones (a 32000 x 8 embedding among them), and stories260K written as bfloat16
safetensors (the stored bytes hashed and counted as they are), the last in steps of several sizes,
in line and with the sha256 on a second thread.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from unshell.formats import open_checkpoint
from unshell.formats.base import Checkpoint
from unshell.formats.safetensors import write_safetensors
from unshell.lineage import hashes
from unshell.lineage.hashes import TensorHashes, hash_tensor
from unshell.threads import limited

# tok_embeddings.weight of stories260K (512 x 64 float32).
STORIES_EMBEDDING = TensorHashes(
    name="tok_embeddings.weight",
    numel=32768,
    exact="452158377d2f8703b5b38935f894b628d3c7e2ac26bc167bfbfc68655dfe2c8a",
    rounded="068cab9d1f63c7dbab5ce5cc9a120ad64cc15558b2a2951c7e853c1c219a3196",
    multiset="90c3bc959064a2ceb339789a6cafab720ef72144941384481ae2a948b3b084bb",
    distinct=2156,
)
# token_embd.weight of llama-2-tiny-random.gguf (32000 x 8 float16).
TINY_EMBEDDING = TensorHashes(
    name="token_embd.weight",
    numel=256000,
    exact="20d11b1af9867eb745affaf279a1f2371687215d93e8eca28f8ec2ff09186774",
    rounded="8101ed7839ebff031b58c41c1411e7e955819fc785406b88315b1f2e5f9c579b",
    multiset="6952e09c017e9a532175e4c972a6467f9317f12a8d39505bf5c6fc446890b190",
    distinct=2952,
)
# The sha256 of every tensor's (name, numel, exact, rounded, multiset, distinct), in tensor order (`digest_of`).
WHOLE = {
    "stories260K.bin": "ab74fb6960e29f242754c9c0ab977451d6c9f7ffb10e5f53b37f1f9c310e2b0f",
    "llama-2-tiny-random.gguf": "bd3efa9b410fdacd002aee36cc878cb1d99f2781547d371bdf52140c3e86c303",
    "stories260K-bf16.safetensors": "7acb1b80973f30c7d10b0916f7b3fa843fec95983d548fc36e9ddac87fc0baa1",
}
# The bfloat16 file itself (the writer rounds to nearest even): if it moved, the writer did, not the hashes.
BF16_FILE = "e73239a17c580a7d6ee18791c4a82d36fc1245b48a2a3d85086008bae67d7cb3"


def all_hashes(checkpoint: Checkpoint, threads: int, *, counted: bool = True) -> list[TensorHashes]:
    with limited(threads):
        return [hash_tensor(checkpoint, name, counted=counted) for name in checkpoint.tensors]


def bf16_patterns(checkpoint: Checkpoint, name: str) -> np.ndarray:
    """The tensor's values rounded to bfloat16 (nearest even), as int64 bit patterns, in order:
    computed here with float64 arithmetic on the uint32 bits, not with `hashes._bf16_bits`."""
    bits = np.asarray(checkpoint.read(name), dtype=np.float32).ravel().view(np.uint32).astype(np.int64)
    return (bits + ((bits >> 16) & 1) + 0x7FFF) >> 16 & 0xFFFF


def key_of(checkpoint: Checkpoint, name: str) -> tuple[int, int, int]:
    """`TensorHashes.key` by its definition: the lowest, highest and sum of the bit patterns."""
    patterns = bf16_patterns(checkpoint, name)
    return (int(patterns.min()), int(patterns.max()), int(patterns.sum()))


def digest_of(tensors: list[TensorHashes]) -> str:
    rows = [[t.name, t.numel, t.exact, t.rounded, t.multiset, t.distinct] for t in tensors]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


@pytest.fixture(scope="module")
def bf16_copy(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    """stories260K's tensors stored as bfloat16 safetensors (in the writer's order)."""
    with open_checkpoint(fixtures_dir / "stories260K.bin") as source:
        tensors = {name: source.read(name) for name in source.tensors}
    path = tmp_path_factory.mktemp("bf16") / "model.safetensors"
    write_safetensors(path, tensors, dtypes=dict.fromkeys(tensors, "BF16"))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == BF16_FILE
    return path


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("fixture", "pinned"),
    [("stories260K.bin", STORIES_EMBEDDING), ("llama-2-tiny-random.gguf", TINY_EMBEDDING)],
)
def test_real_tensors_keep_their_digests(
    fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch, fixture: str, pinned: TensorHashes, threads: int
) -> None:
    monkeypatch.setattr(hashes, "_THREAD_MIN_BYTES", 0)  # the exact sha256 on its own thread too
    with open_checkpoint(fixtures_dir / fixture) as checkpoint:
        got = all_hashes(checkpoint, threads)
        assert got[0] == replace(pinned, key=key_of(checkpoint, pinned.name))
        assert digest_of(got) == WHOLE[fixture]


@pytest.mark.parametrize("chunk", [1 << 19, 300])  # the first chunk whole, and split across blocks
@pytest.mark.parametrize("fixture", ["stories260K.bin", "llama-2-tiny-random.gguf"])
def test_uncounted_hashes_keep_the_digests_and_key_the_values(
    fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch, fixture: str, chunk: int
) -> None:
    """As `compare` hashes (``counted=False``): the same exact and rounded digests, no multiset,
    the key every counted tensor has, and the distinct values of the first `_CHUNK_ELEMENTS`."""
    monkeypatch.setattr(hashes, "_CHUNK_ELEMENTS", chunk)
    monkeypatch.setattr(hashes, "_BLOCK_ELEMENTS", 1000)  # blocks of a few rows: chunks end inside them
    with open_checkpoint(fixtures_dir / fixture) as checkpoint:
        counted = all_hashes(checkpoint, 1)
        uncounted = all_hashes(checkpoint, 1, counted=False)
        for full, light in zip(counted, uncounted, strict=True):
            assert (light.exact, light.rounded, light.key) == (full.exact, full.rounded, full.key)
            assert light.multiset is None
            assert light.key == key_of(checkpoint, full.name)
            first = bf16_patterns(checkpoint, full.name)[:chunk]
            assert light.distinct == len(set(first.tolist())) <= full.distinct
        with pytest.raises(ValueError, match="not counted"):
            _ = uncounted[0].counted_multiset


# Steps: bigger than any tensor; a page; not a whole number of pages; an odd count of values.
@pytest.mark.parametrize("step_bytes", [1 << 22, 4096, 1000, 130])
@pytest.mark.parametrize("threads", [1, 2])
def test_bf16_tensors_keep_their_digests_whatever_the_step(
    bf16_copy: Path, monkeypatch: pytest.MonkeyPatch, step_bytes: int, threads: int
) -> None:
    monkeypatch.setattr(hashes, "_THREAD_MIN_BYTES", 0)
    monkeypatch.setattr(hashes, "_STEP_BYTES", step_bytes)
    monkeypatch.setattr(hashes, "_CHUNK_ELEMENTS", 300)  # counts end mid-step as well
    with open_checkpoint(bf16_copy) as checkpoint:
        got = all_hashes(checkpoint, threads)
    assert digest_of(got) == WHOLE["stories260K-bf16.safetensors"]
    with open_checkpoint(bf16_copy) as checkpoint:
        light = all_hashes(checkpoint, threads, counted=False)
        for full, uncounted in zip(got, light, strict=True):
            first = bf16_patterns(checkpoint, full.name)[:300]
            assert (uncounted.exact, uncounted.key) == (full.exact, key_of(checkpoint, full.name))
            assert uncounted.distinct == len(set(first.tolist()))
    embedding = next(t for t in got if t.name == STORIES_EMBEDDING.name)
    # Stored as bfloat16, the values are the float32 originals rounded: the bf16 copy's exact and
    # rounded digests are the float32 tensor's rounded one, and the multiset is the same.
    assert embedding.exact == embedding.rounded == STORIES_EMBEDDING.rounded
    assert (embedding.multiset, embedding.distinct) == (
        STORIES_EMBEDDING.multiset,
        STORIES_EMBEDDING.distinct,
    )


@pytest.mark.parametrize("size", [0, 7, (1 << 16) - 1, 1 << 16, 3 * (1 << 16) + 5, 1 << 21])
def test_the_key_sums_every_value_exactly(size: int) -> None:
    """`TensorHashes.key`'s sum, in uint32 partial sums: every value at its largest (each partial
    sum at its most, 65,536 x 65,535, within uint32), and random values."""
    largest = np.full(size, 0xFFFF, dtype=np.uint16)
    assert hashes._sum_bits(largest) == 0xFFFF * size
    random = np.random.default_rng(size).integers(0, 1 << 16, size=size, dtype=np.uint16)
    assert hashes._sum_bits(random) == sum(random.tolist())
