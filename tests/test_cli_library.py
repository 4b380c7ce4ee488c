"""The `library`, `search` and `scan` commands end to end on real checkpoints: the llama2.c
stories260K and llama2xs exports and the tiny GGUF from the fixtures, and a fine-tune of
stories260K (its real weights, perturbed, under renamed tensors) as the suspect."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from llama2c_export import load_legacy
from unshell.cli.main import main
from unshell.errors import CorruptCheckpointError, UsageError
from unshell.formats.safetensors import write_safetensors
from unshell.library import Library


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.fixture(scope="module")
def finetune(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """stories260K's weights plus noise at 10% of each tensor's spread, with Yi-style renames."""
    _, state, _ = load_legacy(fixtures_dir / "stories260K.bin")
    rng = np.random.default_rng(7)
    renamed = {}
    for name, weight in state.items():
        noisy = weight + rng.normal(0, 0.1 * float(weight.std()) + 1e-6, weight.shape).astype(weight.dtype)
        name = name.replace("input_layernorm", "ln1").replace("post_attention_layernorm", "ln2")
        renamed[name] = noisy
    folder = tmp_path_factory.mktemp("suspect") / "tuned-stories"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors", renamed)
    return folder


@pytest.fixture
def library_file(tmp_path: Path, fixtures_dir: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "lib.sqlite"
    code, out, _ = run(
        [
            "library", "add", "--library", str(path), "--format", "json",
            str(fixtures_dir / "stories260K.bin"),
            str(fixtures_dir / "llama2xs.model.bin"),
            str(fixtures_dir / "llama-2-tiny-random.gguf"),
        ],
        capsys,
    )  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert [e["name"] for e in doc["added"]] == [
        "stories260K.bin",
        "llama2xs.model.bin",
        "llama-2-tiny-random.gguf",
    ]
    assert doc["size"] == 3 and all(e["size_bytes"] > 0 for e in doc["added"])
    return path


def test_add_list_remove(library_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["library", "list", "--library", str(library_file)], capsys)
    assert code == 0
    assert out.splitlines()[0].split() == ["NAME", "FAMILY", "PARAMS", "HIDDEN", "VOCAB", "TOKENIZER", "SIZE"]
    stories = next(line for line in out.splitlines() if line.startswith("stories260K.bin"))
    assert stories.split()[1] == "llama" and stories.split()[3] == "64" and stories.split()[4] == "512"
    assert out.rstrip().endswith(f"3 fingerprints in {library_file}")

    # All or nothing: an unknown name removes nothing, and exits with the usage code.
    code, _, err = run(
        ["library", "remove", "--library", str(library_file), "stories260K.bin", "nope"], capsys
    )
    assert code == UsageError.exit_code and err.startswith("error: ") and "'nope'" in err
    assert len(Library(library_file)) == 3

    code, out, _ = run(["library", "show", "--library", str(library_file), "stories260K.bin"], capsys)
    assert code == 0 and "35 matrices at 64 directions" in out
    code, _, err = run(["library", "show", "--library", str(library_file), "nope"], capsys)
    assert code == UsageError.exit_code and "'nope'" in err

    code, out, _ = run(
        ["library", "remove", "--library", str(library_file), "--format", "json", "llama2xs.model.bin"],
        capsys,
    )
    assert code == 0 and json.loads(out)["size"] == 2
    assert Library(library_file).names() == ["llama-2-tiny-random.gguf", "stories260K.bin"]


def test_add_refuses_duplicates_and_name_with_many_paths(
    library_file: Path, fixtures_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stories = str(fixtures_dir / "stories260K.bin")
    code, _, err = run(["library", "add", "--library", str(library_file), stories], capsys)
    assert code == UsageError.exit_code and "--replace" in err
    code, _, err = run(
        ["library", "add", "--library", str(library_file), "--name", "x", stories, stories], capsys
    )
    assert code == UsageError.exit_code and "one PATH" in err
    code, out, _ = run(
        ["library", "add", "--library", str(library_file), "--name", "karpathy/stories260K", stories], capsys
    )
    assert code == 0 and out.startswith("ADDED") and "karpathy/stories260K" in out
    assert len(Library(library_file)) == 4


def test_export_import_round_trip(
    library_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = tmp_path / "fleet.jsonl"
    code, out, _ = run(["library", "export", "--library", str(library_file), str(exported)], capsys)
    assert code == 0 and out == f"exported 3 fingerprints to {exported}\n"
    fresh = tmp_path / "fresh.sqlite"
    code, out, _ = run(
        ["library", "import", "--library", str(fresh), "--format", "json", str(exported)], capsys
    )
    assert code == 0 and json.loads(out)["imported"] == 3
    assert Library(fresh).get_bytes("stories260K.bin") == Library(library_file).get_bytes("stories260K.bin")
    # Importing again collides with every name; nothing is written.
    code, _, err = run(["library", "import", "--library", str(fresh), str(exported)], capsys)
    assert code == UsageError.exit_code and len(Library(fresh)) == 3
    # A file cut short is refused as corrupt, with its own exit code.
    lines = exported.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:-1]))
    code, _, err = run(["library", "import", "--library", str(tmp_path / "other.sqlite"), str(cut)], capsys)
    assert code == CorruptCheckpointError.exit_code and err.startswith("error: ") and err.count("\n") == 1


def test_search_finds_the_renamed_finetune(
    library_file: Path, finetune: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["search", "--library", str(library_file), "--format", "json", str(finetune)], capsys)
    assert code == 0
    doc = json.loads(out)
    first = doc["candidates"][0]
    assert first["name"] == "stories260K.bin" and first["verdict"] == "derived"
    assert first["p_adjusted"] < 1e-6 and first["p_adjusted"] >= first["p_value"]
    others = [c for c in doc["candidates"][1:] if c["verdict"] in ("identical", "derived")]
    assert others == []
    assert doc["library"]["size"] == 3 and doc["multiple_testing"]["hypotheses"] == 3

    report = library_file.parent / "search.html"
    code, out, _ = run(
        ["search", "--library", str(library_file), str(finetune), "--html", str(report)], capsys
    )
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("stories260K.bin"))
    assert row.split()[1] == "derived"
    page = report.read_text()
    assert "VERDICT: DERIVED" in page and "derived from stories260K.bin&#x27;s" in page

    # A library that is not there is an error (exit 11), and is not created.
    missing = library_file.parent / "missing.sqlite"
    code, _, err = run(["search", "--library", str(missing), str(finetune)], capsys)
    assert code == 11 and "no fingerprint library" in err and not missing.exists()


def test_search_of_an_exact_copy_is_identical(
    library_file: Path, fixtures_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "renamed-upload.bin"
    shutil.copy(fixtures_dir / "llama2xs.model.bin", copy)
    code, out, _ = run(["search", "--library", str(library_file), "--format", "json", str(copy)], capsys)
    first = json.loads(out)["candidates"][0]
    assert code == 0 and (first["name"], first["verdict"]) == ("llama2xs.model.bin", "identical")


def test_scan_adds_to_the_library_and_reports_failures(
    tmp_path: Path, fixtures_dir: Path, finetune: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = tmp_path / "fleet"
    (fleet / "ok").mkdir(parents=True)
    shutil.copy(fixtures_dir / "stories260K.bin", fleet / "ok" / "stories260K.bin")
    shutil.copytree(finetune, fleet / "tuned-stories")
    (fleet / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    library = tmp_path / "fleet.sqlite"
    records = tmp_path / "scan.jsonl"
    argv = [
        "scan",
        str(fleet),
        "--add",
        "--library",
        str(library),
        "--output",
        str(records),
        "--workers",
        "1",
    ]
    code, out, _ = run([*argv, "--format", "json"], capsys)
    assert code == 1  # one checkpoint failed: the scan says so in its exit status
    doc = json.loads(out)
    assert (doc["total"], doc["ok"], doc["errors"], doc["library_added"]) == (3, 2, 1, 2)
    failed = [r for r in doc["records"] if r["status"] == "error"]
    assert [Path(r["path"]).name for r in failed] == ["bad.safetensors"]
    assert failed[0]["error_type"] == "CorruptCheckpointError"
    # Named by their path under the root, so two models of the same file name stay apart.
    assert Library(library).names() == ["ok/stories260K.bin", "tuned-stories/model.safetensors"]
    assert len(records.read_text().splitlines()) == 3

    # Again: the unchanged checkpoints are skipped, the human summary says so.
    code, out, _ = run(argv, capsys)
    assert code == 1
    assert "2 skipped (unchanged), 1 failed" in out and "bad.safetensors" in out


def test_reading_commands_do_not_create_a_missing_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.sqlite"
    for argv in (
        ["library", "list"],
        ["library", "show", "x"],
        ["library", "remove", "x"],
        ["library", "export", str(tmp_path / "out.jsonl")],
    ):
        code, _, err = run([*argv, "--library", str(missing)], capsys)
        assert code == 11 and "no fingerprint library" in err, argv
    assert not missing.exists() and not (tmp_path / "out.jsonl").exists()


def test_scan_library_needs_add(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["scan", str(tmp_path), "--library", str(tmp_path / "x.sqlite")], capsys)
    assert code == UsageError.exit_code and "--add" in err


def test_hub_cache_entries_are_named_by_repo_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_scan import _cache_repo

    _, state, _ = load_legacy(Path(__file__).parent / "data" / "fixtures" / "stories260K.bin")
    repo = _cache_repo(tmp_path / "hub", state)  # models--karpathy--stories260K, one snapshot
    snapshot = next((repo / "snapshots").iterdir())
    library = str(tmp_path / "lib.sqlite")
    code, out, _ = run(["library", "add", "--library", library, "--format", "json", str(repo)], capsys)
    assert code == 0 and json.loads(out)["added"][0]["name"] == "karpathy/stories260K"
    code, _, err = run(["library", "add", "--library", library, str(snapshot)], capsys)
    assert code == UsageError.exit_code and "karpathy/stories260K" in err  # the same model, same name


def test_scan_headers_only_cannot_add(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["scan", str(tmp_path), "--headers-only", "--add"], capsys)
    assert code == UsageError.exit_code and "--headers-only" in err


def test_schema_doc_lists_every_field(
    library_file: Path, finetune: Path, fixtures_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "library-schema.md").read_text()

    def documented(key: str) -> None:
        assert f"| `{key}` |" in doc, f"{key} is not documented in docs/library-schema.md"

    _, out, _ = run(["search", "--library", str(library_file), "--format", "json", str(finetune)], capsys)
    search_doc = json.loads(out)
    for key, value in search_doc.items():
        if isinstance(value, dict):
            for sub in value:
                documented(f"{key}.{sub}")
        else:
            documented(key)
    for candidate in search_doc["candidates"]:
        for key in candidate:
            if key != "evidence":
                documented(f"candidates[].{key}")
        for key in candidate["evidence"]:
            documented(f"candidates[].evidence.{key}")

    _, out, _ = run(
        ["scan", str(fixtures_dir), "--headers-only", "--workers", "1", "--format", "json"], capsys
    )
    scan_doc = json.loads(out)
    for key in scan_doc:
        documented(key)
    for record in scan_doc["records"]:
        for key in record:
            documented(f"records[].{key}")

    _, out, _ = run(["library", "list", "--library", str(library_file), "--format", "json"], capsys)
    entries = json.loads(out)["entries"]
    for entry in entries:
        for key in entry:
            documented(f"entries[].{key}")
    show = ["library", "show", "--library", str(library_file), "--format", "json", "stories260K.bin"]
    _, out, _ = run(show, capsys)
    for key in json.loads(out):
        if key not in entries[0]:
            documented(key)


def test_a_library_of_an_older_fingerprint_format_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A schema-3 library holding version-1 fingerprints (64-dimension sketches) cannot be brought
    forward without the weights: every command refuses it with exit 23 and one line, untouched."""
    import sqlite3

    from unshell.errors import StaleFingerprintError
    from unshell.library import store

    path = tmp_path / "old.sqlite"
    library = Library(path)
    for name in ("old-a", "old-b"):
        library.db.execute(
            "INSERT INTO fingerprints (name, added, fingerprint_version) VALUES (?, 1.0, 1)", (name,)
        )
    library.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    code, out, err = run(["library", "list", "--library", str(path)], capsys)
    assert code == StaleFingerprintError.exit_code == 23 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "2 fingerprints of format version 1" in lines[0]
    assert "'old-a', 'old-b'" in lines[0] and "re-fingerprint" in lines[0]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3  # left untouched
    assert db.execute("SELECT count(*) FROM fingerprints").fetchone()[0] == 2
    db.close()
    # A schema-3 library of current fingerprints is migrated.
    current = tmp_path / "current.sqlite"
    created = Library(current)
    assert len(created) == 0
    created.close()
    db = sqlite3.connect(current)
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    reopened = Library(current)
    assert len(reopened) == 0
    assert reopened.db.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION == 4
    reopened.close()
