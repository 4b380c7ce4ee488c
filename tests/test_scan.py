"""`unshell scan`: discovery over a real tree, error records, resume, and Ray equal to the local pool.

The tree holds real checkpoints in every layout discovery knows (llama2.c exports, a GGUF, a
Hugging Face directory, a hub-cache repository, a sharded index without config, a PyTorch zip),
next to things that are not checkpoints (a tokenizer .bin, text) and things that must be refused
(a corrupt safetensors, links out of the root, a link loop).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from foreign_layouts import make_tiny_llama
from llama2c_export import load_legacy
from unshell.errors import MissingDependencyError, PathNotFoundError, UsageError
from unshell.formats.safetensors import write_safetensors, write_sharded_safetensors
from unshell.scanning import (
    RECORD_FIELDS,
    TIMING_FIELDS,
    comparable,
    discover,
    discover_found,
    read_records,
    scan,
)
from unshell.scanning.engine import ScanTask, make_batches


def _cache_repo(hub: Path, tensors: dict[str, np.ndarray], revision: str = "b" * 40) -> Path:
    """A hub-cache repo laid out like huggingface_hub's: blobs, refs/main, symlinked snapshot."""
    repo = hub / "models--karpathy--stories260K"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    staging = hub / "staging.safetensors"
    write_safetensors(staging, tensors)
    files = {
        "model.safetensors": staging.read_bytes(),
        "config.json": json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}).encode(),
    }
    staging.unlink()
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return repo


@pytest.fixture(scope="module")
def stories(fixtures_dir: Path) -> dict[str, np.ndarray]:
    _, state, _ = load_legacy(fixtures_dir / "stories260K.bin")
    return {name: array for name, array in state.items() if not name.startswith("freqs_")}


# name (relative to the root, or org/name) -> what it is
EXPECTED = {
    "broken/corrupt.safetensors": "error",
    "hf/tiny-llama": "safetensors",
    "karpathy/stories260K": "safetensors",
    "pt/llama2xs.ckpt.pt": "pytorch",
    "sharded/model.safetensors.index.json": "safetensors",
    "stories260K.bin": "llama2c",
    "team/gguf/llama-2-tiny-random.gguf": "gguf",
    "team/llama2xs.model.bin": "llama2c",
}


def build_tree(base: Path, fixtures: Path, stories: dict[str, np.ndarray]) -> Path:
    root = base / "fleet"
    root.mkdir()
    shutil.copy(fixtures / "stories260K.bin", root / "stories260K.bin")
    (root / "team" / "gguf").mkdir(parents=True)
    shutil.copy(fixtures / "llama2xs.model.bin", root / "team" / "llama2xs.model.bin")
    shutil.copy(fixtures / "llama-2-tiny-random.gguf", root / "team" / "gguf" / "llama-2-tiny-random.gguf")
    (root / "pt").mkdir()
    shutil.copy(fixtures / "llama2xs.ckpt.pt", root / "pt" / "llama2xs.ckpt.pt")
    # A model directory: one checkpoint, its sub-folder is not looked into.
    model = make_tiny_llama(root / "hf" / "tiny-llama")
    (model / "extra").mkdir()
    shutil.copy(fixtures / "stories260K.bin", model / "extra" / "ignored.bin")
    _cache_repo(root / "hub", stories)
    # A sharded index without config.json: the index once, never its shards.
    write_sharded_safetensors(root / "sharded", stories, shards=2)
    # Not checkpoints: a llama2.c tokenizer, text, a hidden folder.
    (root / "misc").mkdir()
    shutil.copy(fixtures / "stories260K.tok512.bin", root / "misc" / "tokenizer.bin")
    (root / "misc" / "notes.txt").write_text("not a model")
    (root / ".hidden").mkdir()
    shutil.copy(fixtures / "stories260K.bin", root / ".hidden" / "copy.bin")
    # A corrupt file: found by its name, reported by the scan.
    (root / "broken").mkdir()
    (root / "broken" / "corrupt.safetensors").write_bytes(
        (40).to_bytes(8, "little") + b'{"w": {"dtype": "F32", "shape": [4], "da' + b"\x00" * 8
    )
    # Links: out of the root (a file and a folder) are ignored, a loop is not entered, and a link
    # to a file inside the root is the same checkpoint, listed once.
    outside = base / "outside"
    outside.mkdir()
    shutil.copy(fixtures / "stories260K.bin", outside / "secret.bin")
    (root / "links").mkdir()
    (root / "links" / "out.bin").symlink_to(outside / "secret.bin")
    (root / "links" / "out-dir").symlink_to(outside, target_is_directory=True)
    (root / "links" / "loop").symlink_to(root, target_is_directory=True)
    (root / "links" / "same.bin").symlink_to(root / "stories260K.bin")
    return root


@pytest.fixture
def tree(tmp_path: Path, fixtures_dir: Path, stories: dict[str, np.ndarray]) -> Path:
    return build_tree(tmp_path, fixtures_dir, stories)


def by_name(records: list[dict]) -> dict[str, dict]:
    return {record["name"]: record for record in records}


# -- discovery -----------------------------------------------------------------------------------


def test_discovery_finds_exactly_the_checkpoints(tree: Path) -> None:
    found = list(discover_found([tree]))

    assert sorted(item.name for item in found) == sorted(EXPECTED)
    paths = [item.path for item in found]
    assert paths == list(discover([tree])), "the same order every time"
    assert tree / "hub" / "models--karpathy--stories260K" in paths, "a cache repo is one checkpoint"
    assert tree / "hf" / "tiny-llama" in paths
    assert all(not str(path).startswith(str(tree.parent / "outside")) for path in paths)
    assert not any("links" in path.parts for path in paths), "links out, the loop, the duplicate"


def test_discovery_depth_roots_and_missing_root(tree: Path) -> None:
    shallow = {item.name for item in discover_found([tree], max_depth=0)}
    assert shallow == {"stories260K.bin"}

    # A root given twice, or a checkpoint root inside another root, is listed once.
    again = [item.name for item in discover_found([tree, tree / "team", tree / "stories260K.bin"])]
    assert sorted(again) == sorted(EXPECTED)

    # A root that is a checkpoint is named after itself; a snapshot root follows its blob links.
    cache = tree / "hub" / "models--karpathy--stories260K"
    assert [item.name for item in discover_found([cache])] == ["karpathy/stories260K"]
    snapshot = cache / "snapshots" / ("b" * 40)
    assert [item.path for item in discover_found([snapshot])] == [snapshot]

    with pytest.raises(PathNotFoundError):
        list(discover([tree / "nope"]))


# -- scanning ------------------------------------------------------------------------------------


def test_scan_records_every_checkpoint_and_errors_do_not_stop_it(tree: Path, tmp_path: Path) -> None:
    output = tmp_path / "out" / "scan.jsonl"

    summary = scan([tree], output=output, fingerprints=False, workers=2, progress=False)

    records = read_records(output)
    assert records == summary.records
    assert [r["name"] for r in records] == [item.name for item in discover_found([tree])]
    assert all(list(record) == list(RECORD_FIELDS) for record in records)
    named = by_name(records)
    for name, kind in EXPECTED.items():
        record = named[name]
        if kind == "error":
            assert record["status"] == "error"
            assert record["error_type"] == "CorruptCheckpointError" and record["exit_code"] == 14
            assert "\n" not in record["error"] and "corrupt.safetensors" in record["error"]
            assert record["bytes"] == (tree / name).stat().st_size
        else:
            assert record["status"] == "ok", record
            assert record["format"] == kind and record["family"] == "llama", record
            assert record["parameters"] > 0 and len(record["header_hash"]) == 64
            assert record["error"] is None and record["mode"] == "headers"
            assert record["signature"].startswith("llama|h") and record["fingerprint_bytes"] is None
    assert named["karpathy/stories260K"]["layout"] == "hf-cache"
    assert named["stories260K.bin"]["header_hash"] != named["karpathy/stories260K"]["header_hash"]
    assert (summary.ok, summary.errors, summary.skipped, summary.exit_code) == (7, 1, 0, 1)
    assert not (output.parent / "scan.jsonl.partial").exists()


def test_second_scan_skips_unchanged_and_rescans_changed(
    tree: Path, tmp_path: Path, fixtures_dir: Path
) -> None:
    output = tmp_path / "scan.jsonl"
    first = by_name(scan([tree], output=output, fingerprints=False, workers=1, progress=False).records)

    # One file rewritten with other content, one touched only (same header, new mtime).
    target = tree / "team" / "llama2xs.model.bin"
    shutil.copy(fixtures_dir / "stories260K.bin", target)
    touched = tree / "team" / "gguf" / "llama-2-tiny-random.gguf"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))

    second = by_name(scan([tree], output=output, fingerprints=False, workers=2, progress=False).records)

    statuses = {name: record["status"] for name, record in second.items()}
    assert statuses == {
        **dict.fromkeys(EXPECTED, "skipped"),
        "team/llama2xs.model.bin": "ok",
        "team/gguf/llama-2-tiny-random.gguf": "ok",
        "broken/corrupt.safetensors": "error",  # errors are always tried again
    }
    changed = second["team/llama2xs.model.bin"]
    assert changed["header_hash"] != first["team/llama2xs.model.bin"]["header_hash"]
    assert changed["parameters"] == first["stories260K.bin"]["parameters"]
    assert (
        second["team/gguf/llama-2-tiny-random.gguf"]["header_hash"]
        == first["team/gguf/llama-2-tiny-random.gguf"]["header_hash"]
    )
    for name in ("stories260K.bin", "karpathy/stories260K", "hf/tiny-llama"):
        assert comparable(second[name]) == {**comparable(first[name]), "status": "skipped"}

    # A header-only output does not stand for fingerprints; an interrupted scan's journal is read.
    third = scan([tree], output=output, fingerprints=False, workers=1, progress=False)
    assert third.skipped == 7 and third.errors == 1
    journal = tmp_path / "scan.jsonl.partial"
    output.rename(journal)
    fourth = scan([tree], output=output, fingerprints=False, workers=1, progress=False)
    assert fourth.skipped == 7 and not journal.exists()


def test_library_is_written_by_the_driver_and_resumed_from(tree: Path, tmp_path: Path) -> None:
    from unshell.library.store import Library

    library_path = tmp_path / "fleet.sqlite"
    output = tmp_path / "scan.jsonl"
    options = {"library": library_path, "output": output, "progress": False}

    first = scan([tree], workers=2, **options)  # type: ignore[arg-type]

    assert first.mode == "fingerprints" and first.library_added == 7
    ok = sorted(r["name"] for r in first.records if r["status"] == "ok")
    with Library(library_path) as library:
        assert library.names() == ok
        entry = {e.name: e for e in library.list()}["hf/tiny-llama"]
        assert (
            entry.family == "llama"
            and entry.parameters == by_name(first.records)["hf/tiny-llama"]["parameters"]
        )
    assert all(r["fingerprint_bytes"] > 0 for r in first.records if r["status"] == "ok")

    # Unchanged and in the library: skipped. Gone from the library: fingerprinted again.
    with Library(library_path) as library:
        library.remove("team/llama2xs.model.bin")
    second = scan([tree], workers=1, **options)  # type: ignore[arg-type]
    statuses = {r["name"]: r["status"] for r in second.records}
    assert statuses["team/llama2xs.model.bin"] == "ok" and second.library_added == 1
    assert second.skipped == 6 and second.errors == 1
    with Library(library_path) as library:
        assert library.names() == ok

    # Header-only records never stand for fingerprints.
    scan([tree], fingerprints=False, output=tmp_path / "headers.jsonl", workers=1, progress=False)
    third = scan([tree], workers=1, **{**options, "output": tmp_path / "headers.jsonl"})  # type: ignore[arg-type]
    assert third.skipped == 0 and third.ok == 7


def test_usage_errors(tree: Path) -> None:
    with pytest.raises(UsageError, match="engine"):
        scan([tree], engine="spark", progress=False)
    with pytest.raises(UsageError, match="workers"):
        scan([tree], workers=0, progress=False)


def test_ray_missing_is_one_line(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray gives
    with pytest.raises(MissingDependencyError, match=r"unshell\[ray\]") as caught:
        scan([tree], engine="ray", fingerprints=False, progress=False)
    assert "\n" not in str(caught.value) and caught.value.exit_code == 20


def test_batches_large_alone_small_grouped() -> None:
    sizes = [10, 300, 20, 30, 400, 40, 50]
    units = [ScanTask(index=i, path=f"/p{i}", name=f"p{i}", size_hint=size) for i, size in enumerate(sizes)]

    batches = make_batches(units, batch_bytes=100, batch_units=3)

    assert [[u.size_hint for u in batch] for batch in batches] == [[300], [10, 20, 30], [400], [40, 50]]
    assert sorted(u.index for batch in batches for u in batch) == list(range(len(sizes)))


# -- Ray -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[object]:
    """One real local Ray runtime for the module: two CPUs, no dashboard."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.parametrize("fingerprints", [True, False], ids=["fingerprints", "headers"])
def test_ray_engine_equals_local_record_for_record(
    ray_cluster: object, tree: Path, tmp_path: Path, fingerprints: bool
) -> None:
    from unshell.library.store import Library

    local = scan(
        [tree],
        output=tmp_path / "local.jsonl",
        library=tmp_path / "local.sqlite" if fingerprints else None,
        fingerprints=fingerprints,
        workers=2,
        progress=False,
    )
    # A batch threshold between the small and the larger files: some tasks alone, some grouped.
    remote = scan(
        [tree],
        output=tmp_path / "ray.jsonl",
        library=tmp_path / "ray.sqlite" if fingerprints else None,
        engine="ray",
        fingerprints=fingerprints,
        progress=False,
        batch_bytes=1_500_000,
    )

    assert remote.engine == "ray" and remote.total == local.total == len(EXPECTED)
    assert [comparable(r) for r in read_records(tmp_path / "ray.jsonl")] == [
        comparable(r) for r in read_records(tmp_path / "local.jsonl")
    ]
    assert {"seconds"} == TIMING_FIELDS
    assert by_name(remote.records)["broken/corrupt.safetensors"]["exit_code"] == 14
    if fingerprints:
        with Library(tmp_path / "local.sqlite") as one, Library(tmp_path / "ray.sqlite") as other:
            assert one.names() == other.names() and len(one.names()) == 7
            assert all(one.get_bytes(name) == other.get_bytes(name) for name in one.names())

    # Resume works the same through Ray: everything unchanged is skipped.
    again = scan(
        [tree],
        output=tmp_path / "ray.jsonl",
        library=tmp_path / "ray.sqlite" if fingerprints else None,
        engine="ray",
        fingerprints=fingerprints,
        progress=False,
    )
    assert (again.skipped, again.errors) == (7, 1)
    assert ray_cluster.is_initialized(), "a runtime the scan did not start is left running"  # type: ignore[attr-defined]


def test_a_scan_into_a_library_resumes_without_its_output_file(tree: Path, tmp_path: Path) -> None:
    from unshell.library.store import Library

    library_path = tmp_path / "fleet.sqlite"
    first = scan([tree], library=library_path, workers=1, progress=False)  # no output file
    assert first.library_added == 7 and first.output is None

    # The library remembers what it saw: unchanged checkpoints are skipped with their fields kept.
    second = scan([tree], library=library_path, workers=1, progress=False)
    assert (second.skipped, second.ok, second.errors, second.library_added) == (7, 0, 1, 0)
    before, after = by_name(first.records), by_name(second.records)
    for name, record in after.items():
        if record["status"] == "skipped":
            assert comparable(record) == {**comparable(before[name]), "status": "skipped"}

    # A changed file is fingerprinted again; a removed fingerprint takes its resume key with it.
    target = tree / "stories260K.bin"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    with Library(library_path) as library:
        library.remove("team/llama2xs.model.bin")
        assert len(library.resume_keys()) == 6
    third = scan([tree], library=library_path, workers=1, progress=False)
    statuses = {r["name"]: r["status"] for r in third.records}
    assert statuses["stories260K.bin"] == "ok" and statuses["team/llama2xs.model.bin"] == "ok"
    assert third.skipped == 5 and third.library_added == 2
