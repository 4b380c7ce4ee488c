"""The fingerprint library's store: schema and migrations, WAL and busy timeout, durability when a
writer is killed mid-transaction, concurrent writers, export/import with verification.

These tests use a stand-in fingerprint (JSON bytes) so they do not depend on how fingerprints are
computed; `tests/test_search.py` runs the real ones end to end."""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from unshell.errors import CorruptCheckpointError, UnsupportedFormatError, UsageError
from unshell.library import Library, store
from unshell.library.search import cheap_candidates, holm

SRC = str(Path(__file__).resolve().parent.parent / "src")


@dataclass
class FakeFingerprint:
    name: str
    family: str | None = "llama"
    signature: str | None = "llama|h128|l4|q4|kv2|ffn256|v512"
    hidden: int | None = 128
    layers: int | None = 4
    vocab_size: int | None = 512
    parameters: int | None = 1000
    tokenizer: dict[str, Any] | None = field(default_factory=lambda: {"family": "Llama 2"})
    content_hashes: list[str] = field(default_factory=list)
    format: str = "hf"
    source: str = ""
    version: int = 2  # the current fingerprint format (`FINGERPRINT_VERSION`)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> FakeFingerprint:
        return cls(**json.loads(data))


@pytest.fixture(autouse=True)
def fake_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_decode", FakeFingerprint.from_bytes)


def test_default_path_follows_unshell_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNSHELL_HOME", str(tmp_path / "home" / "nested"))
    library = Library()
    assert library.path == tmp_path / "home" / "nested" / "library.sqlite"
    assert len(library) == 0  # created on first use, parents too
    assert library.path.is_file()
    monkeypatch.delenv("UNSHELL_HOME")
    assert store.default_library_path() == Path.home() / ".cache" / "unshell" / "library.sqlite"


def test_pragmas(tmp_path: Path) -> None:
    library = Library(tmp_path / "lib.sqlite")
    db = library.db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == store.BUSY_TIMEOUT_MS
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert db.execute("PRAGMA application_id").fetchone()[0] == store.APPLICATION_ID
    # a second connection sees WAL too (it is a property of the file)
    other = sqlite3.connect(tmp_path / "lib.sqlite")
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


def test_add_get_list_remove(tmp_path: Path) -> None:
    library = Library(tmp_path / "lib.sqlite")
    a = FakeFingerprint("a", content_hashes=["AA" * 16, "bb" * 16])
    assert library.add(a) == "a"
    assert library.add(FakeFingerprint("x"), name="b") == "b"
    assert len(library) == 2 and "a" in library and "zz" not in library
    assert library.get("a") == a
    with pytest.raises(UsageError, match="already holds"):
        library.add(a)
    changed = FakeFingerprint("a", hidden=64)
    library.add(changed, replace=True)
    assert library.get("a").hidden == 64 and len(library) == 2
    rows = library.list()
    assert [r.name for r in rows] == ["a", "b"]
    assert rows[0].tokenizer_family == "Llama 2" and rows[0].size == len(changed.to_bytes())
    assert set(rows[0].to_dict()) >= {
        "name",
        "family",
        "signature",
        "parameters",
        "tokenizer_family",
        "added",
        "size_bytes",
    }
    library.remove("a")
    assert library.names() == ["b"]
    # the content hashes went with it (foreign key cascade)
    assert library.db.execute("SELECT count(*) FROM content_hashes").fetchone()[0] == 0
    with pytest.raises(UsageError):
        library.remove("a")
    with pytest.raises(UsageError):
        library.get("a")
    with pytest.raises(UsageError):
        library.add(FakeFingerprint(""))


def test_corrupt_blob_is_detected(tmp_path: Path) -> None:
    library = Library(tmp_path / "lib.sqlite")
    library.add(FakeFingerprint("a"))
    library.db.execute("UPDATE blobs SET blob = X'00'")
    with pytest.raises(CorruptCheckpointError, match="sha256"):
        library.get("a")


# --- schema versions -------------------------------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE fingerprints (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, family TEXT, signature TEXT,
    hidden INTEGER, vocab_size INTEGER, parameters INTEGER, added REAL NOT NULL, blob BLOB NOT NULL);
CREATE TABLE content_hashes (hash TEXT NOT NULL,
    fingerprint_id INTEGER NOT NULL REFERENCES fingerprints(id) ON DELETE CASCADE,
    PRIMARY KEY (hash, fingerprint_id)) WITHOUT ROWID;
CREATE INDEX fingerprints_family ON fingerprints(family);
CREATE INDEX fingerprints_signature ON fingerprints(signature);
"""


def test_migration_from_version_1(tmp_path: Path) -> None:
    """A library written by the first schema (blobs inline, no tokenizer column) opens, migrated,
    with every fingerprint and content hash kept and the new columns read back from the blobs."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.execute(f"PRAGMA application_id = {store.APPLICATION_ID}")
    db.execute("PRAGMA user_version = 1")
    for i, fp in enumerate(
        [FakeFingerprint("old-a", content_hashes=["ab" * 16]), FakeFingerprint("old-b")], 1
    ):
        db.execute(
            "INSERT INTO fingerprints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                i,
                fp.name,
                fp.family,
                fp.signature,
                fp.hidden,
                fp.vocab_size,
                fp.parameters,
                1000.0 + i,
                fp.to_bytes(),
            ),
        )
    db.execute("INSERT INTO content_hashes VALUES (?, 1)", ("ab" * 16,))
    db.commit()
    db.close()

    library = Library(path)
    assert library.db.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert library.names() == ["old-a", "old-b"]
    entry = library.list()[0]
    assert entry.tokenizer_family == "Llama 2" and entry.layers == 4 and entry.added == 1001.0
    assert library.get("old-a").content_hashes == ["ab" * 16]
    found = cheap_candidates(library, store.cheap_signals(FakeFingerprint("q")), ["ab" * 16])
    assert found[0].name == "old-a" and found[0].shared_hashes == 1
    assert library.integrity_check() == "ok"
    assert library.db.execute("PRAGMA foreign_key_check").fetchall() == []
    library.remove("old-a")  # the rebuilt content-hash table still cascades
    assert library.db.execute("SELECT count(*) FROM content_hashes").fetchone()[0] == 0


def test_failed_migration_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.execute(f"PRAGMA application_id = {store.APPLICATION_ID}")
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO fingerprints VALUES (1, 'bad', NULL, NULL, NULL, NULL, NULL, 1.0, X'FF00')")
    db.commit()
    db.close()
    with pytest.raises(CorruptCheckpointError, match="does not decode"):
        len(Library(path))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("SELECT name FROM fingerprints").fetchall() == [("bad",)]
    db.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    Library(path).add(FakeFingerprint("a"))
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(UnsupportedFormatError, match="newer"):
        len(Library(path))


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(UnsupportedFormatError, match="not an unshell library"):
        len(Library(other))
    text = tmp_path / "text.sqlite"
    text.write_text("hello, this is not a database at all" * 100)
    with pytest.raises(UnsupportedFormatError):
        len(Library(text))


# --- durability and concurrency --------------------------------------------------------------------

CHILD_PRELUDE = f"""
import json, sys
sys.path.insert(0, {SRC!r})
from unshell.library import Library

class FP:
    def __init__(self, name):
        self.name, self.family, self.signature, self.hidden = name, "llama", "sig", 128
        self.vocab_size, self.tokenizer, self.content_hashes = 512, {{"family": "Llama 2"}}, ["%064x" % hash(name)]
    def to_bytes(self):
        return json.dumps({{"name": self.name}}).encode() + b"x" * 4096
"""


def test_killed_writer_loses_only_its_open_transaction(tmp_path: Path) -> None:
    path = tmp_path / "lib.sqlite"
    committed = 20
    script = CHILD_PRELUDE + textwrap.dedent(
        f"""
        from unshell.library.store import _transaction
        library = Library({str(path)!r})
        for i in range({committed}):
            library.add(FP(f"committed-{{i}}"))
        with _transaction(library.db) as db:
            for i in range(100000):
                library._insert(db, f"open-{{i}}", b"y" * 4096, {{c: None for c in __import__("unshell.library.store", fromlist=["COLUMNS"]).COLUMNS}}, [], 0.0, replace=False)
                if i == 500:
                    print("writing", flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "writing"
    time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    library = Library(path)
    names = library.names()
    assert sorted(names) == sorted(f"committed-{i}" for i in range(committed))
    assert all(library.get_bytes(n).startswith(b'{"name"') for n in names)
    assert library.integrity_check() == "ok"
    library.add(FakeFingerprint("after"))  # the file is writable again (the hot WAL was recovered)
    assert len(library) == committed + 1


def test_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "lib.sqlite"
    writers, each = 4, 25
    script = CHILD_PRELUDE + textwrap.dedent(
        f"""
        library = Library({str(path)!r})
        for i in range({each}):
            library.add(FP(f"w{{sys.argv[1]}}-{{i}}"))
        """
    )
    children = [subprocess.Popen([sys.executable, "-c", script, str(w)]) for w in range(writers)]
    for child in children:
        assert child.wait(timeout=120) == 0
    library = Library(path)
    assert sorted(library.names()) == sorted(f"w{w}-{i}" for w in range(writers) for i in range(each))
    assert library.db.execute("SELECT count(*) FROM content_hashes").fetchone()[0] == writers * each
    assert library.integrity_check() == "ok"


def test_busy_writer_waits(tmp_path: Path) -> None:
    """A second writer waits for the first one's transaction instead of failing at once."""
    path = tmp_path / "lib.sqlite"
    first = Library(path)
    first.add(FakeFingerprint("a"))
    script = CHILD_PRELUDE + textwrap.dedent(
        f"""
        import time
        library = Library({str(path)!r})
        start = time.monotonic()
        library.add(FP("b"))
        print(round(time.monotonic() - start, 2))
        """
    )
    first.db.execute("BEGIN IMMEDIATE")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)
    first.db.execute("COMMIT")
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    assert float(out.strip()) >= 0.3
    assert sorted(first.names()) == ["a", "b"]


# --- export and import -----------------------------------------------------------------------------


def _filled(path: Path) -> Library:
    library = Library(path)
    library.add(FakeFingerprint("a", content_hashes=["aa" * 32]))
    library.add(FakeFingerprint("b", family="qwen2", hidden=256, tokenizer=None))
    library.add(FakeFingerprint("c", signature="other", vocab_size=32000))
    return library


def test_export_import_round_trip(tmp_path: Path) -> None:
    source = _filled(tmp_path / "a.sqlite")
    assert source.export(tmp_path / "lib.jsonl") == 3
    target = Library(tmp_path / "b.sqlite")
    assert target.import_(tmp_path / "lib.jsonl") == 3
    assert target.list() == source.list()
    for name in source.names():
        assert target.get_bytes(name) == source.get_bytes(name)
    query = store.cheap_signals(FakeFingerprint("q"))
    assert cheap_candidates(target, query, ["aa" * 32]) == cheap_candidates(source, query, ["aa" * 32])
    # importing again clashes on names unless replace; a clash writes nothing
    with pytest.raises(UsageError, match="already holds"):
        target.import_(tmp_path / "lib.jsonl")
    assert target.import_(tmp_path / "lib.jsonl", replace=True) == 3
    assert len(target) == 3


@pytest.mark.parametrize(
    "damage",
    ["blob", "sha", "truncate", "drop-record", "trailer", "not-json", "format", "version", "garbage-after"],
)
def test_corrupt_import_is_refused(tmp_path: Path, damage: str) -> None:
    source = _filled(tmp_path / "a.sqlite")
    exported = tmp_path / "lib.jsonl"
    source.export(exported)
    lines = exported.read_text().splitlines(keepends=True)
    if damage == "blob":
        record = json.loads(lines[1])
        record["blob"] = base64.b64encode(b'{"name": "evil"}').decode()
        lines[1] = json.dumps(record, sort_keys=True) + "\n"
    elif damage == "sha":
        record = json.loads(lines[2])
        record["sha256"] = "0" * 64
        lines[2] = json.dumps(record, sort_keys=True) + "\n"
    elif damage == "truncate":
        lines = lines[:-1]
        lines[-1] = lines[-1][:-20]
    elif damage == "drop-record":
        del lines[2]
    elif damage == "trailer":
        lines = lines[:-1]
    elif damage == "not-json":
        lines[1] = "{nope\n"
    elif damage == "format":
        lines[0] = json.dumps({"format": "something-else", "version": 1}) + "\n"
    elif damage == "version":
        manifest = json.loads(lines[0])
        manifest["version"] = 99
        lines[0] = json.dumps(manifest) + "\n"
    elif damage == "garbage-after":
        lines.append("{}\n")
    exported.write_text("".join(lines))
    target = Library(tmp_path / "b.sqlite")
    target.add(FakeFingerprint("keep"))
    expected = UnsupportedFormatError if damage in ("format", "version") else CorruptCheckpointError
    with pytest.raises(expected):
        target.import_(exported)
    assert target.names() == ["keep"]  # all or nothing


def test_import_refuses_undecodable_blobs(tmp_path: Path) -> None:
    """A blob with a correct sha256 that does not decode as a fingerprint is refused too."""
    blob = b"\x80\x04not a fingerprint"
    import hashlib

    record = {
        "name": "x",
        "added": 1.0,
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "blob": base64.b64encode(blob).decode(),
    }
    line = json.dumps(record, sort_keys=True) + "\n"
    trailer = {"end": True, "count": 1, "records_sha256": hashlib.sha256(line.encode()).hexdigest()}
    path = tmp_path / "x.jsonl"
    path.write_text(
        json.dumps({"format": store.EXPORT_FORMAT, "version": 1, "count": 1})
        + "\n"
        + line
        + json.dumps(trailer)
        + "\n"
    )
    with pytest.raises(CorruptCheckpointError, match="not a fingerprint"):
        Library(tmp_path / "b.sqlite").import_(path)


# --- the candidate stage and Holm ------------------------------------------------------------------


def test_cheap_candidates_rank_and_bound(tmp_path: Path) -> None:
    library = Library(tmp_path / "lib.sqlite")
    library.add(FakeFingerprint("same-signature"))
    library.add(
        FakeFingerprint(
            "shares-a-hash",
            family="gpt2",
            signature="g",
            hidden=768,
            vocab_size=50257,
            tokenizer=None,
            content_hashes=["cd" * 32],
        )
    )
    library.add(FakeFingerprint("same-hidden", family="qwen2", signature="q", vocab_size=512, tokenizer=None))
    library.add(FakeFingerprint("same-tokenizer", family="qwen2", signature="q", hidden=7, vocab_size=1))
    library.add(
        FakeFingerprint("nothing", family="bert", signature="b", hidden=7, vocab_size=1, tokenizer=None)
    )
    for i in range(10):
        library.add(
            FakeFingerprint(f"family-{i:02d}", signature="f", hidden=999, vocab_size=3, tokenizer=None)
        )
    for i in range(50):
        library.add(
            FakeFingerprint(
                f"filler-{i:02d}", family="mistral", signature="m", hidden=9, tokenizer=None, vocab_size=3
            )
        )
    query = store.cheap_signals(FakeFingerprint("q"))
    found = cheap_candidates(library, query, ["cd" * 32], limit=3)
    assert [c.name for c in found] == ["shares-a-hash", "same-signature", "same-hidden"]
    assert found[1].matched == ["signature", "family", "hidden", "tokenizer_family", "vocab_size"]
    assert found[0].shared_hashes == 1 and found[2].matched == ["hidden", "vocab_size"]
    assert len(cheap_candidates(library, query, [], limit=5)) == 5
    everything = {c.name for c in cheap_candidates(library, query, ["cd" * 32], limit=100)}
    assert everything == {"shares-a-hash", "same-signature", "same-hidden", "same-tokenizer"} | {
        f"family-{i:02d}" for i in range(10)
    }


def test_holm_known_values() -> None:
    # the textbook example: p = 0.01, 0.04, 0.03, 0.005 with m = 4
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # monotone: a larger raw p never gets a smaller adjusted p
    assert holm([0.001, 0.0011, 0.5]) == pytest.approx([0.003, 0.003, 0.5])
    # None counts as 1, adjusted p never exceeds 1
    assert holm([None, 0.9, 0.2]) == pytest.approx([1.0, 1.0, 0.6])
    # untested hypotheses (m_total) multiply by the library size
    assert holm([1e-8, 1e-3], m_total=1000) == pytest.approx([1e-5, 0.999])
    assert holm([], m_total=10) == []
    assert holm([0.0]) == [0.0]
