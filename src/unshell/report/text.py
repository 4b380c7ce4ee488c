"""Plain-text rendering of every result document (`to_dict()`), for the CLI and the web UI.

One renderer per document kind; each takes the JSON document the library returns, so the text is
made from exactly what ``--format json`` prints. The CLI's `Output` and the web UI's text blocks
both call these.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "columns",
    "human_bytes",
    "human_count",
    "key_value_table",
    "render_audit",
    "render_compare",
    "render_convert",
    "render_inspect",
    "render_library_added",
    "render_library_list",
    "render_library_show",
    "render_scan",
    "render_search",
    "render_tokenizer",
    "render_tokenizer_comparison",
]

# The declared fields the text reports show (all of them are in the JSON).
DECLARED_SHOWN = ("name", "base_model", "base_model_relation", "license", "license_name", "model_type")


def key_value_table(rows: Sequence[tuple[str, str]]) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    lines = []
    for key, value in rows:
        first, *rest = str(value).split("\n") or [""]
        lines.append(f"{key.upper():<{width}}  {first}")
        lines.extend(f"{'':<{width}}  {line}" for line in rest)
    return "\n".join(lines) + "\n"


def columns(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, limit: int | None = None) -> str:
    shown = list(rows if limit is None else rows[:limit])
    table = [list(headers)] + [[("" if c is None else str(c)) for c in row] for row in shown]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if limit is not None and len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more (use --format json for all)")
    return "\n".join(lines)


def human_count(value: int | None) -> str:
    if value is None:
        return "?"
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return str(value)


def human_bytes(value: int | None) -> str:
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


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
            else "no: values folded, dequantized or rounded (--dtype)",
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
        if verification.get("rounded_to"):
            moved = verification.get("rounding_logit_diff")
            rows.append(
                (
                    "rounding",
                    f"weights rounded to {', '.join(verification['rounded_to'])} move logits by up to "
                    f"{'an unbounded amount' if moved is None else format(moved, '.3g')} "
                    f"(same top token at {verification.get('rounding_argmax_agreement') or 0:.0%} of positions)",
                )
            )
    else:
        rows.append(("verified", verification.get("reason", "no")))
    tokenizer = doc.get("tokenizer") or {}
    if tokenizer.get("from") not in (None, "none"):
        rows.append(
            (
                "tokenizer",
                f"{tokenizer['from']} from {tokenizer.get('source')}: {', '.join(tokenizer['files'])}",
            )
        )
    for entry in doc["transforms"]:
        if entry["transform"] != "rename":
            rows.append(("transform", f"{entry['to']}: {entry['transform']} x{entry['tensors']}"))
    for note in doc["notes"]:
        rows.append(("note", note))
    return key_value_table(rows)


def p_text(p: float | None, log10_p: float | None = None) -> str:
    """A p-value as every report writes it: "< 1e-300" for one below what a double holds, never 0
    (with its exponent, ``log10_p``, when the caller has it)."""
    if p is None:
        return "n/a"
    if p < 1e-300 and log10_p is not None:  # past what a float shows: its exponent says how far
        return f"< 1e-300 (log10 p = {log10_p:.0f})"
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
        (
            "p-value",
            f"{p_text(doc['p_value'], doc.get('log10_p_value'))} for H0 'B was trained independently of A'",
        ),
    ]
    from ..lineage.compare import alignment_text, twins_text

    alignment = alignment_text(evidence.get("alignment"))
    if alignment:
        rows.append(("alignment", alignment))
    if doc["score"] is not None:
        rows.append(
            (
                "similarity",
                f"{doc['score']:.3f}, descriptive only: the verdict rests on the p-value (mean sketch "
                "similarity of one model's matrices to their best match in the other, the better direction; 1 = same)",
            )
        )
    if doc["how"]:
        rows.append(("how", ", ".join(doc["how"])))
    from ..lineage.experts import expert_map_rows, expert_map_text

    experts = expert_map_text(doc.get("experts"))
    if experts:
        rows.append(("experts", experts))
    from ..lineage.change import value_added_text

    if doc.get("value_added"):
        rows.append(("value added", value_added_text(doc["value_added"])))
    hashes = evidence.get("hashes")
    if hashes:
        rows.append(
            (
                "hashes",
                f"B's parameters with a twin in A: exact {hashes['exact']:.0%}, after bf16 rounding {hashes['rounded']:.0%}, as value multisets {hashes['multiset']:.0%}",
            )
        )
    twins = twins_text(evidence.get("exact_twins"))
    if twins:
        rows.append(("exact twins", twins))
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
    expert_rows = expert_map_rows(doc.get("experts"))
    if expert_rows:
        text += "\nExpert map (each FFN block of B -> the block of A it copies, or new; neuron-twin similarity):\n"
        text += columns(("B LAYER", "A LAYER", "ATTENTION", "EXPERTS"), expert_rows) + "\n"
    return text


def _family_text(family: dict[str, Any] | None) -> str:
    if not family:
        return "no known family"
    kept, sampled, relation = family["kept"], family["sampled_tokens"], family["relation"]
    where = f"at their id {family['offset']:+d}" if family.get("offset") else "at the same id"
    if kept == sampled:
        text = f"{family['name']} family ({relation}: all {sampled} sampled tokens {where})"
    else:  # a family is named with 99% of its sample in place (a token whose bytes repeat counts once)
        text = (
            f"{family['name']} family ({relation} by a 1-in-32 sample: {kept} of {sampled} "
            f"sampled tokens {where}, 99% needed)"
        )
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
            (c["name"], c["verdict"], p_text(c["p_value"]), p_text(c["p_adjusted"]), ", ".join(c["how"]))
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
        f"{doc['ok']} ok, {doc['skipped']} skipped (unchanged), {doc['errors']} failed"
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
                else f"p = {p_text(weights['p_value'])}, Holm-adjusted"
            )
            rows.append(("weights", f"{weights['verdict']}: {weights['base']} ({how}; searched {searched})"))
    elif weights:
        rows.append(
            ("weights", f"{weights['verdict']} vs {weights['base']} (p = {p_text(weights['p_value'])})")
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
        if config.get("num_experts") is not None:
            used = config.get("num_experts_per_tok")
            parts.append(f"experts {config['num_experts']}" + (f" ({used} per token)" if used else ""))
        if config.get("first_k_dense_replace"):
            parts.append(f"first {config['first_k_dense_replace']} layers dense")
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


def render_profile_recorded(doc: dict[str, Any]) -> str:
    """`unshell library profile`: what was recorded and what it cost."""
    profile, spent = doc["profile"], doc["spent"]
    rows = [
        ("profile", profile["name"]),
        ("answered by", profile["source"]),
        (
            "prompts",
            f"{profile['prompts']} from {profile['prompt_set']} (seed {profile['seed']}), "
            f"{profile['max_tokens']} new tokens, {profile['mode']} mode",
        ),
        (
            "spent",
            f"{spent['requests']} requests, {spent['cached']} answered from the cache, {spent['tokens']} tokens",
        ),
        ("library", doc["library"]),
    ]
    return key_value_table(rows) + "\n"


def render_probe(doc: dict[str, Any]) -> str:
    """`unshell probe`: one row per candidate, then what was asked and what it cost."""
    prompts = doc["prompts"]
    spent = doc["spent"]
    rows: list[tuple[str, str]] = [
        ("suspect", doc["suspect"]),
        ("controls", ", ".join(f"{c['model']} (agreement {c['agreement']:.2f})" for c in doc["controls"])),
        (
            "prompts",
            f"{prompts['used']} of {prompts['planned']} from {prompts['set']} (seed {prompts['seed']}), "
            f"{prompts['max_tokens']} new tokens, {prompts['mode']} mode",
        ),
        (
            "spent",
            f"{spent['requests']} requests (budget {spent['budget']}), {spent['cached']} answered from the cache, "
            f"{spent['tokens']} tokens, {spent['seconds']:.1f} s",
        ),
    ]
    rows.extend(("note", note) for note in doc["notes"])
    table = [
        (
            c["candidate"],
            c["verdict"].upper(),
            p_text(c["p_value"]),
            f"{c['agreement']:.2f}",
            f"{c['control_agreement']:.2f}",
            f"{c['exact_match']:.0%}",
            c["reason"],
        )
        for c in doc["candidates"]
    ]
    headers = ("candidate", "verdict", "p (Holm)", "agreement", "controls", "identical", "why")
    return (
        key_value_table(rows)
        + "\n"
        + columns(headers, table)
        + f"\n\np: H0 'the suspect is unrelated to the candidate', alpha {doc['alpha']}\n"
    )
