"""``unshell``: the console script. Each command is one library call plus rendering."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import click

from .. import __version__
from ..audit.report import LEVELS
from ..errors import OutputWriteError, UnshellError
from .output import FORMATS, Output, columns, human_bytes, human_count, key_value_table

EXIT_IO_ERROR = OutputWriteError.exit_code  # any operating-system I/O error, input or output
EXIT_OUT_OF_MEMORY = 21
EXIT_INTERNAL = 70
EXIT_FINDING = 1  # `audit --fail-on`: the audit ran, and found something that severe
DECLARED_SHOWN = ("name", "base_model", "base_model_relation", "license", "license_name", "model_type")

format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table for people, json for programs (versioned schema).",
)


html_option = click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=str, dir_okay=False),
    help="Also write a self-contained HTML report to this file (no network resources).",
)


library_option = click.option(
    "--library",
    "library_path",
    type=click.Path(path_type=str, dir_okay=False),
    help="The fingerprint library (SQLite). Default: $UNSHELL_HOME/library.sqlite (~/.cache/unshell).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="unshell")
def cli() -> None:
    """Is this model a shell of another one? Evidence from checkpoints."""


@cli.command("inspect")
@click.argument("path", type=click.Path(path_type=str))
@format_option
@click.option("--tensors", "tensor_map", is_flag=True, help="List every tensor's role and canonical name.")
def inspect_command(path: str, fmt: str, tensor_map: bool) -> None:
    """What a checkpoint is, without reading weight data.

    PATH is a safetensors file or sharded index, a Hugging Face model directory or hub-cache
    folder, a PyTorch .bin/.pt, Meta consolidated.*.pth directory, GGUF, llama2.c export or ONNX.
    """
    from ..inspection import inspect

    result = inspect(path)
    Output(fmt).document(result.to_dict(tensor_map=tensor_map), lambda d: render_inspect(d, tensor_map))


@cli.command("convert")
@click.argument("src", type=click.Path(path_type=str))
@click.option(
    "--to",
    "target",
    type=click.Choice(["llama"]),
    default="llama",
    show_default=True,
    help="Target architecture: Hugging Face Llama, as transformers, vLLM and llama.cpp load it.",
)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(path_type=str),
    help="Directory to create; it must not exist or be empty, unless --force.",
)
@click.option("--force", is_flag=True, help="Replace a non-empty output (only once the new one is complete).")
@click.option(
    "--verify/--no-verify",
    default=None,
    help="Compare source and output logits before writing (default: on when torch and transformers are installed).",
)
@click.option(
    "--mapping",
    type=click.Path(path_type=str),
    help="JSON object {source tensor name: reference name} for roles names and shapes cannot decide.",
)
@click.option(
    "--shard-size", default="5GB", show_default=True, help="Largest safetensors shard (5GB, 500MiB, bytes)."
)
@click.option(
    "--source-digests/--no-source-digests",
    default=True,
    show_default=True,
    help="Record every source file's sha256 in conversion.json (free from a Hub cache, else a second read).",
)
@format_option
def convert_command(
    src: str,
    target: str,
    output: str,
    force: bool,
    verify: bool | None,
    mapping: str | None,
    shard_size: str,
    source_digests: bool,
    fmt: str,
) -> None:
    """Write SRC as a Hugging Face Llama checkpoint in OUTPUT, or refuse and say why.

    Output: safetensors shards with an index, config.json, tokenizer and licence files, a model
    card keeping the original's name, licence and base_model, and conversion.json (hashes,
    transforms, verification). Nothing is written unless the whole conversion succeeds.
    """
    from ..convert import convert

    result = convert(
        src,
        to=target,
        output=output,
        force=force,
        verify=verify,
        mapping=mapping,
        shard_size=shard_size,
        source_digests=source_digests,
        report=lambda line: click.echo(f"note: {line}", err=True),
    )
    Output(fmt).document(result.to_dict(), render_convert)


def render_convert(doc: dict[str, Any]) -> str:
    source, out, verification = doc["source"], doc["output"], doc["verification"]
    weights = [f for f in out["files"] if f["path"].endswith(".safetensors")]
    rows: list[tuple[str, str]] = [
        ("output", doc["output_path"]),
        (
            "source",
            f"{source['path']} ({source['format']}, {source['matched_family']}, rotary {source['rotary']})",
        ),
        ("written", f"{out['tensors']} tensors, {human_bytes(out['bytes'])} in {len(weights)} shard(s)"),
        (
            "exact",
            "yes: every tensor holds the source's bits"
            if doc["exact"]
            else "no: values folded or dequantized",
        ),
    ]
    if verification.get("status") == "ran":
        rows.append(
            (
                "verified",
                f"max |logit diff| {verification.get('max_abs_logit_diff')} "
                f"<= {verification.get('tolerance')} ({verification.get('reference')})",
            )
        )
    else:
        rows.append(("verified", verification.get("reason", "no")))
    for entry in doc["transforms"]:
        if entry["transform"] != "rename":
            rows.append(("transform", f"{entry['to']}: {entry['transform']} x{entry['tensors']}"))
    for note in doc["notes"]:
        rows.append(("note", note))
    return key_value_table(rows)


@cli.command("compare")
@click.argument("a", type=click.Path(path_type=str))
@click.argument("b", type=click.Path(path_type=str))
@format_option
@click.option(
    "--quick",
    is_flag=True,
    help="Decide from embedding anchors and 1 row in 20 of each matrix, no hashing (about 4% of a 7B pair's bytes).",
)
@html_option
def compare_command(a: str, b: str, fmt: str, quick: bool, html_path: str | None) -> None:
    """Did B's weights come from A's, or were they trained independently?

    Reports architecture reuse apart from weight reuse, a verdict (identical, derived,
    independent, inconclusive) with a calibrated p-value for "trained independently", how B was
    derived where it can be told, and which layer of A each layer of B matches.
    """
    from ..lineage.compare import compare

    result = compare(a, b, quick=quick)
    if html_path is not None:
        from ..report.html import compare_html, write_html

        write_html(compare_html(result), html_path)
    Output(fmt).document(result.to_dict(), render_compare)


def _p_text(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "< 1e-300" if p == 0 else f"{p:.3g}"


def render_compare(doc: dict[str, Any]) -> str:
    if doc.get("kind") == "tokenizer-comparison":
        return render_tokenizer_comparison(doc)
    arch = doc["architecture"]
    evidence = doc["evidence"]
    same = "same family" if arch["same_family"] else "different families"
    shapes = "identical shapes" if arch["same_shapes"] else "different shapes"
    rows: list[tuple[str, str]] = [
        ("a", f"{doc['a']['path']} ({doc['a']['family']}, {doc['a']['format']})"),
        ("b", f"{doc['b']['path']} ({doc['b']['family']}, {doc['b']['format']})"),
        (
            "architecture",
            f"{same} ({arch['family_a']} / {arch['family_b']}), {shapes}; {arch['renamed_in_b']} tensors renamed in B",
        ),
        ("verdict", f"{doc['verdict'].upper()}: {doc['reason']}"),
        ("p-value", f"{_p_text(doc['p_value'])} for H0 'B was trained independently of A'"),
    ]
    if doc["score"] is not None:
        rows.append(
            ("score", f"{doc['score']:.3f} (mean similarity of matched matrices; 0 = unrelated, 1 = same)")
        )
    if doc["how"]:
        rows.append(("how", ", ".join(doc["how"])))
    hashes = evidence.get("hashes")
    if hashes:
        rows.append(
            (
                "hashes",
                f"B's parameters with a twin in A: exact {hashes['exact']:.0%}, after bf16 rounding {hashes['rounded']:.0%}, as value multisets {hashes['multiset']:.0%}",
            )
        )
    alignment = evidence.get("alignment")
    if alignment:
        residual = alignment["residual"]
        rows.append(
            (
                "alignment",
                f"{alignment['method']}, residual {residual if residual is not None else 'n/a'} over {alignment['anchors']} anchor tokens",
            )
        )
    if evidence.get("std_profile_correlation") is not None:
        rows.append(
            (
                "std profile",
                f"correlation {evidence['std_profile_correlation']:.3f}; {evidence['std_profile_note']}",
            )
        )
    if doc.get("tokenizer"):
        rows.append(("tokenizer", _relation_text(doc["tokenizer"])))
    for note in doc["notes"]:
        rows.append(("note", note))
    text = key_value_table(rows)
    if doc["layers"] and doc["verdict"] in ("derived", "inconclusive"):  # for unrelated models it is noise
        table = [
            (
                row["layer_b"],
                row["layer_a"],
                f"{row['similarity']:.3f}",
                f"{row['agreeing_units']}/{row['units']}",
            )
            for row in doc["layers"]
        ]
        text += "\nLayer map (each layer of B, the layer of A its matrices match):\n"
        text += columns(("B LAYER", "A LAYER", "SIMILARITY", "AGREEING"), table) + "\n"
    return text


def _family_text(family: dict[str, Any] | None) -> str:
    if not family:
        return "no known family"
    text = f"{family['name']} family ({family['relation']}, {family['kept']}/{family['sampled_tokens']} sampled tokens kept"
    text += f", offset {family['offset']:+d})" if family.get("offset") else ")"
    if family.get("also_matches"):
        text += f"; also matches {', '.join(family['also_matches'])}"
    return text


def render_tokenizer(doc: dict[str, Any]) -> str:
    tokenizer = doc["tokenizer"]
    merges = tokenizer.get("merges")
    rows = [
        ("path", doc["path"]),
        ("tokenizer", f"{tokenizer['kind']} ({tokenizer['model']}), read from {tokenizer['source']}"),
        (
            "tokens",
            f"{tokenizer['vocab_size']:,} ids: {tokenizer['ordinary_tokens']:,} ordinary, {tokenizer['special_tokens']:,} special"
            + (f"; {merges:,} merges" if merges is not None else ""),
        ),
        ("family", _family_text(tokenizer.get("family"))),
    ]
    return key_value_table(rows)


def _relation_text(tokenizer: dict[str, Any]) -> str:
    merges = tokenizer.get("merges")
    text = f"{tokenizer['relation'].upper()}: {tokenizer['reason']}"
    if merges:
        text += (
            f"\nmerges: {merges['shared']:,} shared ({merges['shared_fraction']:.1%} of the smaller list), "
            f"first {merges['common_prefix']:,} in the same order"
        )
    return text


def render_tokenizer_comparison(doc: dict[str, Any]) -> str:
    rows = [
        ("a", f"{doc['a']['path']} ({doc['a']['kind']}, {doc['a']['vocab_size']:,} ids)"),
        ("b", f"{doc['b']['path']} ({doc['b']['kind']}, {doc['b']['vocab_size']:,} ids)"),
        ("tokenizer", _relation_text(doc["tokenizer"])),
    ]
    return key_value_table(rows)


@cli.command("audit")
@click.argument("path", type=click.Path(path_type=str))
@click.option(
    "--against",
    type=click.Path(path_type=str),
    help="A base model to test the weights against (the only evidence that can show a derivative).",
)
@click.option("--quick", is_flag=True, help="Compare weights as `compare --quick` does.")
@click.option(
    "--library",
    "library_path",
    type=click.Path(path_type=str, dir_okay=False),
    help="Without --against: search this fingerprint library for the weights' source (p Holm-adjusted).",
)
@click.option(
    "--fail-on",
    type=click.Choice(LEVELS[:-1]),
    help="Exit with status 1 when a finding is this severe or worse (for CI and upload checks).",
)
@format_option
@html_option
def audit_command(
    path: str,
    against: str | None,
    quick: bool,
    library_path: str | None,
    fail_on: str | None,
    fmt: str,
    html_path: str | None,
) -> None:
    """Disclosure audit: detected lineage (weights, architecture, tokenizer, code) against declared.

    Reports the most severe finding as the level (undisclosed-derivative,
    licence-obligations-unmet, architecture-reuse-undisclosed, inconclusive, note, ok), each
    finding with its evidence and one line of advice.
    """
    from ..audit.report import audit

    result = audit(path, against=against, quick=quick, library=library_path)
    if html_path is not None:
        from ..report.html import audit_html, write_html

        write_html(audit_html(result), html_path)
    Output(fmt).document(result.to_dict(), render_audit)
    if fail_on is not None and LEVELS.index(result.level) <= LEVELS.index(fail_on):
        sys.exit(EXIT_FINDING)


@cli.command("serve")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default)."
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--root",
    "roots",
    multiple=True,
    required=True,
    type=click.Path(path_type=str, exists=True, file_okay=False),
    help="A directory the UI may read checkpoints under (repeatable); nothing outside is opened.",
)
@click.option("--max-jobs", default=2, show_default=True, type=click.IntRange(1, 64), help="Concurrent jobs.")
@click.option(
    "--job-timeout",
    default=600,
    show_default=True,
    type=click.IntRange(1, 7 * 24 * 3600),
    help="Seconds an inspection or a job may run before it is stopped.",
)
@library_option
def serve_command(
    host: str, port: int, roots: tuple[str, ...], max_jobs: int, job_timeout: int, library_path: str | None
) -> None:
    """A local web UI and JSON API over inspect, compare, audit and the library (the `web` extra).

    Reads only under the --root directories, runs nothing from model files, and bounds concurrent
    jobs. The API mirrors the CLI; its OpenAPI schema is at /openapi.json.
    """
    from pathlib import Path

    from ..errors import MissingDependencyError

    try:
        from ..web import serve
    except ImportError as error:
        raise MissingDependencyError(
            f"unshell serve needs the web extra: pip install 'unshell[web]' ({error.name} is missing)"
        ) from None
    serve(
        host=host,
        port=port,
        roots=[Path(r) for r in roots],
        max_jobs=max_jobs,
        library=library_path,
        job_timeout=job_timeout,
    )


def _open_library(path: str | None, *, create: bool = False) -> Any:
    """The library at ``path`` (default: the default one). Only commands that add fingerprints
    create it; the others report a missing library instead of leaving an empty file behind."""
    from ..library import Library, existing_library

    return Library(path) if create else existing_library(path)


@cli.group("library")
def library_group() -> None:
    """The fingerprint library that `unshell search` looks suspects up in.

    A fingerprint is a few megabytes per 7B model: content hashes of every tensor, sketches of
    every matrix and embedding anchors, enough to test lineage without the base weights.
    """


@library_group.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--name", help="The entry's name (one PATH only). Default: the Hub repo id, else the file or folder name."
)
@click.option("--replace", is_flag=True, help="Replace an entry of the same name.")
@library_option
@format_option
def library_add_command(
    paths: tuple[str, ...], name: str | None, replace: bool, library_path: str | None, fmt: str
) -> None:
    """Fingerprint each checkpoint (reads its weights once) and store it in the library."""
    from ..errors import UsageError
    from ..library import add_checkpoint

    if name is not None and len(paths) > 1:
        raise UsageError("--name names one entry: give one PATH with it")
    chatty = fmt == "table" and sys.stderr.isatty()
    with _open_library(library_path, create=True) as library:
        added = []
        for number, path in enumerate(paths, 1):
            if chatty:  # a 7B model takes a minute or more: say what is happening
                click.echo(f"[{number}/{len(paths)}] fingerprinting {path} ...", err=True)
            added.append(add_checkpoint(library, path, name=name, replace=replace))
        doc = {
            "library": str(library.path),
            "added": [entry.to_dict() for entry in added],
            "size": len(library),
        }
    Output(fmt).document(doc, render_library_added)


@library_group.command("list")
@library_option
@format_option
def library_list_command(library_path: str | None, fmt: str) -> None:
    """Every fingerprint in the library, with its family, shape and tokenizer."""
    with _open_library(library_path) as library:
        doc = {"library": str(library.path), "entries": [entry.to_dict() for entry in library.list()]}
    Output(fmt).document(doc, render_library_list)


@library_group.command("show")
@click.argument("name")
@library_option
@format_option
def library_show_command(name: str, library_path: str | None, fmt: str) -> None:
    """One fingerprint: family, shape, tokenizer, source, and what it holds."""
    with _open_library(library_path) as library:
        doc = library.describe(name)
    Output(fmt).document(doc, render_library_show)


@library_group.command("remove")
@click.argument("names", nargs=-1, required=True)
@library_option
@format_option
def library_remove_command(names: tuple[str, ...], library_path: str | None, fmt: str) -> None:
    """Remove entries by name (all or none: an unknown name removes nothing)."""
    with _open_library(library_path) as library:
        library.remove_many(list(names))
        doc = {"library": str(library.path), "removed": list(names), "size": len(library)}
    Output(fmt).document(
        doc, lambda d: f"removed {', '.join(d['removed'])}; {d['size']} left in {d['library']}\n"
    )


@library_group.command("export")
@click.argument("file", type=click.Path(path_type=str, dir_okay=False))
@library_option
@format_option
def library_export_command(file: str, library_path: str | None, fmt: str) -> None:
    """Write the whole library to a portable, checksummed JSON-lines FILE."""
    with _open_library(library_path) as library:
        count = library.export(file)
        doc = {"library": str(library.path), "file": file, "exported": count}
    Output(fmt).document(doc, lambda d: f"exported {d['exported']} fingerprints to {d['file']}\n")


@library_group.command("import")
@click.argument("file", type=click.Path(path_type=str, dir_okay=False))
@click.option("--replace", is_flag=True, help="Replace entries of the same name.")
@library_option
@format_option
def library_import_command(file: str, replace: bool, library_path: str | None, fmt: str) -> None:
    """Add every fingerprint of an exported FILE, all or nothing, after checking each one."""
    with _open_library(library_path, create=True) as library:
        count = library.import_(file, replace=replace)
        doc = {"library": str(library.path), "file": file, "imported": count, "size": len(library)}
    Output(fmt).document(
        doc, lambda d: f"imported {d['imported']} fingerprints; {d['size']} in {d['library']}\n"
    )


@cli.command("search")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--top", default=5, show_default=True, type=click.IntRange(1, 1000), help="Candidates shown.")
@library_option
@format_option
@html_option
def search_command(path: str, top: int, library_path: str | None, fmt: str, html_path: str | None) -> None:
    """Which fingerprints in the library does PATH's weights come from?

    A cheap stage ranks the library by shared content hashes, architecture, width, vocabulary and
    tokenizer; the best candidates get the full lineage test against PATH's weights. p-values are
    Holm-adjusted over the whole library, so a bigger library needs stronger evidence.
    """
    from ..library import search

    with _open_library(library_path) as library:
        result = search(path, library, top=top)
    if html_path is not None:
        from ..report.html import search_html, write_html

        write_html(search_html(result), html_path)
    Output(fmt).document(result.to_dict(), render_search)


@cli.command("scan")
@click.argument("roots", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--output",
    type=click.Path(path_type=str, dir_okay=False),
    help="JSON-lines file, one record per checkpoint; an existing one is resumed from.",
)
@library_option
@click.option(
    "--add/--no-add",
    "add_to_library",
    default=False,
    show_default=True,
    help="Add every fingerprint computed to the library.",
)
@click.option("--headers-only", is_flag=True, help="Read tensor tables only, no weights (no fingerprints).")
@click.option("--engine", type=click.Choice(("local", "ray")), default="local", show_default=True)
@click.option("--address", help="A running Ray cluster (--engine ray); default: start a local one.")
@click.option(
    "--workers",
    type=click.IntRange(1, 4096),
    help="Processes (local) or CPUs (local Ray). Default: every core.",
)
@click.option(
    "--max-depth", default=12, show_default=True, type=click.IntRange(0, 64), help="How deep to look."
)
@format_option
def scan_command(
    roots: tuple[str, ...],
    output: str | None,
    library_path: str | None,
    add_to_library: bool,
    headers_only: bool,
    engine: str,
    address: str | None,
    workers: int | None,
    max_depth: int,
    fmt: str,
) -> None:
    """Fingerprint every checkpoint under ROOTS, locally or on Ray; exit 1 if any failed.

    Finds safetensors, PyTorch, GGUF, ONNX and llama2.c checkpoints and Hugging Face model and
    hub-cache folders. A checkpoint that fails is recorded with its error and the scan goes on; a
    second scan with the same --output skips the checkpoints that did not change.
    """
    from ..scan import scan

    library: Any = None
    if add_to_library and headers_only:
        from ..errors import UsageError

        raise UsageError("--headers-only computes no fingerprints: nothing to --add")
    if add_to_library:
        library = _open_library(library_path, create=True)
    elif library_path is not None:
        from ..errors import UsageError

        raise UsageError("--library is where --add puts fingerprints: give --add with it")
    try:
        summary = scan(
            list(roots),
            library=library,
            engine=engine,
            address=address,
            output=output,
            fingerprints=not headers_only,
            workers=workers,
            progress=fmt == "table",
            max_depth=max_depth,
        )
    finally:
        if library is not None:
            library.close()
    doc = {**summary.to_dict(), "records": summary.records}
    Output(fmt).document(doc, render_scan)
    if summary.exit_code:
        sys.exit(EXIT_FINDING)


def render_library_added(doc: dict[str, Any]) -> str:
    rows = [(e["name"], e["family"] or "?", human_bytes(e["size_bytes"])) for e in doc["added"]]
    return columns(("ADDED", "FAMILY", "SIZE"), rows) + f"\n{doc['size']} fingerprints in {doc['library']}\n"


def render_library_list(doc: dict[str, Any]) -> str:
    if not doc["entries"]:
        return f"the library {doc['library']} is empty (add with: unshell library add PATH)\n"
    rows = [
        (
            e["name"],
            e["family"] or "?",
            human_count(e["parameters"]),
            e["hidden"] or "?",
            e["vocab_size"] or "?",
            e["tokenizer_family"] or "",
            human_bytes(e["size_bytes"]),
        )
        for e in doc["entries"]
    ]
    headers = ("NAME", "FAMILY", "PARAMS", "HIDDEN", "VOCAB", "TOKENIZER", "SIZE")
    return columns(headers, rows) + f"\n{len(rows)} fingerprints in {doc['library']}\n"


def render_library_show(doc: dict[str, Any]) -> str:
    roles = ", ".join(f"{role} {count}" for role, count in doc["sketched_roles"].items())
    rows = [
        ("name", doc["name"]),
        ("family", doc["family"] or "?"),
        ("signature", doc["signature"] or ""),
        ("parameters", human_count(doc["parameters"])),
        ("tokenizer", doc["tokenizer_family"] or "none recorded"),
        ("source", f"{doc['source'] or '?'} ({doc['format'] or '?'})"),
        ("added", doc["added"]),
        ("fingerprint", f"{human_bytes(doc['size_bytes'])}, format version {doc['version']}"),
        ("hashes", f"{doc['tensors']} tensors (exact bytes and bf16-rounded values)"),
        ("sketches", f"{doc['sketched_matrices']} matrices at {doc['sketch_dim']} directions: {roles}"),
        ("anchors", f"{doc['anchor_tokens']} embedding rows"),
    ]
    return key_value_table(rows)


def render_search(doc: dict[str, Any]) -> str:
    suspect = doc["suspect"]
    head = key_value_table(
        [
            ("suspect", suspect["path"] or suspect["name"] or "?"),
            ("family", suspect["family"] or "?"),
            ("library", f"{doc['library']['path']} ({doc['library']['size']} fingerprints)"),
            ("tested", f"{doc['tested']} candidates in full, {doc['screened_out']} screened out"),
        ]
    )
    if not doc["candidates"]:
        body = "no candidates: nothing in the library shares this model's architecture or weights\n"
    else:
        rows = [
            (c["name"], c["verdict"], _p_text(c["p_value"]), _p_text(c["p_adjusted"]), ", ".join(c["how"]))
            for c in doc["candidates"]
        ]
        body = columns(("CANDIDATE", "VERDICT", "P", "P (HOLM)", "HOW"), rows) + "\n"
    notes = "".join(f"note: {n}\n" for n in doc["notes"])
    return head + "\n" + body + notes


def render_scan(doc: dict[str, Any]) -> str:
    failed = [r for r in doc["records"] if r["status"] == "error"]
    rows = [(r["path"], r["error"] or "") for r in failed]
    found = [
        (r["name"], r["format"] or "", r["family"] or "?", human_count(r["parameters"]), r["status"])
        for r in doc["records"]
        if r["status"] != "error"
    ]
    listing = (
        columns(("CHECKPOINT", "FORMAT", "FAMILY", "PARAMS", "STATUS"), found, limit=50) + "\n\n"
        if found
        else ""
    )
    summary = listing + (
        f"{doc['total']} checkpoints ({human_bytes(doc['bytes'])} on disk) in {doc['seconds']:.1f} s on {doc['engine']}: "
        f"{doc['ok']} ok, {doc['skipped']} unchanged, {doc['errors']} failed"
    )
    if doc["library_added"]:
        summary += f"; {doc['library_added']} fingerprints added to the library"
    if doc["output"]:
        summary += f"\nrecords: {doc['output']}"
    text = summary + "\n"
    if rows:
        text += "\n" + columns(("FAILED", "ERROR"), rows, limit=20) + "\n"
    return text


def render_audit(doc: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [("path", doc["path"])]
    if doc["against"]:
        rows.append(("against", doc["against"]))
    rows.append(("level", doc["level"].upper()))
    declared = {k: v for k, v in doc["declared"].items() if isinstance(v, dict) and k in DECLARED_SHOWN}
    if declared:
        rows.append(
            (
                "declared",
                "\n".join(f"{k}: {v.get('value')}  [{v.get('source')}]" for k, v in declared.items()),
            )
        )
    arch = doc["detected"].get("architecture") or {}
    if arch.get("family"):
        rows.append(("architecture", f"{arch['family']} ({arch['renamed_tensors']} tensors renamed)"))
    tokenizer = doc["detected"].get("tokenizer")
    if tokenizer is not None:
        rows.append(("tokenizer", f"{tokenizer['name']} family ({tokenizer['relation']})"))
    for match in doc["detected"].get("code") or []:
        rows.append(
            ("code", f"{match['file']}: closest {match['reference']} (similarity {match['similarity']:.2f})")
        )
    weights = doc["detected"].get("weights")
    if weights and weights.get("source") == "library":
        searched = f"{weights['library']['size']} fingerprints in {weights['library']['path']}"
        if weights["base"] is None:
            rows.append(("weights", f"no source found among {searched}"))
        else:
            how = (
                "by content hashes"
                if weights["p_value"] is None
                else f"p = {_p_text(weights['p_value'])}, Holm-adjusted"
            )
            rows.append(("weights", f"{weights['verdict']}: {weights['base']} ({how}; searched {searched})"))
    elif weights:
        rows.append(
            ("weights", f"{weights['verdict']} vs {weights['base']} (p = {_p_text(weights['p_value'])})")
        )
    licence = doc["detected"].get("licence")
    if licence:
        rows.append(("licence", f"{licence.get('name', licence['id'])}: {licence['why']}"))
    text = key_value_table(rows) + "\nFindings:\n"
    for finding in doc["findings"]:
        text += f"  [{finding['level']}] {finding['message']}\n      advice: {finding['advice']}\n"
    for note in doc["notes"]:
        text += f"  note: {note}\n"
    return text


def render_inspect(doc: dict[str, Any], tensor_map: bool = False) -> str:
    if doc.get("kind") == "tokenizer":
        return render_tokenizer(doc)
    arch = doc["architecture"]
    config = arch["config"] or {}
    rows: list[tuple[str, str]] = [("path", doc["path"]), ("format", f"{doc['format']} ({doc['layout']})")]
    if arch["family"]:
        matched = f", matched as {arch['matched_family']}" if arch["matched_family"] != arch["family"] else ""
        rows.append(
            (
                "architecture",
                f"{arch['family']} ({arch['reference']}){matched}, confidence {arch['confidence']}",
            )
        )
    else:
        rows.append(("architecture", "not recognized"))
    if arch["compatible_with"]:
        rows.append(("same structure", ", ".join(arch["compatible_with"])))
    if config:
        heads = config.get("num_attention_heads")
        kv = config.get("num_key_value_heads")
        parts = [
            f"hidden {config.get('hidden_size', '?')}",
            f"layers {config.get('num_hidden_layers', '?')}",
            f"heads {heads if heads is not None else '?'}/{kv if kv is not None else '?'} kv",
            f"head_dim {config.get('head_dim') if config.get('head_dim') is not None else '?'}",
            f"ffn {config.get('intermediate_size', '?')}",
            f"vocab {config.get('vocab_size', '?')}",
        ]
        tie = config.get("tie_word_embeddings")
        if tie is not None:
            parts.append("tied embeddings" if tie else "untied embeddings")
        rows.append(("config", ", ".join(str(p) for p in parts)))
        if arch.get("declared_config_source"):
            rows.append(("config source", f"shapes, with head counts from {arch['declared_config_source']}"))
    dtypes = ", ".join(f"{k} {human_bytes(v['bytes'])}" for k, v in doc["dtypes"].items())
    rows.append(("parameters", f"{human_count(doc['parameters'])} in {doc['tensors']} tensors ({dtypes})"))
    tokenizer = doc.get("tokenizer")
    if tokenizer:
        text = f"{tokenizer.get('kind')}, {tokenizer.get('vocab_size')} tokens ({tokenizer.get('source')})"
        if "family" in tokenizer:
            text += "\n" + _family_text(tokenizer["family"])
        rows.append(("tokenizer", text))
    claims = {k: v for k, v in (doc.get("declared") or {}).items() if isinstance(v, dict)}
    if claims:
        rows.append(
            ("declared", "\n".join(f"{k}: {v.get('value')}  [{v.get('source')}]" for k, v in claims.items()))
        )
    naming = doc["naming"]
    conventions = ", ".join(f"{k} {v}" for k, v in naming["conventions"].items()) or "none known"
    rows.append(("naming", f"{conventions}; {naming['renamed']} renamed, {naming['ambiguous']} ambiguous"))
    for note in arch["notes"] + doc["notes"]:
        rows.append(("note", note))
    if doc["unexplained"]:
        rows.append(
            (
                "unexplained",
                ", ".join(doc["unexplained"][:8]) + (" ..." if len(doc["unexplained"]) > 8 else ""),
            )
        )
    text = key_value_table(rows)
    if doc["renamed"]:
        text += "\nRenamed tensors (name -> reference name; {i} stands for the layer index):\n"
        text += columns(("NAME", "REFERENCE", "LAYERS", "BY"), _grouped_rows(doc["renamed"]), limit=40) + "\n"
    if tensor_map and "tensor_map" in doc:
        table_rows = [
            (e["name"], e["canonical"] or " | ".join(e.get("candidates", [])), e["resolved_by"])
            for e in doc["tensor_map"]
        ]
        text += "\nAll tensors:\n" + columns(("NAME", "REFERENCE", "BY"), table_rows) + "\n"
    return text


def _layer_pattern(name: str, layer: int | None) -> str:
    if layer is None:
        return name
    return re.sub(rf"(^|[./]){layer}(?=[./]|$)", r"\g<1>{i}", name, count=1)


def _grouped_rows(entries: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """One row per renaming pattern instead of one per layer: 80 layers make one line, not 80."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for entry in entries:
        layer = entry.get("layer")
        targets = [entry["canonical"]] if entry["canonical"] else entry.get("candidates", [])
        target = " | ".join(_layer_pattern(t, layer) for t in targets)
        key = (_layer_pattern(entry["name"], layer), target, entry["resolved_by"])
        groups.setdefault(key, []).append(layer if layer is not None else -1)
    rows = []
    for (name, target, how), layers in groups.items():
        known = sorted(x for x in layers if x >= 0)
        span = (
            f"{len(known)} ({known[0]}-{known[-1]})" if len(known) > 1 else (str(known[0]) if known else "")
        )
        rows.append((name, target, span, how))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning every unshell error into one line and its exit code."""
    try:
        cli.main(args=argv, prog_name="unshell", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UnshellError as exc:
        Output().error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        sys.exit(exc.exit_code)
    except MemoryError:
        click.echo("error: out of memory while reading the input", err=True)
        sys.exit(EXIT_OUT_OF_MEMORY)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        click.echo(f"error: cannot read input: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_IO_ERROR)
    except Exception as exc:  # a bug in unshell, not bad input: one line, and a way to see more
        if os.environ.get("UNSHELL_DEBUG"):
            raise
        click.echo(
            f"internal error: {type(exc).__name__}: {exc} (set UNSHELL_DEBUG=1 for a traceback; please report it)",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(0)
