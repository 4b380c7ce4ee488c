"""Fuzz: the fingerprint library. ``library import`` of exports whose fingerprints and records
were tampered with and whose checksums were then recomputed (issue 13, C3), and library files
changed behind unshell's back (C4); after either, every command that reads the library must
still answer with a result or an unshell error. Only unshell errors may escape (see
`fuzz_support`)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import sqlite3
import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fuzz_support import (
    HUGE_NUMBERS,
    SPECIAL_NUMBERS,
    RawJSON,
    adversarial_json,
    dump_json,
    exercise_library,
    fuzz_settings,
    mostly,
    names,
    reaches,
    run_cli,
    scratch_dir,
    tiny_llama_template,
    usually,
)

_FINGERPRINT: list[bytes] = []


def _fingerprint_bytes() -> bytes:
    """The tiny Llama's fingerprint, computed once."""
    if not _FINGERPRINT:
        import unshell

        _FINGERPRINT.append(unshell.fingerprint(tiny_llama_template(), name="tiny").to_bytes())
    return _FINGERPRINT[0]


def _split(blob: bytes) -> tuple[bytes, dict[str, Any], bytes]:
    from unshell.lineage.fingerprint import MAGIC

    (length,) = struct.unpack_from("<I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    return MAGIC, json.loads(blob[start : start + length]), blob[start + length :]


def _join(magic: bytes, header: Any, payload: bytes) -> bytes:
    encoded = dump_json(header).encode("utf-8", "surrogatepass")
    return magic + struct.pack("<I", len(encoded)) + encoded + payload


def export_file(records: list[dict[str, Any]]) -> str:
    """An export whose record and trailer checksums match the (tampered) records."""
    lines = [
        json.dumps(
            {
                "format": "unshell-fingerprint-library",
                "version": 1,
                "schema_version": 3,
                "count": len(records),
            }
        )
    ]
    digest = hashlib.sha256()
    for record in records:
        line = dump_json(record) + "\n"
        digest.update(line.encode("utf-8", "surrogatepass"))
        lines.append(line.rstrip("\n"))
    lines.append(json.dumps({"end": True, "count": len(records), "records_sha256": digest.hexdigest()}))
    return "\n".join(lines) + "\n"


HEADER_FIELDS = (
    "hidden",
    "layers",
    "vocab_size",
    "parameters",
    "total_bytes",
    "anchor_rows",
    "anchor_stride",
    "anchor_scale",
    "sketch_dim",
    "family",
    "signature",
    "name",
    "source",
    "format",
    "config",
    "dtypes",
    "tokenizer",
    "tensor_numels",
)
numbers = st.one_of(st.sampled_from(SPECIAL_NUMBERS), st.sampled_from(HUGE_NUMBERS[:4]))
lies = usually(numbers, st.one_of(names("llama"), adversarial_json()), every=3)


@st.composite
def tampered_fingerprints(draw: st.DrawFn) -> bytes:
    magic, header, payload = _split(_fingerprint_bytes())
    for key in draw(
        st.lists(usually(st.sampled_from(HEADER_FIELDS[:9]), st.sampled_from(HEADER_FIELDS)), max_size=2)
    ):
        header[key] = draw(usually(numbers, lies, every=4) if key in HEADER_FIELDS[:9] else lies)
    if header.get("units") and draw(st.booleans()):
        unit = dict(header["units"][0])
        unit[draw(st.sampled_from(("std", "layer", "role", "name", "orientation")))] = draw(lies)
        header["units"] = [unit, *header["units"][1:]]
    return _join(magic, header, payload)


@st.composite
def exports(draw: st.DrawFn) -> str:
    records = []
    for index in range(draw(mostly((1,), (2, 3), every=4))):
        blob = (
            draw(tampered_fingerprints())
            if draw(mostly((True,), (False,), every=6))
            else draw(st.binary(max_size=64))
        )
        record: dict[str, Any] = {
            "name": draw(usually(st.just(f"model-{index}"), names("model-0"), every=5)),
            "added": draw(
                usually(
                    st.just(1_700_000_000.0),
                    st.one_of(numbers, st.just(RawJSON("1e400")), names("x")),
                    every=3,
                )
            ),
            "size": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "blob": base64.b64encode(blob).decode("ascii"),
        }
        if draw(mostly((False,), (True,), every=12)):
            record[draw(st.sampled_from(("size", "sha256", "blob", "name")))] = draw(
                st.one_of(numbers, adversarial_json())
            )
        records.append(record)
    return export_file(records)


@reaches("unshell library import: exit 0")
@fuzz_settings(60)
@given(exports())
def test_library_import(export: str) -> None:
    with scratch_dir() as directory:
        source = directory / "export.jsonl"
        source.write_text(export, encoding="utf-8", errors="surrogatepass")
        library = directory / "lib.sqlite"
        run_cli("library", "add", str(tiny_llama_template()), "--library", str(library))
        run_cli("library", "import", str(source), "--library", str(library))
        exercise_library(library)


# -- library files changed behind unshell's back ------------------------------------------------------

_LIBRARY: list[bytes] = []


def _library_bytes() -> bytes:
    """A library holding the tiny Llama, made once."""
    if not _LIBRARY:
        with scratch_dir() as directory:
            library = directory / "lib.sqlite"
            code, _ = run_cli(
                "library", "add", str(tiny_llama_template()), "--library", str(library), "--name", "tiny"
            )
            assert code == 0
            with sqlite3.connect(library) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            _LIBRARY.append(library.read_bytes())
    return _LIBRARY[0]


def _nested_blob(depth: int) -> bytes:
    from unshell.lineage.fingerprint import MAGIC

    header = ("[" * depth + "]" * depth).encode()
    return MAGIC + struct.pack("<I", len(header)) + header


COLUMN_VALUES = (
    "'abc'",
    "-1",
    "1e300",
    "9223372036854775807",
    "X'00ff'",
    "NULL",
    "0.5",
    "'\U0001f600'",
    "''",
)
TAMPERING = st.one_of(
    st.builds(
        lambda column, value: f"UPDATE fingerprints SET {column} = {value}",
        st.sampled_from(
            (
                "hidden",
                "layers",
                "vocab_size",
                "parameters",
                "added",
                "family",
                "name",
                "format",
                "fingerprint_version",
            )
        ),
        st.sampled_from(COLUMN_VALUES),
    ),
    st.builds(
        lambda column, value: f"UPDATE blobs SET {column} = {value}",
        st.sampled_from(("size", "sha256", "blob")),
        st.sampled_from(COLUMN_VALUES),
    ),
    st.sampled_from(
        (
            "DROP TABLE blobs",
            "DROP TABLE content_hashes",
            "DROP TABLE fingerprints",
            "ALTER TABLE blobs RENAME TO old_blobs",
            "CREATE TABLE IF NOT EXISTS blobs (x)",
            "DELETE FROM blobs",
            "DELETE FROM meta",
            "UPDATE meta SET value = 'x'",
            "PRAGMA user_version = 2",
            "PRAGMA user_version = 99",
            "PRAGMA application_id = 0",
            "INSERT INTO fingerprints (name, added) VALUES ('orphan', 0)",
        )
    ),
)


@fuzz_settings(60)
@given(st.lists(TAMPERING, min_size=1, max_size=3), st.sampled_from((None, 10, 100_000)))
def test_tampered_library_file(statements: list[str], nested: int | None) -> None:
    """The right application id and schema version, but tables dropped or renamed, columns of
    the wrong type or out of range, a blob whose header nests 100,000 levels (with a matching
    sha256) (issue 13, C4)."""
    with scratch_dir() as directory:
        library = directory / "lib.sqlite"
        library.write_bytes(_library_bytes())
        with sqlite3.connect(library) as db:
            if nested is not None:
                blob = _nested_blob(nested)
                db.execute(
                    "UPDATE blobs SET blob = ?, size = ?, sha256 = ?",
                    (blob, len(blob), hashlib.sha256(blob).hexdigest()),
                )
            for statement in statements:
                with contextlib.suppress(sqlite3.Error):  # it may not apply after an earlier one
                    db.execute(statement)
        exercise_library(library)
        run_cli("library", "add", str(tiny_llama_template()), "--library", str(library), "--name", "again")
