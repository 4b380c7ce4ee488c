"""Sharded indexes, Hugging Face model directories, hub-cache folders, sidecars, and the whole hostile
corpus opened through the dispatcher."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest

import torchzip
from hostile_files import PWNED_MARKER, make_hostile_files
from llama2c_export import load_legacy
from unshell.errors import (
    CorruptCheckpointError,
    InconsistentHeaderError,
    NotACheckpointError,
    ResourceLimitError,
)
from unshell.formats import hf, open_checkpoint
from unshell.formats.hf import attach_sidecars, open_directory, read_sharded_index
from unshell.formats.safetensors import read_safetensors, write_safetensors, write_sharded_safetensors

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 5,
}


@pytest.fixture(scope="module")
def stories(fixtures_dir: Path) -> dict[str, np.ndarray]:
    _, state, _ = load_legacy(fixtures_dir / "stories260K.bin")
    return {name: array for name, array in state.items() if not name.startswith("freqs_")}


def test_sharded_safetensors_merge(tmp_path: Path, stories: dict[str, np.ndarray]) -> None:
    index = write_sharded_safetensors(tmp_path, stories, shards=3, metadata={"format": "pt"})

    checkpoint = read_sharded_index(index)

    assert checkpoint.format == "safetensors" and checkpoint.layout == "sharded"
    assert [path.name for path in checkpoint.files] == [
        f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)
    ]
    assert set(checkpoint.tensors) == set(stories)
    shard_of = [checkpoint.files.index(info.file) for info in checkpoint.tensors.values()]
    assert shard_of == sorted(shard_of), "tensors are listed shard by shard"
    assert checkpoint.metadata["index"]["total_size"] == sum(a.nbytes for a in stories.values())
    assert checkpoint.metadata["safetensors"] == {"format": "pt"}
    assert checkpoint.notes == []
    for name, array in stories.items():
        assert np.array_equal(checkpoint.read(name), array), name
    assert {checkpoint.info(name).file.name for name in stories} == {path.name for path in checkpoint.files}


def test_index_that_lies_becomes_notes(tmp_path: Path, stories: dict[str, np.ndarray]) -> None:
    index_path = write_sharded_safetensors(tmp_path, stories, shards=2)
    index = json.loads(index_path.read_text())
    weight_map = index["weight_map"]
    del weight_map["norm.weight"]
    weight_map["model.renamed.weight"] = "model-00001-of-00002.safetensors"
    weight_map["tok_embeddings.weight"] = "model-00002-of-00002.safetensors"
    index["metadata"]["total_size"] = 12
    index_path.write_text(json.dumps(index))

    checkpoint = read_sharded_index(index_path)

    assert set(checkpoint.tensors) == set(stories), "every stored tensor is still there"
    notes = "\n".join(checkpoint.notes)
    assert "1 tensor(s) that no shard holds: 'model.renamed.weight'" in notes
    assert "1 tensor(s) in the wrong shard: 'tok_embeddings.weight'" in notes
    assert "omits 1 tensor(s) that the shards hold: 'norm.weight'" in notes
    assert "total_size is 12" in notes


def test_pytorch_bin_shards(tmp_path: Path, stories: dict[str, np.ndarray]) -> None:
    names = list(stories)
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for number, half in enumerate(halves, start=1):
        shard = f"pytorch_model-0000{number}-of-00002.bin"
        torchzip.save(tmp_path / shard, torchzip.state_dict_refs({name: stories[name] for name in half}))
        weight_map.update(dict.fromkeys(half, shard))
    (tmp_path / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))

    checkpoint = open_checkpoint(tmp_path)

    assert checkpoint.format == "pytorch" and checkpoint.layout == "hf-directory"
    assert len(checkpoint.files) == 2 and checkpoint.config == CONFIG
    for name, array in stories.items():
        assert np.array_equal(checkpoint.read(name), array), name


def test_model_directory_with_sidecars(
    tmp_path: Path, stories: dict[str, np.ndarray], fixtures_dir: Path
) -> None:
    write_safetensors(tmp_path / "model.safetensors", stories)
    torchzip.save(
        tmp_path / "pytorch_model.bin", torchzip.state_dict_refs({"other": np.zeros(1, np.float32)})
    )
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    for name in (
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "adapter_config.json",
    ):
        (tmp_path / name).write_text("{}")
    shutil.copyfile(fixtures_dir / "llama2.tokenizer.model", tmp_path / "tokenizer.model")
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n")
    (tmp_path / "LICENSE.txt").write_text("MIT")
    (tmp_path / "LICENSE").write_text("MIT")
    (tmp_path / "qwen.tiktoken").write_text("IQ== 0\n")

    checkpoint = open_checkpoint(tmp_path)

    assert checkpoint.format == "safetensors", "safetensors wins over pytorch_model.bin"
    assert checkpoint.layout == "hf-directory" and checkpoint.path == tmp_path
    assert "other" not in checkpoint and len(checkpoint) == len(stories)
    assert checkpoint.config == CONFIG
    assert {role: path.name for role, path in checkpoint.sidecars.items()} == {
        "config": "config.json",
        "generation_config": "generation_config.json",
        "tokenizer_json": "tokenizer.json",
        "tokenizer_config": "tokenizer_config.json",
        "special_tokens_map": "special_tokens_map.json",
        "tokenizer_model": "tokenizer.model",
        "card": "README.md",
        "license": "LICENSE",
        "adapter_config": "adapter_config.json",
        "tiktoken": "qwen.tiktoken",
    }
    assert "hf_cache" not in checkpoint.metadata


@pytest.mark.parametrize(
    ("file_name", "source", "expected_format"),
    [
        ("model.bin", "stories260K.bin", "llama2c"),
        ("ckpt.pt", "llama2xs.ckpt.pt", "pytorch"),
        ("adapter_model.safetensors", None, "safetensors"),
    ],
)
def test_directory_finds_other_layouts(
    tmp_path: Path, fixtures_dir: Path, file_name: str, source: str | None, expected_format: str
) -> None:
    if source is None:
        write_safetensors(tmp_path / file_name, {"lora_A": np.ones((2, 2), np.float32)})
    else:
        shutil.copyfile(fixtures_dir / source, tmp_path / file_name)
    (tmp_path / "tokenizer.bin").write_bytes((fixtures_dir / "stories260K.tok512.bin").read_bytes())
    checkpoint = open_directory(tmp_path)
    assert checkpoint.format == expected_format
    assert checkpoint.files == [tmp_path / file_name]
    assert checkpoint.sidecars["llama2c_tokenizer"] == tmp_path / "tokenizer.bin"


def test_empty_directory_says_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(NotACheckpointError, match=r"looked for model\.safetensors.*consolidated\.NN\.pth"):
        open_checkpoint(tmp_path)


def _blob(repo: Path, data: bytes) -> Path:
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    return blob


def make_cache_repo(
    root: Path, stories: dict[str, np.ndarray], revision: str = "a" * 40, *, ref: bool = True
) -> Path:
    """A hub-cache repo the way huggingface_hub lays it out: blobs, refs/main, symlinked snapshot."""
    repo = root / "models--karpathy--stories260K"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    staging = root / "staging.safetensors"
    write_safetensors(staging, stories)
    files = {"model.safetensors": staging.read_bytes(), "config.json": json.dumps(CONFIG).encode()}
    staging.unlink()
    for name, data in files.items():
        blob = _blob(repo, data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
    return repo


def test_hub_cache_repo_folder(tmp_path: Path, stories: dict[str, np.ndarray]) -> None:
    repo = make_cache_repo(tmp_path, stories)

    checkpoint = open_checkpoint(repo)

    assert checkpoint.layout == "hf-cache" and checkpoint.format == "safetensors"
    assert checkpoint.metadata["hf_cache"] == {"repo_id": "karpathy/stories260K", "revision": "a" * 40}
    assert checkpoint.path == repo
    assert checkpoint.files == [repo / "snapshots" / ("a" * 40) / "model.safetensors"]
    assert checkpoint.config == CONFIG
    assert np.array_equal(checkpoint.read("norm.weight"), stories["norm.weight"])

    snapshot_view = open_checkpoint(repo / "snapshots" / ("a" * 40))
    assert snapshot_view.layout == "hf-cache"
    assert snapshot_view.metadata["hf_cache"] == checkpoint.metadata["hf_cache"]

    single_file = open_checkpoint(repo / "snapshots" / ("a" * 40) / "model.safetensors")
    assert single_file.config == CONFIG and single_file.layout == "file"


def test_hub_cache_without_refs_takes_the_newest_snapshot(
    tmp_path: Path, stories: dict[str, np.ndarray]
) -> None:
    repo = make_cache_repo(tmp_path, stories, "old", ref=False)
    newer = make_cache_repo(tmp_path / "other", {"only": np.ones(1, np.float32)}, "new", ref=False)
    shutil.move(newer / "snapshots" / "new", repo / "snapshots" / "new")
    for blob in (newer / "blobs").iterdir():
        shutil.move(blob, repo / "blobs" / blob.name)
    os.utime(repo / "snapshots" / "old", (1_000_000, 1_000_000))

    checkpoint = open_checkpoint(repo)
    assert checkpoint.metadata["hf_cache"]["revision"] == "new" and list(checkpoint.tensors) == ["only"]

    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("old\n")
    assert open_checkpoint(repo).metadata["hf_cache"]["revision"] == "old"
    (repo / "refs" / "main").write_text("../../../etc")
    assert open_checkpoint(repo).metadata["hf_cache"]["revision"] == "new", "a bad ref falls back"


def test_hub_cache_sharded_with_escaping_shard(tmp_path: Path, stories: dict[str, np.ndarray]) -> None:
    repo = tmp_path / "models--org--sharded"
    snapshot = repo / "snapshots" / "rev"
    (snapshot / "weights").mkdir(parents=True)
    write_sharded_safetensors(snapshot / "weights", stories, shards=2)
    index = json.loads((snapshot / "weights" / "model.safetensors.index.json").read_text())
    index["weight_map"] = {name: f"weights/{shard}" for name, shard in index["weight_map"].items()}
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
    (snapshot / "weights" / "model.safetensors.index.json").unlink()

    checkpoint = open_checkpoint(repo)
    assert checkpoint.layout == "hf-cache" and len(checkpoint.files) == 2

    outside = tmp_path / "outside.safetensors"
    shutil.move(snapshot / "weights" / "model-00002-of-00002.safetensors", outside)
    (snapshot / "weights" / "model-00002-of-00002.safetensors").symlink_to(outside)
    with pytest.raises(InconsistentHeaderError, match="points outside the cache folder"):
        open_checkpoint(repo)


def test_sidecar_escaping_the_cache_is_refused_for_files_too(
    tmp_path: Path, stories: dict[str, np.ndarray]
) -> None:
    repo = make_cache_repo(tmp_path, stories)
    snapshot = repo / "snapshots" / ("a" * 40)
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    (snapshot / "tokenizer.json").symlink_to(secret)
    with pytest.raises(InconsistentHeaderError, match=r"tokenizer\.json points outside"):
        open_checkpoint(snapshot / "model.safetensors")


def test_config_parsing_is_strict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_safetensors(tmp_path / "model.safetensors", {"w": np.ones(1, np.float32)})
    checkpoint = read_safetensors(tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(CorruptCheckpointError, match=r"config\.json: expected a JSON object"):
        attach_sidecars(checkpoint, tmp_path)
    (tmp_path / "config.json").write_text('{"a": 1, "a": 2}')
    with pytest.raises(InconsistentHeaderError, match=r"config\.json: duplicate JSON key"):
        attach_sidecars(checkpoint, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    monkeypatch.setattr(hf, "CONFIG_LIMIT", 10)
    with pytest.raises(ResourceLimitError, match=r"config\.json"):
        attach_sidecars(checkpoint, tmp_path)


def test_hostile_corpus_through_the_dispatcher(tmp_path: Path) -> None:
    """Every hostile entry fails with its specific error, quickly, without running anything."""
    expected = make_hostile_files(tmp_path)
    assert len(expected) >= 70
    for name, error in expected.items():
        started = time.perf_counter()
        with pytest.raises(error) as raised:
            open_checkpoint(tmp_path / name)
        elapsed = time.perf_counter() - started
        assert type(raised.value) is error, (name, raised.value)
        assert elapsed < 1.0, (name, elapsed)
        message = str(raised.value)
        assert message and "\n" not in message and "\x1b" not in message, name
    assert not (tmp_path / PWNED_MARKER).exists()


def test_shard_whose_header_length_starts_like_a_pickle(tmp_path: Path) -> None:
    """A 128-byte header makes the file start with 0x80, the pickle protocol opcode."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (128 - len(header))
    (tmp_path / "model-00001-of-00001.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + np.array([3.0, 4.0], np.float32).tobytes()
    )
    assert (tmp_path / "model-00001-of-00001.safetensors").read_bytes()[:1] == b"\x80"
    weight_map = {"w": "model-00001-of-00001.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert open_checkpoint(tmp_path).read("w").tolist() == [3.0, 4.0]


def test_shard_names_are_compared_as_paths(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "a.safetensors", {"x": np.ones(1, np.float32), "y": np.zeros(1, np.float32)})
    weight_map = {"x": "./a.safetensors", "y": "a.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    checkpoint = read_sharded_index(tmp_path / "model.safetensors.index.json")
    assert checkpoint.files == [tmp_path / "a.safetensors"] and checkpoint.notes == []
