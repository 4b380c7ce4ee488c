"""A corpus of hostile and broken checkpoints for safetensors, shard indexes, PyTorch zips, Meta
directories, llama2.c exports and hub-cache folders.

`make_hostile_files` writes them into a directory and maps each entry (a file, or a folder for
directory layouts) to the unshell error that ``unshell.formats.open_checkpoint`` must raise for it.
Every entry must fail fast (well under a second) and never run code, allocate by a declared size or
read outside the folder. Pickles that would run code if loaded normally try to create
``PWNED_MARKER`` inside the corpus directory; the marker must never appear.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

import torchzip
from unshell.errors import (
    CorruptCheckpointError,
    InconsistentHeaderError,
    NotACheckpointError,
    ResourceLimitError,
    UnsafePickleError,
    UnsupportedFormatError,
    UsageError,
)
from unshell.formats.safetensors import write_safetensors

PWNED_MARKER = "pwned_marker"

Expected = dict[str, type[Exception]]


# -- safetensors --------------------------------------------------------------------------------


def safetensors_bytes(
    header: dict[str, Any] | bytes, data: bytes = b"", *, declared_length: int | None = None
) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(raw) if declared_length is None else declared_length
    return struct.pack("<Q", length) + raw + data


def _f32(offsets: list[int], shape: list[int] | None = None) -> dict[str, Any]:
    count = (offsets[1] - offsets[0]) // 4
    return {"dtype": "F32", "shape": shape if shape is not None else [count], "data_offsets": offsets}


def _safetensors_cases(directory: Path) -> Expected:
    cases: dict[str, tuple[bytes, type[Exception]]] = {
        "st_offsets_out_of_range.safetensors": (  # its data ends early: a file cut short
            safetensors_bytes({"a": _f32([0, 4096])}, b"\0" * 16),
            CorruptCheckpointError,
        ),
        "st_overlap.safetensors": (
            safetensors_bytes({"a": _f32([0, 8]), "b": _f32([4, 12])}, b"\0" * 12),
            InconsistentHeaderError,
        ),
        "st_size_mismatch.safetensors": (
            safetensors_bytes({"a": _f32([0, 12], [4])}, b"\0" * 12),
            InconsistentHeaderError,
        ),
        "st_hole.safetensors": (
            safetensors_bytes({"a": _f32([0, 4]), "b": _f32([8, 12])}, b"\0" * 12),
            InconsistentHeaderError,
        ),
        "st_trailing_bytes.safetensors": (
            safetensors_bytes({"a": _f32([0, 4])}, b"\0" * 4 + b"polyglot"),
            InconsistentHeaderError,
        ),
        "st_not_json.safetensors": (safetensors_bytes(b"{not json at all}", b""), CorruptCheckpointError),
        "st_invalid_utf8.safetensors": (safetensors_bytes(b'{"\xff\xfe": 1}', b""), CorruptCheckpointError),
        "st_json_array.safetensors": (safetensors_bytes(b"{[]}", b""), CorruptCheckpointError),
        "st_duplicate_key.safetensors": (
            safetensors_bytes(
                b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                b'"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
                b"\0" * 4,
            ),
            InconsistentHeaderError,
        ),
        "st_unknown_dtype.safetensors": (
            safetensors_bytes({"a": {"dtype": "F13", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
            UnsupportedFormatError,
        ),
        "st_nested_metadata.safetensors": (
            safetensors_bytes({"__metadata__": {"a": {"b": "c"}}}, b""),
            InconsistentHeaderError,
        ),
        "st_negative_dimension.safetensors": (
            safetensors_bytes({"a": _f32([0, 4], [-1])}, b"\0" * 4),
            InconsistentHeaderError,
        ),
        "st_rank_too_high.safetensors": (
            safetensors_bytes({"a": _f32([0, 4], [1] * 64)}, b"\0" * 4),
            ResourceLimitError,
        ),
        "st_deep_nesting.safetensors": (
            safetensors_bytes(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b""),
            CorruptCheckpointError,
        ),
        "st_huge_integer.safetensors": (
            safetensors_bytes(
                b'{"a":{"dtype":"F32","shape":[' + b"9" * 10_000 + b'],"data_offsets":[0,4]}}', b"\0" * 4
            ),
            CorruptCheckpointError,
        ),
        "st_offsets_not_integers.safetensors": (
            safetensors_bytes({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4.0]}}, b"\0" * 4),
            InconsistentHeaderError,
        ),
        "st_entry_not_object.safetensors": (safetensors_bytes({"a": [1, 2]}, b""), InconsistentHeaderError),
        # The dispatcher only calls a file safetensors when its header length fits the file.
        "st_header_longer_than_file.safetensors": (
            safetensors_bytes({"a": _f32([0, 4])}, b"\0" * 4, declared_length=1 << 40),
            NotACheckpointError,
        ),
    }
    for name, (data, _) in cases.items():
        (directory / name).write_bytes(data)
    valid = directory / "st_truncated.safetensors"
    write_safetensors(valid, {"w": np.arange(64, dtype=np.float32)})
    valid.write_bytes(valid.read_bytes()[:-100])
    expected: Expected = {name: error for name, (_, error) in cases.items()}
    expected["st_truncated.safetensors"] = CorruptCheckpointError  # cut short: exit 14, not a lying header
    return expected


# -- shard indexes ------------------------------------------------------------------------------


def _index_cases(directory: Path) -> Expected:
    def index(name: str, weight_map: Any) -> None:
        (directory / name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    index("idx_parent_escape.safetensors.index.json", {"a": "../outside.safetensors"})
    index("idx_absolute_path.safetensors.index.json", {"a": "/etc/passwd"})
    index("idx_windows_path.safetensors.index.json", {"a": "C:\\Windows\\win.ini"})
    index("idx_missing_shard.safetensors.index.json", {"a": "nowhere-00001-of-00001.safetensors"})
    index("idx_bad_weight_map.safetensors.index.json", {"a": 7})
    (directory / "idx_not_json.safetensors.index.json").write_text("{'weight_map': nope")
    shards = directory / "idx_dup_shards"
    shards.mkdir()
    write_safetensors(shards / "a.safetensors", {"w": np.zeros(2, np.float32)})
    write_safetensors(shards / "b.safetensors", {"w": np.ones(2, np.float32)})
    index(
        "idx_duplicate_tensor.safetensors.index.json",
        {"w": "idx_dup_shards/a.safetensors", "x": "idx_dup_shards/b.safetensors"},
    )
    return {
        "idx_parent_escape.safetensors.index.json": InconsistentHeaderError,
        "idx_absolute_path.safetensors.index.json": InconsistentHeaderError,
        "idx_windows_path.safetensors.index.json": InconsistentHeaderError,
        "idx_missing_shard.safetensors.index.json": CorruptCheckpointError,
        "idx_bad_weight_map.safetensors.index.json": InconsistentHeaderError,
        "idx_not_json.safetensors.index.json": CorruptCheckpointError,
        "idx_duplicate_tensor.safetensors.index.json": InconsistentHeaderError,
    }


# -- PyTorch ------------------------------------------------------------------------------------


class _RunsCode:
    """Pickles to a REDUCE that would run a shell command under a normal unpickler."""

    def __init__(self, function: Any, args: tuple[Any, ...]) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.function, self.args


def _torch_zip(
    path: Path, pickle_data: bytes, storages: dict[str, bytes] | None = None, **kwargs: Any
) -> None:
    torchzip.write_zip(path, pickle_data, storages or {}, **kwargs)


def _pickle_cases(directory: Path) -> Expected:
    marker = str(directory / PWNED_MARKER)
    weights = np.arange(16, dtype=np.float32)
    good = torchzip.state_dict_refs({"w": weights})
    storage = torchzip.Storage("0", "F32", weights.tobytes())
    expected: Expected = {}

    def case(
        name: str,
        error: type[Exception],
        pickle_data: bytes,
        storages: dict[str, bytes] | None = None,
        **kwargs: Any,
    ) -> None:
        _torch_zip(directory / name, pickle_data, storages, **kwargs)
        expected[name] = error

    # Real pickles made by the pickle module: each would run a command if loaded with torch.load
    # (weights_only=False) or pickle.load.
    case(
        "pt_os_system.pt",
        UnsafePickleError,
        pickle.dumps({"model": _RunsCode(os.system, (f"touch {marker}",))}, protocol=2),
    )
    case(
        "pt_builtins_eval.pt",
        UnsafePickleError,
        pickle.dumps(_RunsCode(eval, (f"open({marker!r}, 'w')",)), protocol=2),
    )
    case(
        "pt_subprocess_popen.pt",
        UnsafePickleError,
        pickle.dumps(_RunsCode(subprocess.Popen, (["touch", marker],)), protocol=4),  # STACK_GLOBAL
    )
    # Hand-made opcode streams that reach globals by other routes.
    case("pt_inst_opcode.pt", UnsafePickleError, b"\x80\x02(ios\nsystem\nX\x04\x00\x00\x00trueb.")
    case("pt_ext_opcode.pt", UnsafePickleError, b"\x80\x02\x82\x01.")
    case("pt_newobj_ex.pt", UnsafePickleError, b"\x80\x04N)}\x92.")
    dotted = torchzip.PickleWriter()
    dotted.emit(torchzip.Global("collections", "OrderedDict.fromkeys"))
    case("pt_dotted_global.pt", UnsafePickleError, dotted.finish())
    # BUILD on an allowed stand-in must not mutate it.
    build = torchzip.PickleWriter()
    build.emit(torchzip.TensorRef(storage, (16,)))
    build.out += b"}X\x06\x00\x00\x00offsetJ\x00\x00\x01\x00sb"
    case("pt_build_on_tensor.pt", UnsafePickleError, build.finish(), {"0": weights.tobytes()})
    # Declared sizes far beyond the data: must fail before CPython allocates them.
    case("pt_memo_index_bomb.pt", ResourceLimitError, b"\x80\x02Nr\xf0\xff\xff\xff.")
    case(
        "pt_binbytes8_huge.pt", CorruptCheckpointError, b"\x80\x04\x8e" + struct.pack("<Q", 1 << 60) + b"abc."
    )
    case(
        "pt_binunicode8_huge.pt",
        CorruptCheckpointError,
        b"\x80\x04\x8d" + struct.pack("<Q", 1 << 40) + b"abc.",
    )
    case(
        "pt_long4_huge.pt",
        CorruptCheckpointError,
        b"\x80\x02\x8b" + struct.pack("<i", (1 << 31) - 1) + b"\x01.",
    )
    case("pt_frame_huge.pt", CorruptCheckpointError, b"\x80\x04\x95" + struct.pack("<Q", 1 << 60) + b"N.")
    case("pt_unknown_opcode.pt", CorruptCheckpointError, b"\x80\x02\xff.")
    case(
        "pt_truncated_pickle.pt",
        CorruptCheckpointError,
        torchzip.pickle_bytes(good)[:40],
        {"0": weights.tobytes()},
    )
    case("pt_stack_underflow.pt", CorruptCheckpointError, b"\x80\x02s.")
    # Structurally valid pickles whose references lie.
    case("pt_missing_storage.pt", InconsistentHeaderError, torchzip.pickle_bytes(good), {})
    case(
        "pt_compressed_storage.pt",
        UnsupportedFormatError,
        torchzip.pickle_bytes(good),
        {"0": weights.tobytes()},
        compress_storages=True,
    )
    short = torchzip.Storage("0", "F32", weights.tobytes(), numel=1000)
    case(
        "pt_storage_size_lie.pt",
        InconsistentHeaderError,
        torchzip.pickle_bytes({"w": torchzip.TensorRef(short, (1000,))}),
        {"0": weights.tobytes()},
    )
    view = torchzip.TensorRef(storage, (16,), offset=8)
    case(
        "pt_view_past_storage.pt",
        InconsistentHeaderError,
        torchzip.pickle_bytes({"w": view}),
        {"0": weights.tobytes()},
    )
    huge = torchzip.TensorRef(storage, (1 << 60,))
    case(
        "pt_huge_shape.pt",
        InconsistentHeaderError,
        torchzip.pickle_bytes({"w": huge}),
        {"0": weights.tobytes()},
    )
    rank = torchzip.TensorRef(storage, (1,) * 40, stride=(1,) * 40)
    case(
        "pt_rank_too_high.pt",
        ResourceLimitError,
        torchzip.pickle_bytes({"w": rank}),
        {"0": weights.tobytes()},
    )
    case("pt_bad_persistent_id.pt", InconsistentHeaderError, b"\x80\x02X\x03\x00\x00\x00abcQ.")
    bad_key = torchzip.Storage("../../etc/passwd", "F32", b"")
    case(
        "pt_storage_key_escape.pt",
        InconsistentHeaderError,
        torchzip.pickle_bytes({"w": torchzip.TensorRef(bad_key, (0,))}),
    )
    dtype_call = torchzip.PickleWriter()
    dtype_call.emit(torchzip.Global("torch", "float16"))
    dtype_call.out += b")R"
    case("pt_call_dtype.pt", CorruptCheckpointError, dtype_call.finish())
    bytes_bomb = torchzip.PickleWriter()
    bytes_bomb.emit(torchzip.Global("__builtin__", "bytes"))
    bytes_bomb.emit((1 << 40,))
    bytes_bomb.out += b"R"
    case("pt_bytes_bomb.pt", UnsafePickleError, bytes_bomb.finish())  # bytes(n) would allocate n
    case("pt_no_tensors.pt", NotACheckpointError, torchzip.pickle_bytes({"iter_num": 3, "config": {"a": 1}}))
    deep = b"\x80\x02" + b"]" * 50_000 + b"a" * 49_999 + b"."
    case("pt_deep_nesting.pt", NotACheckpointError, deep)
    case("pt_self_reference.pt", NotACheckpointError, b"\x80\x02]q\x00h\x00a.")
    case(
        "pt_torchscript.pt",
        UnsupportedFormatError,
        torchzip.pickle_bytes(good),
        {"0": weights.tobytes()},
        extra_members={"constants.pkl": b"\x80\x02N."},
    )
    # Found by the adversarial pass of issue 13 (tests/test_hostile_regressions.py has one test each).
    planted = torchzip.PickleWriter()
    planted.emit(good)
    planted.out += b"}X\x05\x00\x00\x00items"
    planted.emit(torchzip.Global("torch._utils", "_rebuild_tensor_v2"))
    planted.out += b"sb"
    case("pt_planted_items.pt", UnsafePickleError, planted.finish(), {"0": weights.tobytes()})
    expanded = torchzip.TensorRef(torchzip.Storage("0", "F32", b"\0" * 64), (32768, 16384), stride=(0, 0))
    case(
        "pt_zero_stride_view.pt",
        ResourceLimitError,
        torchzip.pickle_bytes({"w": expanded}),
        {"0": b"\0" * 64},
    )
    with zipfile.ZipFile(directory / "pt_deflated_pickle_bomb.pt", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02(" + b"]" * 7_999_990 + b"l.")
    expected["pt_deflated_pickle_bomb.pt"] = ResourceLimitError
    case("pt_member_twice.pt", InconsistentHeaderError, torchzip.pickle_bytes(good), {"0": weights.tobytes()})
    with warnings.catch_warnings(), zipfile.ZipFile(directory / "pt_member_twice.pt", "a") as archive:
        warnings.simplefilter("ignore")  # "Duplicate name": the point of the case
        archive.writestr("archive/data/0", (weights + 1).tobytes())
    (directory / "pt_legacy_pickle.pt").write_bytes(
        pickle.dumps(_RunsCode(os.system, (f"touch {marker}",)), protocol=2)
    )
    expected["pt_legacy_pickle.pt"] = UnsupportedFormatError
    with zipfile.ZipFile(directory / "pt_zip_without_pickle.pt", "w") as archive:
        archive.writestr("archive/readme.txt", "hello")
    expected["pt_zip_without_pickle.pt"] = NotACheckpointError
    whole = directory / "pt_truncated_zip.pt"
    torchzip.save(whole, good)
    whole.write_bytes(whole.read_bytes()[:150])
    expected["pt_truncated_zip.pt"] = CorruptCheckpointError
    return expected


# -- llama2.c -----------------------------------------------------------------------------------


def _llama2c_header(
    version: int, values: tuple[int, ...], shared: int = 1, group_size: int | None = None
) -> bytes:
    head = struct.pack("<Ii7iB", 0x616B3432, version, *values, shared)
    if group_size is not None:
        head += struct.pack("<i", group_size)
    return head + b"\0" * (256 - len(head))


TINY = (8, 16, 1, 2, 1, 4, 4)  # dim, hidden, layers, heads, kv heads, vocab, seq


def _llama2c_v1_size(values: tuple[int, ...]) -> int:
    dim, hidden, layers, heads, kv_heads, vocab, _ = values
    kv_dim = dim // heads * kv_heads
    count = layers * (2 * dim + 2 * dim * dim + 2 * kv_dim * dim + 3 * hidden * dim) + dim + vocab * dim
    return 4 * count


def _llama2c_cases(directory: Path) -> Expected:
    body = b"\0" * _llama2c_v1_size(TINY)
    cases: dict[str, tuple[bytes, type[Exception]]] = {
        "l2c_v1_truncated.bin": (_llama2c_header(1, TINY) + body[:-4], CorruptCheckpointError),
        "l2c_v1_trailing.bin": (_llama2c_header(1, TINY) + body + b"\0" * 4, InconsistentHeaderError),
        "l2c_short_header.bin": (_llama2c_header(1, TINY)[:100], CorruptCheckpointError),
        "l2c_unknown_version.bin": (_llama2c_header(7, TINY) + body, UnsupportedFormatError),
        "l2c_zero_dim.bin": (_llama2c_header(1, (0, *TINY[1:])) + body, InconsistentHeaderError),
        "l2c_heads_not_dividing.bin": (
            _llama2c_header(1, (8, 16, 1, 3, 1, 4, 4)) + body,
            InconsistentHeaderError,
        ),
        "l2c_huge_vocab.bin": (_llama2c_header(1, (*TINY[:5], 1 << 30, 4)) + body, InconsistentHeaderError),
        "l2c_bad_shared_flag.bin": (_llama2c_header(1, TINY, shared=7) + body, InconsistentHeaderError),
        "l2c_nonzero_padding.bin": (_llama2c_header(1, TINY)[:255] + b"\x01" + body, InconsistentHeaderError),
        "l2c_v2_zero_group.bin": (_llama2c_header(2, TINY, group_size=0) + body, InconsistentHeaderError),
        "l2c_v2_group_not_dividing.bin": (
            _llama2c_header(2, TINY, group_size=3) + body,
            InconsistentHeaderError,
        ),
        # v0 has no magic: a v0 file with the wrong size is simply not recognised.
        "l2c_v0_wrong_size.bin": (struct.pack("<7i", *TINY) + b"\0" * 100, NotACheckpointError),
    }
    for name, (data, _) in cases.items():
        (directory / name).write_bytes(data)
    return {name: error for name, (_, error) in cases.items()}


# -- directories --------------------------------------------------------------------------------


def _directory_cases(directory: Path) -> Expected:
    expected: Expected = {}
    empty = directory / "dir_empty"
    empty.mkdir()
    expected["dir_empty"] = NotACheckpointError

    text_only = directory / "dir_only_text"
    text_only.mkdir()
    (text_only / "README.md").write_text("# no weights here\n")
    (text_only / "notes.bin").write_bytes(b"just some bytes, not a model")
    expected["dir_only_text"] = NotACheckpointError

    bad_config = directory / "dir_bad_config"
    bad_config.mkdir()
    write_safetensors(bad_config / "model.safetensors", {"w": np.zeros(2, np.float32)})
    (bad_config / "config.json").write_text('{"model_type": "llama",')
    expected["dir_bad_config"] = CorruptCheckpointError

    ambiguous = directory / "dir_two_safetensors"
    ambiguous.mkdir()
    write_safetensors(ambiguous / "a.safetensors", {"w": np.zeros(2, np.float32)})
    write_safetensors(ambiguous / "b.safetensors", {"w": np.zeros(2, np.float32)})
    expected["dir_two_safetensors"] = UsageError

    gap = directory / "dir_meta_gap"
    gap.mkdir()
    (gap / "params.json").write_text(json.dumps({"dim": 16}))
    for number in (0, 2):
        torchzip.save(
            gap / f"consolidated.{number:02d}.pth",
            torchzip.state_dict_refs({"norm.weight": np.ones(16, np.float32)}),
        )
    expected["dir_meta_gap"] = CorruptCheckpointError

    fifo = directory / "dir_fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "model.safetensors")
    expected["dir_fifo"] = NotACheckpointError

    expected.update(_cache_escape_cases(directory))
    return expected


def _cache_escape_cases(directory: Path) -> Expected:
    """Hub-cache folders whose snapshot symlinks point outside the repository folder."""
    outside = directory / "cache_outside_secret.bin"
    write_safetensors(outside, {"secret": np.zeros(2, np.float32)})
    expected: Expected = {}
    for name, link_name in (
        ("models--evil--weights", "model.safetensors"),
        ("models--evil--config", "config.json"),
    ):
        repo = directory / name
        snapshot = repo / "snapshots" / "0123abcd"
        snapshot.mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0123abcd")
        if link_name != "model.safetensors":
            blob = repo / "blobs" / "deadbeef"
            blob.parent.mkdir()
            write_safetensors(blob, {"w": np.zeros(2, np.float32)})
            (snapshot / "model.safetensors").symlink_to(Path("../../blobs/deadbeef"))
        (snapshot / link_name).symlink_to(outside.resolve())
        expected[name] = InconsistentHeaderError
    return expected


def make_hostile_files(directory: Path) -> dict[str, type[Exception]]:
    """Write the corpus into ``directory``; map each entry name to the error opening it must raise."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    expected: Expected = {}
    expected.update(_safetensors_cases(directory))
    expected.update(_index_cases(directory))
    expected.update(_pickle_cases(directory))
    expected.update(_llama2c_cases(directory))
    expected.update(_directory_cases(directory))
    return expected


__all__ = ["PWNED_MARKER", "make_hostile_files", "safetensors_bytes"]
