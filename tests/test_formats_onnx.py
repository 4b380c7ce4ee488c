"""ONNX reader against the ``onnx`` package (``onnx.load`` + ``numpy_helper.to_array``) as the oracle."""

from __future__ import annotations

import contextlib
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hostile_gguf_onnx as hostile
from artifacts import fetch
from unshell.errors import CorruptCheckpointError, UnshellError
from unshell.formats import detect_format, open_checkpoint
from unshell.formats.base import Checkpoint, TensorInfo
from unshell.formats.onnx import decode_varint_tensor, read_onnx


def oracle_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every initializer and Constant-node value, as the onnx package decodes it."""
    model = onnx.load(str(path))
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            (attribute,) = node.attribute
            tensors[node.output[0]] = numpy_helper.to_array(attribute.t)
    return tensors


def assert_same_values(mine: np.ndarray, expected: np.ndarray, name: str) -> None:
    if (
        expected.dtype.kind == "V"
        or expected.dtype.name.startswith("float8")
        or expected.dtype.name == "bfloat16"
    ):
        expected = expected.astype(np.float32)  # ml_dtypes types: unshell widens them to float32
    assert mine.dtype == expected.dtype, name
    assert mine.shape == expected.shape, name
    assert np.array_equal(
        mine.reshape(-1).view(np.uint8), np.ascontiguousarray(expected).reshape(-1).view(np.uint8)
    ), name


def assert_matches_oracle(checkpoint: Checkpoint, path: Path) -> None:
    expected = oracle_tensors(path)
    components = getattr(checkpoint, "components", {})
    folded = {n: i for n, i in checkpoint.tensors.items() if i.extra.get("dequantize")}
    assert set(checkpoint.tensors) - set(folded) | set(components) == set(expected)
    for name, values in expected.items():
        if name in components:
            assert_same_values(checkpoint._decode(components[name]), values, name)  # type: ignore[attr-defined]
        else:
            assert_same_values(checkpoint.read(name), values, name)
    # A folded tensor is what the graph computes: Mul(Cast(q), scale), evaluated here with numpy
    # on the onnx package's arrays.
    for name, info in folded.items():
        spec = info.extra["dequantize"]
        quantized = next(n for n, i in components.items() if i.offset == info.offset and i.file == info.file)
        want = expected[quantized].astype(np.float32) * np.reshape(
            expected[spec["scale"]], spec["scale_shape"]
        )
        np.testing.assert_array_equal(checkpoint.read(name), want, err_msg=name)


# -- real exported models -----------------------------------------------------------------------


def test_minilm_int8_initializers_equal_onnx() -> None:
    path = fetch("minilm_int8_onnx")
    started = time.perf_counter()
    checkpoint = read_onnx(path)
    assert time.perf_counter() - started < 1.0
    with checkpoint:
        assert checkpoint.format == "onnx" and checkpoint.files == [path]
        assert checkpoint.metadata["onnx"] == {
            "ir_version": 10,
            "producer_name": "pytorch",
            "producer_version": "2.11.0+cpu",
            "opset": {"ai.onnx": 17},
            "metadata_props": {},
            "graph_name": "main_graph",
        }
        # 160 initializers, of which 38 int8 weights each fold with its scale into one tensor.
        assert len(checkpoint) == 160 - 38 and len(checkpoint.components) == 2 * 38 and not checkpoint.notes
        dtypes = sorted({t.dtype for t in checkpoint.tensors.values()})
        assert dtypes == ["BOOL", "F32", "I64", "I8"]
        assert all(t.extra["onnx_source"] == "initializer" for t in checkpoint.tensors.values())
        assert_matches_oracle(checkpoint, path)


def test_paraphrase_minilm_initializers_and_constants_equal_onnx() -> None:
    path = fetch("paraphrase_minilm_onnx")
    with read_onnx(path) as checkpoint:
        meta = checkpoint.metadata["onnx"]
        assert (meta["producer_name"], meta["producer_version"], meta["opset"]) == (
            "pytorch",
            "2.3.0",
            {"ai.onnx": 17},
        )
        sources = [t.extra["onnx_source"] for t in checkpoint.tensors.values()]
        assert (sources.count("initializer"), sources.count("constant")) == (53, 112)
        first = next(iter(checkpoint.tensors.values()))
        assert first.name == "model.0.auto_model.embeddings.word_embeddings.weight"
        assert (first.dtype, first.shape) == ("F32", (30522, 384))
        assert checkpoint.info("onnx::Slice_65").extra["onnx_source"] == "constant"
        assert_matches_oracle(checkpoint, path)


# -- models built with onnx.helper ---------------------------------------------------------------


def built_model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    initializers = [
        numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "raw_f32"),
        numpy_helper.from_array(rng.standard_normal(5).astype(np.float16), "raw_f16"),
        numpy_helper.from_array(np.array([[True, False, True]]), "raw_bool"),
        helper.make_tensor("float_data", TensorProto.FLOAT, [2, 3], [0.5, -1.0, 2.0, 1e-8, 3.0, -0.0]),
        helper.make_tensor("double_data", TensorProto.DOUBLE, [3], [0.1, -2.5, 1e300]),
        helper.make_tensor("int64_data", TensorProto.INT64, [2, 2], [-(1 << 62), -1, 0, (1 << 62) + 3]),
        helper.make_tensor("int32_data", TensorProto.INT32, [3], [-(1 << 31), -7, (1 << 31) - 1]),
        helper.make_tensor("int8_data", TensorProto.INT8, [4], [-128, -1, 0, 127]),
        helper.make_tensor("uint8_data", TensorProto.UINT8, [2], [0, 255]),
        helper.make_tensor("uint16_data", TensorProto.UINT16, [2], [0, 65535]),
        helper.make_tensor("bool_data", TensorProto.BOOL, [3], [True, False, True]),
        helper.make_tensor(
            "half_data", TensorProto.FLOAT16, [3], np.array([1.5, -2.0, 65504.0], dtype=np.float16)
        ),
        helper.make_tensor("bf16_data", TensorProto.BFLOAT16, [2], [1.5, -3.25]),
        helper.make_tensor("f8_data", TensorProto.FLOAT8E4M3FN, [3], [0.5, -2.0, 448.0]),
        helper.make_tensor("uint64_data", TensorProto.UINT64, [2], [1, (1 << 63) + 5]),
        helper.make_tensor("uint32_data", TensorProto.UINT32, [2], [7, (1 << 32) - 1]),
        helper.make_tensor("empty", TensorProto.FLOAT, [0, 3], []),
        helper.make_tensor("scalar", TensorProto.FLOAT, [], [42.0]),
    ]
    constant = helper.make_node(
        "Constant",
        [],
        ["const_out"],
        value=numpy_helper.from_array(np.arange(6, dtype=np.int64).reshape(2, 3)),
    )
    identity = helper.make_node("Identity", ["raw_f32"], ["y"])
    graph = helper.make_graph(
        [constant, identity],
        "built",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 6])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph, producer_name="unshell-tests", opset_imports=[helper.make_opsetid("", 17)]
    )
    model.producer_version = "0.1"
    helper.set_model_props(model, {"license": "MIT"})
    return model


def test_model_built_with_onnx_helper(tmp_path: Path) -> None:
    path = tmp_path / "built.onnx"
    onnx.save(built_model(), str(path))
    with read_onnx(path) as checkpoint:
        meta = checkpoint.metadata["onnx"]
        assert meta["graph_name"] == "built" and meta["producer_name"] == "unshell-tests"
        assert meta["producer_version"] == "0.1" and meta["metadata_props"] == {"license": "MIT"}
        assert checkpoint.info("const_out").extra["onnx_source"] == "constant"
        assert checkpoint.info("int64_data").extra["encoding"] == "varint"
        assert "encoding" not in checkpoint.info("float_data").extra  # packed floats are read in place
        assert checkpoint.read("uint64_data").tolist() == [1, (1 << 63) + 5]
        assert checkpoint.read("f8_data").tolist() == [0.5, -2.0, 448.0]
        assert checkpoint.read("scalar").shape == ()
        assert_matches_oracle(checkpoint, path)


def test_external_data_beside_the_model(tmp_path: Path) -> None:
    model = built_model()
    onnx.save_model(
        model,
        str(tmp_path / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    path = tmp_path / "model.onnx"
    with read_onnx(path) as checkpoint:
        assert checkpoint.files == [path, (tmp_path / "weights.bin").resolve()]
        assert checkpoint.info("raw_f32").file.name == "weights.bin"
        assert_matches_oracle(checkpoint, path)


def test_external_data_in_a_subfolder_and_a_truncated_data_file(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.float32)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "w.bin").write_bytes(b"\xff" * 16 + values.tobytes())
    tensor = hostile.onnx_tensor(
        "w", hostile.ONNX_FLOAT, [3, 4], external={"location": "data/w.bin", "offset": "16", "length": "48"}
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(hostile.onnx_model([tensor]))
    with read_onnx(path) as checkpoint:
        assert checkpoint.read("w").tolist() == values.reshape(3, 4).tolist()
    (tmp_path / "data" / "w.bin").write_bytes(b"\xff" * 16 + values.tobytes()[:40])
    with pytest.raises(CorruptCheckpointError, match=r"w\.bin: truncated"):  # cut short: exit 14
        read_onnx(path)


def test_string_tensors_are_skipped_with_a_note(tmp_path: Path) -> None:
    model = built_model()
    vocab: list[bytes] = [b"a", b"b"]
    model.graph.initializer.append(helper.make_tensor("vocab", TensorProto.STRING, [2], vocab))  # type: ignore[arg-type]
    path = tmp_path / "strings.onnx"
    onnx.save(model, str(path))
    with read_onnx(path) as checkpoint:
        assert "vocab" not in checkpoint
        assert checkpoint.notes == ["tensor 'vocab' skipped: ONNX STRING tensors are not read"]


def test_hand_encoded_small_model(tmp_path: Path) -> None:
    path = tmp_path / "small.onnx"
    path.write_bytes(hostile.small_onnx_model())
    onnx.checker.check_model(str(path))  # the encoder writes what the onnx package accepts
    with read_onnx(path) as checkpoint:
        assert checkpoint.read("w").tolist() == [[0, 1, 2], [3, 4, 5]]
        assert checkpoint.read("b").tolist() == [0.5, 1.5, 2.5]
        assert_matches_oracle(checkpoint, path)


def test_dispatcher_routes_onnx_by_extension(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(built_model(), str(path))
    assert detect_format(path) == "onnx"
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.format == "onnx"
        assert checkpoint.read("int8_data").tolist() == [-128, -1, 0, 127]


# -- varints and hostile bytes -------------------------------------------------------------------


def test_varint_decoding_handles_ten_byte_negatives_and_rejects_cut_runs() -> None:
    values = [0, 1, 127, 128, 300, -1, -(1 << 63), (1 << 63) - 1]
    raw = np.frombuffer(b"".join(hostile.varint(v) for v in values), dtype=np.uint8)
    info = read_info("I64", (8,))
    assert decode_varint_tensor(raw, info).tolist() == values
    with pytest.raises(CorruptCheckpointError):
        decode_varint_tensor(raw[:-1], info)
    with pytest.raises(CorruptCheckpointError):
        decode_varint_tensor(np.frombuffer(b"\x80" * 11 + b"\x01", dtype=np.uint8), read_info("I64", (1,)))


def read_info(dtype: str, shape: tuple[int, ...]) -> TensorInfo:
    return TensorInfo("t", dtype, shape, Path("unused"), 0, 0, extra={"encoding": "varint"})


ONNX_CASES = sorted(hostile._onnx_cases())


@pytest.mark.parametrize("name", ONNX_CASES, ids=lambda n: n.removesuffix(".onnx"))
def test_hostile_onnx_raises_its_error_quickly(tmp_path: Path, name: str) -> None:
    cases = hostile.make_hostile_files(tmp_path)
    path = tmp_path / f"onnx_{name}"
    started = time.perf_counter()
    with pytest.raises(Exception) as caught:
        read_onnx(path)
    assert type(caught.value) is cases[f"onnx_{name}"], str(caught.value)
    assert "\n" not in str(caught.value)
    assert time.perf_counter() - started < 0.5


def test_external_data_may_not_leave_the_model_directory(tmp_path: Path) -> None:
    cases = hostile.make_hostile_files(tmp_path)
    assert (tmp_path / "outside.bin").stat().st_size == 24  # the target exists and has the right size
    with pytest.raises(Exception, match="outside the model's directory") as caught:
        read_onnx(tmp_path / "onnx_escape" / "model.onnx")
    assert type(caught.value) is cases["onnx_escape/model.onnx"]


def test_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(struct.pack("<6f", *range(6)))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "link.bin").symlink_to(outside)
    path = model_dir / "m.onnx"
    path.write_bytes(
        hostile.onnx_model(
            [hostile.onnx_tensor("w", hostile.ONNX_FLOAT, [6], external={"location": "link.bin"})]
        )
    )
    with pytest.raises(Exception, match="outside the model's directory"):
        read_onnx(path)
    shutil.copyfile(outside, model_dir / "real.bin")
    path.write_bytes(
        hostile.onnx_model(
            [hostile.onnx_tensor("w", hostile.ONNX_FLOAT, [6], external={"location": "real.bin"})]
        )
    )
    with read_onnx(path) as checkpoint:
        assert checkpoint.read("w").tolist() == list(range(6))


def test_corrupted_models_raise_only_unshell_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    opened = 0
    for mutated in hostile.mutations(built_model().SerializeToString(), 400, seed=9):
        path.write_bytes(mutated)
        try:
            with read_onnx(path) as checkpoint:
                opened += 1
                for name in checkpoint.tensors:
                    with contextlib.suppress(UnshellError):
                        checkpoint.read(name)
        except UnshellError as error:
            assert "\n" not in str(error)
    assert 0 < opened < 400
