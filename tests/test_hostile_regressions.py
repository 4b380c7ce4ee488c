"""Regression tests for the holes an adversarial pass found (issue 13): each builds its hostile
input in a few lines and checks the documented outcome (one line, the right exit code, a bound
that holds) where the code used to crash with exit 70, grow to gigabytes or accept the input.

The README's limits table is checked against the constants in the code here too, so the two
cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from foreign_layouts import make_tiny_llama
from unshell.cli.main import main
from unshell.declared import read_declared
from unshell.formats import open_checkpoint
from unshell.formats.safetensors import write_safetensors

ROOT = Path(__file__).resolve().parent.parent


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the CLI run in this process, tracebacks off."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.fixture(autouse=True)
def no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNSHELL_DEBUG", raising=False)


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def tiny_model(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / "model.safetensors", {"w": np.zeros(4, np.float32)})
    return directory


# -- C1: card texts ---------------------------------------------------------------------------------


def test_card_licence_that_yaml_reads_as_a_huge_integer_is_not_a_licence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_model(tmp_path / "m")
    (model / "README.md").write_text(
        "---\nlicense: 0x" + "f" * 6000 + "\nmodel_name: 0x" + "e" * 6000 + "\n---\n"
    )
    with open_checkpoint(model) as checkpoint:
        declared = read_declared(checkpoint)
    assert declared.license is None and declared.name is None
    code, out, err = run(["inspect", "--format", "json", str(model)], capsys)
    assert code == 0, err
    assert "license" not in json.loads(out)["declared"]


def test_api_inspect_of_a_card_with_a_huge_integer_licence_is_not_a_500(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from unshell.web import create_app

    model = tiny_model(tmp_path / "m")
    (model / "README.md").write_text("---\nlicense: 0x" + "f" * 6000 + "\n---\n")
    with TestClient(create_app([tmp_path]), base_url="http://127.0.0.1:8000") as client:
        response = client.get("/api/inspect", params={"path": "m"})
    assert response.status_code == 200, response.text
    assert response.json()["format"] == "safetensors"


# -- C5: numbers in config.json, params.json and what convert writes --------------------------------


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("rope_theta", "1" + "0" * 4000),
        ("rms_norm_eps", "1" + "0" * 4000),
        ("rope_theta", "NaN"),
        ("rms_norm_eps", "Infinity"),
        ("rms_norm_eps", "1e400"),
        ("rms_norm_eps", "-1e-5"),
        ("rope_theta", '"10000"'),
        ("hidden_size", "-64"),
        ("num_hidden_layers", "2.5"),
    ],
)
def test_config_numbers_are_checked_when_read_and_convert_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, raw: str
) -> None:
    source = make_tiny_llama(tmp_path / "src")
    config = json.loads((source / "config.json").read_text())
    config[key] = "@@"
    (source / "config.json").write_text(json.dumps(config).replace('"@@"', raw))
    output = tmp_path / "out"
    code, _, err = run(["convert", str(source), "--to", "llama", "-o", str(output), "--no-verify"], capsys)
    assert code == 15, err
    assert f"config.json: {key} is" in one_line_error(err)
    assert not output.exists()
    code, _, err = run(["inspect", str(source)], capsys)
    assert code == 15 and key in one_line_error(err)


def test_declared_hyperparameters_from_any_source_must_be_finite_and_positive() -> None:
    from unshell.conversion import plan
    from unshell.errors import InconsistentHeaderError

    assert plan._number(("a", None), ("b", 2)) == 2.0
    for bad in (float("nan"), float("inf"), -1e-5, 0, "1e-5", 10**4000, True):
        with pytest.raises(InconsistentHeaderError, match=r"GGUF llama\.rope\.freq_base"):
            plan._number(("GGUF llama.rope.freq_base", bad), ("fallback", 10000.0))
    with pytest.raises(InconsistentHeaderError, match="not a whole number"):
        plan._integer(("config max_position_embeddings", 2048.5))


def test_params_json_numbers_are_checked_when_read(tmp_path: Path) -> None:
    import torchzip
    from unshell.errors import InconsistentHeaderError

    folder = tmp_path / "meta"
    folder.mkdir()
    torchzip.save(
        folder / "consolidated.00.pth", torchzip.state_dict_refs({"norm.weight": np.ones(4, np.float32)})
    )
    (folder / "params.json").write_text('{"dim": 4, "n_heads": 1, "norm_eps": NaN, "vocab_size": -1}')
    with pytest.raises(InconsistentHeaderError, match=r"params\.json: norm_eps is nan"):
        open_checkpoint(folder)
    (folder / "params.json").write_text('{"dim": 4, "n_heads": 1, "norm_eps": 1e-5, "vocab_size": -1}')
    with open_checkpoint(folder) as checkpoint:
        assert checkpoint.metadata["params"]["vocab_size"] == -1


# -- C3, C4: library exports and library files -------------------------------------------------------


@pytest.fixture(scope="module")
def library_export(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export of a library holding stories260K's fingerprint."""
    from unshell.library import Library
    from unshell.library.store import add_checkpoint

    folder = tmp_path_factory.mktemp("library")
    with Library(folder / "lib.sqlite") as library:
        add_checkpoint(library, fixtures_dir / "stories260K.bin", name="stories")
        library.export(folder / "export.jsonl")
    return folder / "export.jsonl"


def tampered_export(
    export: Path,
    target: Path,
    *,
    record: dict[str, object] | None = None,
    header: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """A copy of ``export`` whose one record is updated with ``record`` and whose blob's JSON header
    ``header`` edits in place, with every size and checksum recomputed so that only the values
    themselves are wrong."""
    import base64
    import hashlib
    import struct

    from unshell.lineage.fingerprint import MAGIC

    manifest, line, trailer = export.read_text().splitlines()
    entry = json.loads(line)
    blob = base64.b64decode(entry["blob"])
    if header is not None:
        (length,) = struct.unpack_from("<I", blob, len(MAGIC))
        start = len(MAGIC) + 4
        fields = json.loads(blob[start : start + length])
        header(fields)
        encoded = json.dumps(fields).encode()
        blob = MAGIC + struct.pack("<I", len(encoded)) + encoded + blob[start + length :]
    entry.update(
        blob=base64.b64encode(blob).decode(), size=len(blob), sha256=hashlib.sha256(blob).hexdigest()
    )
    line = json.dumps({**entry, **(record or {})}) + "\n"
    end = {**json.loads(trailer), "records_sha256": hashlib.sha256(line.encode()).hexdigest()}
    target.write_text(manifest + "\n" + line + json.dumps(end) + "\n")
    return target


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda header: header.__setitem__(key, value)


def _set_first(key: str, field: str | int, value: object) -> Callable[[dict[str, Any]], None]:
    """Set ``field`` of the first entry of the list or mapping ``header[key]``."""

    def edit(header: dict[str, Any]) -> None:
        items = header[key]
        first = items[0] if isinstance(items, list) else next(iter(items.values()))
        first[field] = value

    return edit


def _set_in(key: str, field: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda header: header[key].__setitem__(field, value)


def _set_numel(header: dict[str, Any]) -> None:
    header["tensor_numels"][0] = 1 << 64


@pytest.mark.parametrize(
    ("record", "header"),
    [
        ({}, _set("hidden", 1 << 64)),
        ({}, _set("layers", 1 << 64)),
        ({}, _set("parameters", 1 << 70)),
        ({}, _set("total_bytes", 1 << 64)),
        ({}, _set_numel),
        ({}, _set_first("units", "std", float("nan"))),
        ({}, _set_first("units", "std", float("inf"))),
        ({}, _set_first("units", "layer", -1)),
        ({}, _set_first("dtypes", "bytes", 1 << 70)),
        ({}, _set_first("dtypes", "parameters", -5)),
        ({}, _set_in("config", "rope_theta", float("inf"))),
        ({"added": 1e400}, None),
        ({"added": float("nan")}, None),
        ({"added": float("inf")}, None),
        ({"added": -5.0}, None),
        ({"added": "yesterday"}, None),
    ],
)
def test_library_import_checks_every_number_and_imports_nothing_on_a_bad_one(
    library_export: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    record: dict[str, object],
    header: Callable[[dict[str, Any]], None] | None,
) -> None:
    export = tampered_export(library_export, tmp_path / "bad.jsonl", record=record, header=header)
    library = tmp_path / "lib.sqlite"
    code, _, err = run(["library", "import", "--library", str(library), str(export)], capsys)
    assert code == 14, err
    one_line_error(err)
    if library.exists():
        from unshell.library import Library

        with Library(library) as opened:
            assert len(opened) == 0


def test_an_untampered_export_still_imports(
    library_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tampered_export(library_export, tmp_path / "same.jsonl")
    library = tmp_path / "lib.sqlite"
    code, _, err = run(["library", "import", "--library", str(library), str(export)], capsys)
    assert code == 0, err
    code, out, err = run(
        ["library", "show", "--library", str(library), "stories", "--format", "json"], capsys
    )
    assert code == 0 and json.loads(out)["name"] == "stories", err


def _damage(library: Path, statement: str, *args: object) -> None:
    import sqlite3

    db = sqlite3.connect(library)
    try:
        db.execute(statement, args)
        db.commit()
    finally:
        db.close()


@pytest.mark.parametrize(
    ("statement", "value", "export_reads_it"),
    [
        ("DROP TABLE content_hashes", None, True),
        ("ALTER TABLE blobs RENAME TO other", None, True),
        ("DROP INDEX fp_hvtf", None, True),
        ("UPDATE fingerprints SET hidden = ?", "abc", False),
        ("UPDATE fingerprints SET layers = ?", -3, False),
        ("UPDATE fingerprints SET family = ?", b"\x00\xff", False),
        ("UPDATE fingerprints SET added = ?", 1e300, True),
        ("UPDATE fingerprints SET added = ?", float("inf"), True),
    ],
)
def test_damaged_library_files_give_one_line_and_exit_14(
    library_export: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    statement: str,
    value: object,
    export_reads_it: bool,
) -> None:
    library = tmp_path / "lib.sqlite"
    assert run(["library", "import", "--library", str(library), str(library_export)], capsys)[0] == 0
    _damage(library, statement, *([] if value is None else [value]))
    commands = [["list"], ["show", "stories"]] + [["export", str(tmp_path / "out.jsonl")]] * export_reads_it
    for command in commands:
        code, _, err = run(["library", command[0], "--library", str(library), *command[1:]], capsys)
        assert code == 14, (command, err)
        one_line_error(err)


def test_a_fingerprint_blob_nested_100000_levels_deep_is_corrupt(
    library_export: Path, tmp_path: Path
) -> None:
    from unshell.errors import CorruptCheckpointError
    from unshell.lineage.fingerprint import MAGIC, Fingerprint

    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(CorruptCheckpointError, match="nested too deeply"):
        Fingerprint.from_bytes(MAGIC + len(deep).to_bytes(4, "little") + deep)


# -- C2, M1, M2, U7: PyTorch zips ------------------------------------------------------------------


def _state_dict_pickle(build_state: bytes) -> bytes:
    """A state dict (an OrderedDict of one tensor) followed by BUILD with ``build_state``, which
    must be opcodes that push one value."""
    import torchzip

    weights = np.arange(16, dtype=np.float32)
    writer = torchzip.PickleWriter()
    writer.emit(torchzip.state_dict_refs({"w": weights}))
    writer.out += build_state + b"b"
    return writer.finish()


def _planted(attribute: str) -> bytes:
    """BUILD state ``{attribute: torch._utils._rebuild_tensor_v2}``."""
    import torchzip

    writer = torchzip.PickleWriter(bytearray())
    writer.out += b"}"
    writer.emit(attribute)
    writer.emit(torchzip.Global("torch._utils", "_rebuild_tensor_v2"))
    writer.out += b"s"
    return bytes(writer.out)


@pytest.mark.parametrize("attribute", ["items", "get", "keys", "values", "__class__"])
def test_build_cannot_plant_attributes_on_an_ordered_dict(tmp_path: Path, attribute: str) -> None:
    import torchzip
    from unshell.errors import UnsafePickleError

    path = tmp_path / "planted.pt"
    weights = np.arange(16, dtype=np.float32).tobytes()
    torchzip.write_zip(path, _state_dict_pickle(_planted(attribute)), {"0": weights})
    with pytest.raises(UnsafePickleError, match=f"sets '{attribute}' on an OrderedDict"):
        open_checkpoint(path)


def test_torch_metadata_attribute_on_a_state_dict_still_loads(tmp_path: Path) -> None:
    import torchzip

    path = tmp_path / "metadata.pt"
    from collections import OrderedDict

    writer = torchzip.PickleWriter(bytearray(b"}"))
    writer.emit("_metadata")
    writer.emit(OrderedDict({"": {"version": 1}}))
    metadata = bytes(writer.out) + b"s"
    torchzip.write_zip(path, _state_dict_pickle(metadata), {"0": np.arange(16, dtype=np.float32).tobytes()})
    with open_checkpoint(path) as checkpoint:
        assert np.array_equal(checkpoint.read("w"), np.arange(16, dtype=np.float32))


def test_a_zero_stride_view_far_larger_than_its_storage_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torchzip

    storage = torchzip.Storage("0", "F32", b"\0" * 64)
    path = tmp_path / "expanded.pt"
    torchzip.save(path, {"w": torchzip.TensorRef(storage, (32768, 16384), stride=(0, 0))})
    code, _, err = run(["library", "add", "--library", str(tmp_path / "lib.sqlite"), str(path)], capsys)
    assert code == 17, err
    assert "more than 16 reads of each stored element" in one_line_error(err)


def test_a_modestly_expanded_view_still_reads(tmp_path: Path) -> None:
    import torchzip

    row = np.arange(16, dtype=np.float32)
    storage = torchzip.Storage("0", "F32", row.tobytes())
    path = tmp_path / "expanded.pt"
    torchzip.save(path, {"w": torchzip.TensorRef(storage, (4, 16), stride=(0, 1))})
    with open_checkpoint(path) as checkpoint:
        assert np.array_equal(checkpoint.read("w"), np.tile(row, (4, 1)))


def test_a_deflated_pickle_inflating_past_its_ratio_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import zipfile

    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02(" + b"]" * 7_999_990 + b"l.")
    assert path.stat().st_size < 10_000
    code, _, err = run(["inspect", str(path)], capsys)
    assert code == 17, err
    assert "at most 64 times that" in one_line_error(err)


def test_a_pickle_of_millions_of_containers_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torchzip

    path = tmp_path / "containers.pt"
    torchzip.write_zip(path, b"\x80\x02(" + b"\x8f" * 2_000_001 + b"l.", {})  # EMPTY_SET: 216 bytes each
    code, _, err = run(["inspect", str(path)], capsys)
    assert code == 17, err
    assert "more than 2000000 lists, dicts, tuples and sets" in one_line_error(err)


def test_the_state_dict_search_queues_a_bounded_number_of_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    import tracemalloc

    from unshell.formats import pytorch

    monkeypatch.setattr(pytorch, "MAX_SEARCH_NODES", 1000)
    root = [[index] for index in range(300_000)]
    tracemalloc.start()
    visited = sum(1 for _ in pytorch._walk(root))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert visited == 1000
    assert peak < 2_000_000, peak


def test_a_zip_holding_one_member_twice_is_refused(tmp_path: Path) -> None:
    import warnings
    import zipfile

    import torchzip
    from unshell.errors import InconsistentHeaderError

    path = tmp_path / "twice.pt"
    weights = np.arange(16, dtype=np.float32)
    torchzip.save(path, torchzip.state_dict_refs({"w": weights}))
    with warnings.catch_warnings(), zipfile.ZipFile(path, "a") as archive:
        warnings.simplefilter("ignore")  # zipfile warns "Duplicate name": that is the point
        archive.writestr("archive/data/0", (weights + 1).tobytes())
    with pytest.raises(InconsistentHeaderError, match="holds 'archive/data/0' twice"):
        open_checkpoint(path)


# -- M3, U2: tokenizer files -------------------------------------------------------------------------


def _sparse(path: Path, size: int) -> Path:
    """A file of ``size`` zero bytes that takes no disk space (the size check comes before reading)."""
    with path.open("wb") as handle:
        handle.truncate(size)
    return path


def test_line_tokenizer_files_over_their_cap_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from unshell.tokenizers.describe import MAX_LINE_TOKENIZER_BYTES

    (tmp_path / "vocab.json").write_text('{"a": 0, "b": 1}')
    for name in ("merges.txt", "cl100k.tiktoken"):
        _sparse(tmp_path / name, MAX_LINE_TOKENIZER_BYTES + 1)
        code, _, err = run(["inspect", str(tmp_path / name)], capsys)
        assert code == 17, err
        assert f"over the {MAX_LINE_TOKENIZER_BYTES}-byte tokenizer limit" in one_line_error(err)


def test_a_tiktoken_file_named_tokenizer_model_has_the_line_cap(tmp_path: Path) -> None:
    from unshell.errors import ResourceLimitError
    from unshell.tokenizers.describe import MAX_LINE_TOKENIZER_BYTES
    from unshell.tokenizers.vocab import read_vocabulary

    line = b"YQ== 0\n"
    (tmp_path / "tokenizer.model").write_bytes(line * (MAX_LINE_TOKENIZER_BYTES // len(line) + 1))
    with pytest.raises(ResourceLimitError, match="a tiktoken rank file"):
        read_vocabulary(tmp_path / "tokenizer.model")


def test_more_merge_rules_than_token_ids_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unshell.errors import ResourceLimitError
    from unshell.tokenizers import vocab

    monkeypatch.setattr(vocab, "MAX_VOCABULARY", 100)
    model = {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"] * 101}
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": model}))
    (tmp_path / "vocab.json").write_text('{"a": 0, "b": 1}')
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "a b\n" * 101)
    for name in ("tokenizer.json", "merges.txt"):
        with pytest.raises(ResourceLimitError, match="101 merge rules, over the limit of 100"):
            vocab.read_vocabulary(tmp_path / name)


@pytest.mark.parametrize(
    ("name", "content", "size", "code"),
    [
        ("tokenizer.json", b"", 64 * 1024 * 1024 + 1, 17),
        ("tokenizer.model", b"", 64 * 1024 * 1024 + 1, 17),
        ("tokenizer.json", b'{"model": {"type": "BPE", "vocab": {"a": 0', 0, 14),
        ("tokenizer.model", b"\x0a\x7f\x0a\x01a", 0, 14),  # a piece that runs past the end
        ("random.bin", b"\x0a\x7f\x0a\x01a", 0, 12),  # not named as a tokenizer: "not a checkpoint"
        ("notes.json", b'{"a": [1, 2', 0, 12),
    ],
)
def test_a_tokenizer_alone_gets_the_tokenizer_error_not_not_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, size: int, code: int
) -> None:
    path = tmp_path / name
    if size:
        _sparse(path, size)
    else:
        path.write_bytes(content)
    got, _, err = run(["inspect", str(path)], capsys)
    assert got == code, err
    one_line_error(err)
    folder_code, _, err = run(["inspect", str(tmp_path)], capsys)
    assert folder_code == (code if name.startswith("tokenizer") else 12), err


# -- M4: GGUF tensor count ---------------------------------------------------------------------------


def test_a_gguf_announcing_more_tensors_than_the_cap_is_refused_before_reading_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import gguf_writer
    from unshell.formats.gguf import MAX_GGUF_TENSORS

    record = gguf_writer.tensor_info("t", [0], gguf_writer.F32, 0)  # a zero-size tensor: 33 bytes
    path = tmp_path / "many.gguf"
    path.write_bytes(gguf_writer.gguf_file(gguf_writer.GGUFParts(infos=[record] * (MAX_GGUF_TENSORS + 1))))
    code, _, err = run(["inspect", str(path)], capsys)
    assert code == 17, err
    assert f"exceeds the limit of {MAX_GGUF_TENSORS} for one GGUF file" in one_line_error(err)


# -- M5: ONNX walker -------------------------------------------------------------------------------


def test_an_onnx_graph_of_more_nodes_than_the_cap_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hostile_gguf_onnx import onnx_model, onnx_tensor
    from unshell.formats.onnx import MAX_ONNX_NODES

    path = tmp_path / "nodes.onnx"
    weights = onnx_tensor("w", 1, [2], float_data=[1.0, 2.0])
    path.write_bytes(onnx_model([weights], nodes=[b""] * (MAX_ONNX_NODES + 1)))  # 2 bytes a node
    code, _, err = run(["inspect", str(path)], capsys)
    assert code == 17, err
    assert f"more than {MAX_ONNX_NODES} nodes" in one_line_error(err)


def test_the_onnx_walker_stops_at_its_field_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hostile_gguf_onnx import field_bytes, onnx_model, onnx_tensor
    from unshell.errors import ResourceLimitError
    from unshell.formats import onnx

    path = tmp_path / "wide.onnx"
    node = b"".join(field_bytes(1, "x") for _ in range(40)) + field_bytes(4, "Add")
    path.write_bytes(onnx_model([onnx_tensor("w", 1, [2], float_data=[1.0, 2.0])], nodes=[node] * 3))
    monkeypatch.setattr(onnx, "MAX_ONNX_FIELDS", 200)
    with open_checkpoint(path) as checkpoint:
        assert list(checkpoint.tensors) == ["w"]  # about 140 fields: within the budget
    monkeypatch.setattr(onnx, "MAX_ONNX_FIELDS", 100)
    with pytest.raises(ResourceLimitError, match="more than 100 protobuf fields"):
        open_checkpoint(path)


def test_only_dequantizing_nodes_are_walked_twice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hostile_gguf_onnx import field_bytes, onnx_model, onnx_tensor
    from unshell.formats import onnx

    walked: list[str] = []
    original = onnx._read_node_signature

    def spy(wire: object, message: object) -> object:
        walked.append("signature")
        return original(wire, message)  # type: ignore[arg-type]

    monkeypatch.setattr(onnx, "_read_node_signature", spy)
    nodes = [field_bytes(1, "w") + field_bytes(2, "y") + field_bytes(4, op) for op in ("Add", "Relu", "Cast")]
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_model([onnx_tensor("w", 1, [2], float_data=[1.0, 2.0])], nodes=nodes))
    with open_checkpoint(path):
        pass
    assert walked == ["signature"]


# -- M6, U3: model code ----------------------------------------------------------------------------


def test_model_code_of_too_many_tokens_is_not_parsed(tmp_path: Path) -> None:
    from unshell.auditing.code import MAX_SOURCE_TOKENS, fingerprint_code
    from unshell.errors import ResourceLimitError

    source = b"TABLE = [" + b",".join([b"1"] * (MAX_SOURCE_TOKENS // 2 + 1)) + b"]\n"  # 600 KB
    with pytest.raises(ResourceLimitError, match="tokens of Python, more than"):
        fingerprint_code(source)
    assert len(fingerprint_code(b"def f(x):\n    return [x] * 3\n")) > 0


def test_model_code_over_the_token_cap_is_a_note_in_the_provenance_report(tmp_path: Path) -> None:
    from unshell.auditing.code import MAX_SOURCE_TOKENS, ReferenceIndex, code_provenance

    model = tmp_path / "model"
    model.mkdir()
    (model / "modeling_big.py").write_bytes(b"T = [" + b"0," * MAX_SOURCE_TOKENS + b"]\n")
    (tmp_path / "transformers" / "models").mkdir(parents=True)  # an empty reference set
    references = ReferenceIndex(tmp_path / "transformers", cache_dir=False)
    (matches,) = code_provenance(model, references=references)
    assert matches.reference is None and "tokens of Python" in matches.notes[0]


def test_running_out_of_memory_while_parsing_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import ast

    from unshell.auditing import code
    from unshell.errors import ResourceLimitError

    def exhausted(*args: object, **kwargs: object) -> ast.Module:
        raise MemoryError

    monkeypatch.setattr(code.ast, "parse", exhausted)
    with pytest.raises(ResourceLimitError, match="the Python parser ran out of memory on 12 bytes"):
        code.fingerprint_code(b"x = [1, 2]\n\n")


# -- the README's limits table ---------------------------------------------------------------------

# Module-level MAX_* and *_LIMIT constants that bound no input (display and search tuning).
NOT_INPUT_BOUNDS = {
    "formats.hf.MAX_LISTED_NAMES": "names shown in one message",
    "formats.hf.REF_LIMIT": "a hub cache's refs/main is read up to its first 256 bytes: a commit hash",
    "library.search.MAX_CANDIDATES": "how many suspects a search ranks",
    "library.search.COMMON_HASH_LIMIT": "a search tuning: hashes shared this widely are no evidence",
    "web.paths.MAX_LISTED": "entries shown for one folder",
    "web.paths.MAX_SCANNED_DIRS": "folders the UI's suggestions visit",
    "web.paths.MAX_FOUND": "suggestions shown",
    "auditing.code.MAX_ALIGNED_DEFINITIONS": "a precision tuning of the code comparison",
    "conversion.verify.MAX_TOKENS": "the length of the verification prompt",
    "arch.recognize.MAX_LEAVES": "candidate assignments the structural recognizer tries",
    "threads.MAX_THREADS": "the largest --threads (a usage error above it, documented with --threads)",
}


def _limits_table() -> list[tuple[str, str, str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Limits") :]
    section = section[: section.index("\n## ")]
    import re

    return re.findall(r"^\| (.+?) \| (.+?) \| (.+?) \| `([\w.]+)` \|$", section, flags=re.M)


def _documented_number(limit: str) -> float | int:
    import re

    match = re.search(r"\d[\d,]*(?:\.\d+)?(?:e\d+)?", limit)
    assert match, limit
    text = match.group().replace(",", "")
    return float(text) if "." in text or "e" in text else int(text)


def test_readme_limits_table_matches_the_code() -> None:
    import importlib
    import re

    rows = _limits_table()
    assert len(rows) >= 40
    text = (ROOT / "README.md").read_text()
    exit_codes = {int(code) for code in re.findall(r"^\| (\d+) \| .+ \|$", text, flags=re.M)}
    for bound, limit, exit_code, constant in rows:
        module, name = constant.rsplit(".", 1)
        value = getattr(importlib.import_module(f"unshell.{module}"), name)
        assert _documented_number(limit) == value, f"README says {limit!r} for {constant}, the code {value!r}"
        code = exit_code.split()[0]
        assert code in ("note", "HTTP") or int(code) in exit_codes, (bound, exit_code)


def test_every_bound_in_the_code_is_in_the_readme_limits_table() -> None:
    import re

    documented = {constant for *_, constant in _limits_table()}
    found = set()
    for path in (ROOT / "src" / "unshell").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT / "src" / "unshell").with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for name in re.findall(r"^(MAX_[A-Z0-9_]+|[A-Z][A-Z0-9_]*_LIMIT) = ", path.read_text(), flags=re.M):
            found.add(f"{module}.{name}")
    undocumented = found - documented - set(NOT_INPUT_BOUNDS)
    assert not undocumented, f"bounds missing from the README's limits table: {sorted(undocumented)}"
    assert not set(NOT_INPUT_BOUNDS) - found, "NOT_INPUT_BOUNDS names a constant that is gone"
