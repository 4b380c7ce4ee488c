"""Meta ``consolidated.NN.pth`` directories: model-parallel shards written (without torch) from the
real stories260K weights, split by Meta's rules, must read back as the original logical tensors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import torchzip
from llama2c_export import load_legacy
from unshell.errors import CorruptCheckpointError, InconsistentHeaderError, UnsupportedFormatError
from unshell.formats import open_checkpoint
from unshell.formats.meta import open_meta_directory

PARAMS = {
    "dim": 64,
    "n_layers": 5,
    "n_heads": 8,
    "n_kv_heads": 4,
    "vocab_size": -1,
    "multiple_of": 32,
    "norm_eps": 1e-05,
}
COLUMN = ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3")
ROW = ("attention.wo", "feed_forward.w2")


def meta_state(fixtures_dir: Path) -> dict[str, np.ndarray]:
    """stories260K under Meta's names, with the classifier and rope.freqs that Meta files carry."""
    _, state, _ = load_legacy(fixtures_dir / "stories260K.bin")
    meta = {name: array for name, array in state.items() if not name.startswith("freqs_")}
    meta["output.weight"] = state["tok_embeddings.weight"].copy()
    meta["rope.freqs"] = (1.0 / 10000.0 ** (np.arange(0, 8, 2) / 8)).astype(np.float32)
    return meta


def split_axis(name: str, embedding_axis: int) -> int | None:
    if name == "tok_embeddings.weight":
        return embedding_axis
    if name == "output.weight" or any(name.endswith(f"{kind}.weight") for kind in COLUMN):
        return 0
    if any(name.endswith(f"{kind}.weight") for kind in ROW):
        return 1
    return None  # norms and rope.freqs are replicated


def write_meta_directory(
    directory: Path,
    state: dict[str, np.ndarray],
    shards: int,
    *,
    embedding_axis: int = 1,
    params: dict[str, object] | None = PARAMS,
    dtype: str | None = None,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(shards):
        shard = {}
        for name, array in state.items():
            axis = split_axis(name, embedding_axis)
            shard[name] = array if axis is None else np.array_split(array, shards, axis=axis)[index]
        dtypes = dict.fromkeys(shard, dtype) if dtype else None
        torchzip.save(directory / f"consolidated.{index:02d}.pth", torchzip.state_dict_refs(shard, dtypes))
    if params is not None:
        (directory / "params.json").write_text(json.dumps(params))


@pytest.mark.parametrize(("embedding_axis", "generation"), [(1, "Llama 1/2"), (0, "Llama 3")])
def test_two_shards_read_back_as_the_original_tensors(
    tmp_path: Path, fixtures_dir: Path, embedding_axis: int, generation: str
) -> None:
    state = meta_state(fixtures_dir)
    directory = tmp_path / "llama"
    write_meta_directory(directory, state, 2, embedding_axis=embedding_axis)

    checkpoint = open_checkpoint(directory)

    assert checkpoint.format == "meta-pth", generation
    assert checkpoint.layout == "directory", "params.json and no config.json: not a Hugging Face folder"
    assert checkpoint.files == [directory / "consolidated.00.pth", directory / "consolidated.01.pth"]
    assert checkpoint.metadata["params"] == PARAMS
    assert checkpoint.sidecars["params"] == directory / "params.json"
    assert set(checkpoint.tensors) == set(state)
    for name, array in state.items():
        info = checkpoint.info(name)
        axis = split_axis(name, embedding_axis)
        assert info.shape == array.shape, name
        assert len(info.parts) == (0 if axis is None else 2), name
        if axis is not None:
            assert info.concat_axis == axis, name
            assert info.nbytes == array.nbytes
        assert np.array_equal(checkpoint.read(name), array), name


def test_bf16_shards_and_no_params(tmp_path: Path, fixtures_dir: Path) -> None:
    """Without params.json the model width comes from wq, which is never split along its inputs."""
    state = meta_state(fixtures_dir)
    directory = tmp_path / "bf16"
    write_meta_directory(directory, state, 2, embedding_axis=0, params=None, dtype="BF16")

    checkpoint = open_meta_directory(directory)

    assert checkpoint.layout == "sharded" and checkpoint.metadata["params"] == {}
    assert any("no params.json" in note for note in checkpoint.notes)
    assert checkpoint.info("tok_embeddings.weight").concat_axis == 0
    for name, array in state.items():
        truncated = ((array.astype(np.float32).view(np.uint32) >> 16) << 16).view(np.float32)
        assert checkpoint.info(name).dtype == "BF16"
        assert np.array_equal(checkpoint.read(name), truncated), name


def test_four_shards_with_uneven_feed_forward(tmp_path: Path, fixtures_dir: Path) -> None:
    state = meta_state(fixtures_dir)
    directory = tmp_path / "four"
    write_meta_directory(directory, state, 4)  # hidden 172 splits 43 x 4; embedding 64 splits 16 x 4
    checkpoint = open_meta_directory(directory)
    assert len(checkpoint.info("layers.2.feed_forward.w2.weight").parts) == 4
    for name in ("layers.2.feed_forward.w2.weight", "tok_embeddings.weight", "layers.4.attention.wk.weight"):
        assert np.array_equal(checkpoint.read(name), state[name])


def test_single_shard(tmp_path: Path, fixtures_dir: Path) -> None:
    state = meta_state(fixtures_dir)
    directory = tmp_path / "one"
    write_meta_directory(directory, state, 1)
    checkpoint = open_meta_directory(directory)
    assert checkpoint.layout == "file" and not checkpoint.info("output.weight").parts
    assert np.array_equal(
        checkpoint.read("layers.0.attention.wq.weight"), state["layers.0.attention.wq.weight"]
    )


def test_shards_that_disagree(tmp_path: Path, fixtures_dir: Path) -> None:
    state = meta_state(fixtures_dir)
    directory = tmp_path / "missing"
    write_meta_directory(directory, state, 2)
    partial = {name: array for name, array in state.items() if name != "norm.weight"}
    torchzip.save(directory / "consolidated.01.pth", torchzip.state_dict_refs(partial))
    with pytest.raises(InconsistentHeaderError, match="different tensors"):
        open_meta_directory(directory)

    replicated = tmp_path / "replicated"
    write_meta_directory(replicated, {"norm.weight": np.ones(64, np.float32)}, 1)
    torchzip.save(
        replicated / "consolidated.01.pth", torchzip.state_dict_refs({"norm.weight": np.ones(32, np.float32)})
    )
    with pytest.raises(InconsistentHeaderError, match="replicated"):
        open_meta_directory(replicated)

    ragged = tmp_path / "ragged"
    write_meta_directory(ragged, {"output.weight": np.ones((4, 64), np.float32)}, 1)
    torchzip.save(
        ragged / "consolidated.01.pth",
        torchzip.state_dict_refs({"output.weight": np.ones((4, 32), np.float32)}),
    )
    with pytest.raises(InconsistentHeaderError, match="do not concatenate"):
        open_meta_directory(ragged)

    unknown = tmp_path / "unknown"
    write_meta_directory(unknown, {"vision.proj.weight": np.ones((4, 4), np.float32)}, 2)
    with pytest.raises(UnsupportedFormatError, match="no known sharding rule"):
        open_meta_directory(unknown)


def test_gap_in_shard_numbers(tmp_path: Path, fixtures_dir: Path) -> None:
    directory = tmp_path / "gap"
    write_meta_directory(directory, {"norm.weight": np.ones(64, np.float32)}, 2)
    (directory / "consolidated.01.pth").rename(directory / "consolidated.03.pth")
    with pytest.raises(CorruptCheckpointError, match=r"numbered \[0, 3\]"):
        open_meta_directory(directory)
