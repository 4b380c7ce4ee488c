"""PyTorch zip reader: the real llama2xs checkpoint, torch-layout files written without torch, and
pickles that would run code under a normal unpickler."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import torchzip
from hostile_files import PWNED_MARKER, make_hostile_files
from unshell.errors import (
    NotACheckpointError,
    ResourceLimitError,
    UnsafePickleError,
    UnsupportedFormatError,
)
from unshell.formats import open_checkpoint, pytorch
from unshell.formats.llama2c import read_llama2c
from unshell.formats.pytorch import read_pytorch, scan_pickle


def test_real_checkpoint_matches_its_llama2c_export(fixtures_dir: Path) -> None:
    checkpoint = read_pytorch(fixtures_dir / "llama2xs.ckpt.pt")
    export = read_llama2c(fixtures_dir / "llama2xs.model.bin")

    assert checkpoint.format == "pytorch" and checkpoint.layout == "file"
    assert len(checkpoint) == 48
    assert not any(name.startswith("_orig_mod.") for name in checkpoint.tensors)
    # The .pt holds the tied classifier as a second name for the embedding's storage; the export
    # holds the RoPE tables, which the model registers as non-persistent buffers.
    assert set(checkpoint.tensors) - set(export.tensors) == {"output.weight"}
    assert set(export.tensors) - set(checkpoint.tensors) == {"freqs_cos", "freqs_sin"}
    for name in checkpoint.tensors:
        reference = export.read("tok_embeddings.weight" if name == "output.weight" else name)
        value = checkpoint.read(name)
        assert value.dtype == np.float32
        assert np.array_equal(value, reference), name
    assert checkpoint.info("output.weight").offset == checkpoint.info("tok_embeddings.weight").offset
    # torch pads local zip headers so that every storage starts 64-byte aligned.
    assert all(info.offset % 64 == 0 for info in checkpoint.tensors.values())


def test_real_checkpoint_metadata_keeps_training_arguments(fixtures_dir: Path) -> None:
    checkpoint = read_pytorch(fixtures_dir / "llama2xs.ckpt.pt")
    metadata = checkpoint.metadata["pytorch"]

    assert metadata["model_args"] == {
        "dim": 64,
        "n_layers": 5,
        "n_heads": 8,
        "n_kv_heads": 4,
        "vocab_size": 512,
        "multiple_of": 32,
        "max_seq_len": 256,
        "dropout": 0.0,
    }
    assert metadata["iter_num"] == 500
    assert metadata["config"]["dtype"] == "float16" and metadata["config"]["max_iters"] == 500
    assert "optimizer" not in metadata, "optimizer state is dropped"
    assert "best_val_loss" not in metadata, "tensors are not metadata"
    assert any("under 'model'" in note for note in checkpoint.notes)
    assert any("tok_embeddings.weight, output.weight" in note for note in checkpoint.notes)


def test_real_pickle_scan_counts_opcodes(fixtures_dir: Path) -> None:
    with zipfile.ZipFile(fixtures_dir / "llama2xs.ckpt.pt") as archive:
        data = archive.read("ckpt/data.pkl")
    assert scan_pickle(data, where="ckpt") == 7068  # as counted by pickletools.dis


def _views_checkpoint(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((3, 5)).astype(np.float32)
    storage = torchzip.Storage("7", "F32", matrix.tobytes())
    bf16_bits = (rng.standard_normal(6).astype(np.float32).view(np.uint32) >> 16).astype("<u2")
    fp8 = np.array([0x38, 0xB8, 0x40, 0x00], dtype=np.uint8)  # 1.0, -1.0, 2.0, 0.0 in E4M3
    state: OrderedDict[str, Any] = OrderedDict(
        [
            ("_orig_mod.dense.weight", torchzip.TensorRef(storage, (3, 5))),
            ("_orig_mod.dense.weight_t", torchzip.TensorRef(storage, (5, 3), stride=(1, 5))),
            ("_orig_mod.row", torchzip.TensorRef(storage, (5,), offset=5)),
            ("_orig_mod.column", torchzip.TensorRef(storage, (3,), stride=(5,), offset=2)),
            (
                "_orig_mod.half",
                torchzip.TensorRef(torchzip.Storage("1", "F16", np.arange(4, dtype="<f2").tobytes()), (2, 2)),
            ),
            ("_orig_mod.bf16", torchzip.TensorRef(torchzip.Storage("2", "BF16", bf16_bits.tobytes()), (6,))),
            (
                "_orig_mod.steps",
                torchzip.TensorRef(torchzip.Storage("3", "I64", np.array([42], "<i8").tobytes()), ()),
            ),
            ("_orig_mod.mask", torchzip.TensorRef(torchzip.Storage("4", "BOOL", b"\x01\x00"), (2,))),
            ("_orig_mod.empty", torchzip.TensorRef(torchzip.Storage("5", "F32", b""), (0, 3))),
            (
                "_orig_mod.fp8",
                torchzip.TensorV3(torchzip.Storage("6", "U8", fp8.tobytes()), (4,), "float8_e4m3fn"),
            ),
        ]
    )
    root = {
        "state_dict": state,
        "optimizer": {
            "state": {0: {"exp_avg": torchzip.TensorRef(storage, (3, 5))}},
            "param_groups": [{"lr": 0.1}],
        },
        "hyper_parameters": {"lr": 0.001, "layers": [1, 2], "name": "tiny", "nested": {"deep": True}},
        "epoch": 3,
    }
    path = tmp_path / "views.ckpt"
    torchzip.save(path, root, top="lightning_model")
    expected = {
        "dense.weight": matrix,
        "dense.weight_t": matrix.T,
        "row": matrix[1],
        "column": matrix[:, 2],
        "half": np.arange(4, dtype=np.float16).reshape(2, 2),
        "bf16": (bf16_bits.astype(np.uint32) << 16).view(np.float32),
        "steps": np.array(42),
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 3), np.float32),
        "fp8": np.array([1.0, -1.0, 2.0, 0.0], np.float32),
    }
    return path, expected


def test_views_dtypes_and_nesting(tmp_path: Path) -> None:
    path, expected = _views_checkpoint(tmp_path)
    checkpoint = read_pytorch(path)

    assert list(checkpoint.tensors) == list(expected), "compile prefixes stripped, order kept"
    for name, array in expected.items():
        value = checkpoint.read(name)
        assert value.shape == array.shape, name
        assert np.array_equal(value, array), name
    assert checkpoint.info("dense.weight_t").strides == (1, 5)
    assert checkpoint.info("column").strides == (5,)
    assert checkpoint.info("row").strides is None, "a contiguous slice needs no strides"
    assert checkpoint.info("dense.weight").strides is None
    assert checkpoint.info("row").offset == checkpoint.info("dense.weight").offset + 20
    assert checkpoint.metadata["pytorch"] == {
        "hyper_parameters": {"lr": 0.001, "layers": [1, 2], "name": "tiny", "nested": {"deep": True}},
        "epoch": 3,
    }
    assert any("'state_dict'" in note for note in checkpoint.notes)
    assert any("_orig_mod." in note for note in checkpoint.notes)


def _call(writer: torchzip.PickleWriter, module: str, name: str, *args: Any) -> None:
    writer.global_(torchzip.Global(module, name))
    writer.emit(tuple(args))
    writer.out += b"R"


def test_parameters_and_subclass_rebuilds(tmp_path: Path) -> None:
    """``nn.Parameter`` entries pickle as _rebuild_parameter or _rebuild_from_type_v2 wrappers."""
    weights = np.arange(6, dtype=np.float32)
    storage = torchzip.Storage("0", "F32", weights.tobytes())
    writer = torchzip.PickleWriter()
    writer.out += b"}("
    writer.emit("param")
    _call(
        writer, "torch._utils", "_rebuild_parameter", torchzip.TensorRef(storage, (6,)), True, OrderedDict()
    )
    writer.emit("subclass")
    writer.global_(torchzip.Global("torch._tensor", "_rebuild_from_type_v2"))
    writer.out += b"("
    writer.global_(torchzip.Global("torch._utils", "_rebuild_tensor_v2"))
    writer.global_(torchzip.Global("torch.nn.parameter", "Parameter"))
    writer.out += b"("
    writer.persistent_storage(storage, "FloatStorage")
    for argument in (2, (4,), (1,), False, OrderedDict()):
        writer.emit(argument)
    writer.out += b"t"
    writer.emit({})  # the subclass state
    writer.out += b"tRu"
    path = tmp_path / "params.pt"
    torchzip.write_zip(path, writer.finish(), {"0": weights.tobytes()})

    checkpoint = read_pytorch(path)

    assert np.array_equal(checkpoint.read("param"), weights)
    assert np.array_equal(checkpoint.read("subclass"), weights[2:])


def test_protocol2_sets_and_bytes_load_but_stay_out_of_metadata(tmp_path: Path) -> None:
    weights = np.ones(2, np.float32)
    writer = torchzip.PickleWriter()
    writer.out += b"}("
    writer.emit("model")
    writer.emit(torchzip.state_dict_refs({"w": weights}))
    # What the pickle module writes at protocol 2 for a set, bytes and a frozenset.
    writer.emit("tags")
    _call(writer, "__builtin__", "set", ["a", "b"])
    writer.emit("blob")
    _call(writer, "_codecs", "encode", "\x00\xff", "latin1")
    writer.emit("frozen")
    _call(writer, "__builtin__", "frozenset", [1])
    writer.emit("nothing")
    _call(writer, "__builtin__", "bytes")  # how protocol 2 writes b""
    writer.emit("step")
    writer.emit(9)
    writer.out += b"u"
    path = tmp_path / "sets.pt"
    torchzip.write_zip(path, writer.finish(), {"0": weights.tobytes()})

    checkpoint = read_pytorch(path)

    assert np.array_equal(checkpoint.read("w"), weights)
    assert checkpoint.metadata["pytorch"] == {"step": 9}


def _payload_pickle(marker: Path, protocol: int) -> bytes:
    class RunsCode:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return os.system, (f"touch {marker}",)

    return pickle.dumps({"model": OrderedDict(w=RunsCode())}, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4])
def test_code_running_pickle_is_refused_and_never_runs(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned_marker"
    payload = _payload_pickle(marker, protocol)
    # First prove that the payload is real: a normal unpickler runs the command.
    proof = tmp_path / "proof_marker"
    subprocess.run(
        [sys.executable, "-c", "import pickle,sys; pickle.loads(sys.stdin.buffer.read())"],
        input=_payload_pickle(proof, protocol),
        check=True,
    )
    assert proof.exists()

    path = tmp_path / "evil.pt"
    torchzip.write_zip(path, payload, {})
    with pytest.raises(UnsafePickleError, match="system"):
        open_checkpoint(path)
    assert not marker.exists()


def test_hostile_corpus_direct(tmp_path: Path) -> None:
    expected = {name: error for name, error in make_hostile_files(tmp_path).items() if name.startswith("pt_")}
    assert len(expected) >= 30
    for name, error in expected.items():
        started = time.perf_counter()
        with pytest.raises(error) as raised:
            read_pytorch(tmp_path / name)
        assert type(raised.value) is error, (name, raised.value)
        assert time.perf_counter() - started < 1.0, name
        assert "\n" not in str(raised.value)
    assert not (tmp_path / PWNED_MARKER).exists()


def test_pickle_size_and_opcode_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixtures_dir: Path
) -> None:
    monkeypatch.setattr(pytorch, "MAX_PICKLE_BYTES", 1000)
    with pytest.raises(ResourceLimitError, match=r"data\.pkl is 24408 bytes"):
        read_pytorch(fixtures_dir / "llama2xs.ckpt.pt")
    monkeypatch.setattr(pytorch, "MAX_PICKLE_BYTES", 100_000_000)
    monkeypatch.setattr(pytorch, "MAX_PICKLE_OPCODES", 1000)
    with pytest.raises(ResourceLimitError, match="more than 1000 pickle opcodes"):
        read_pytorch(fixtures_dir / "llama2xs.ckpt.pt")


def test_deep_and_cyclic_metadata_is_bounded(tmp_path: Path) -> None:
    weights = np.ones(3, np.float32)
    writer = torchzip.PickleWriter()
    writer.out += b"}("
    writer.emit("model")
    writer.emit(torchzip.state_dict_refs({"w": weights}))
    writer.emit("deep")
    writer.out += b"]" * 20_000 + b"a" * 19_999
    writer.emit("cycle")
    writer.out += b"]\x94h\x00a"  # a list that contains itself (MEMOIZE, BINGET 0, APPEND)
    writer.out += b"u"
    path = tmp_path / "deep.pt"
    torchzip.write_zip(path, writer.finish(), {"0": weights.tobytes()})

    started = time.perf_counter()
    checkpoint = read_pytorch(path)

    assert time.perf_counter() - started < 1.0
    assert np.array_equal(checkpoint.read("w"), weights)
    assert checkpoint.metadata["pytorch"]["cycle"] == []
    depth, node = 0, checkpoint.metadata["pytorch"]["deep"]
    while node:
        node, depth = node[0], depth + 1
    assert depth <= pytorch.MAX_METADATA_DEPTH


def test_big_endian_and_non_checkpoints(tmp_path: Path) -> None:
    weights = np.ones(2, np.float32)
    path = tmp_path / "big.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", torchzip.pickle_bytes(torchzip.state_dict_refs({"w": weights})))
        archive.writestr("archive/byteorder", "big")
        archive.writestr("archive/data/0", weights.astype(">f4").tobytes())
    with pytest.raises(UnsupportedFormatError, match="big-endian"):
        read_pytorch(path)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(NotACheckpointError):
        read_pytorch(text)
