"""HTML reports: `compare_html`, `audit_html`, `search_html` and `write_html`.

The page is one self-contained file: inline CSS, inline SVG drawn from the result's numbers, no
JavaScript, no fonts, and no web address at all (addresses quoted from model cards or licence
texts are shown defanged, ``https[:]//``, so that nothing in the file can load or link anything).
Every string that comes from a model's files (paths, tensor names, card values) is escaped:
those are chosen by whoever published the model.

This module turns a result into the facts and sentences a page states; the markup is in
``report/templates/`` (Jinja2, autoescaped, every printed value through `markup.safe_text`), the
charts in `svg.py`. Each fact is readable without colour: verdicts and levels are spelled out.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..auditing.report import LEVELS, AuditResult
from ..lineage.compare import (
    INDEPENDENT_P,
    PROFILE_NULL_ABOVE_09,
    PROFILE_NULL_MAX,
    PROFILE_NULL_MEDIAN,
    CompareResult,
    alignment_text,
    twins_text,
)
from ..lineage.experts import expert_map_rows, expert_map_text
from ..tokenizers.report import TokenizerComparison
from .markup import (
    DERIVED_P_TEXT,
    VERDICT_MEANING,
    chance_bound,
    level_class,
    p_relation,
    p_text,
    percent,
    plain,
    render,
)
from .svg import change_bars_svg, heatmap_svg, line_chart_svg, profile_band_svg

__all__ = ["audit_html", "chance_bound", "compare_html", "search_html", "write_html"]


def _page_context(title: str, toc: list[tuple[str, str]]) -> dict[str, Any]:
    """What `base.html` needs besides the report's own facts."""
    from .. import __version__

    return {"title": title, "toc": toc, "version": __version__}


def _verdict_text(verdict: str, p: float | None, reason: str, how: Sequence[str]) -> tuple[str, str]:
    """(the verdict in one sentence, what its p-value means)."""
    derived_how = f" ({', '.join(how)})" if how else ""
    if verdict == "identical":
        return (
            f"B holds A's weights: the same values{derived_how}, proven by content hashes ({reason}).",
            "No p-value is needed: identical values cannot come from independent training.",
        )
    if verdict == "derived":
        assert p is not None
        return (
            f"B's weights were derived from A's, or both from a common ancestor{derived_how}: p {p_relation(p)}.",
            f"The chance that independently trained models look this alike is {chance_bound(p)}. "
            f"'Derived' is only said when this chance is below {DERIVED_P_TEXT}. {reason}.",
        )
    if verdict == "independent":
        assert p is not None
        return (
            f"No sign that B's weights come from A's: p = {p:.2g}.",
            f"Independently trained models look at least this alike {percent(p)} of the time, so "
            f"the weights show nothing beyond chance (a p-value of {INDEPENDENT_P} or more reads "
            "'independent'). This speaks of the weights only: the architecture or the tokenizer may "
            "still be borrowed, which the sections below report apart.",
        )
    if p is not None:
        return (
            f"Inconclusive: {reason}.",
            f"The chance that independently trained models look this alike is {chance_bound(p)}: too "
            f"large to claim derivation (that needs p < {DERIVED_P_TEXT}), too small to call the models "
            f"independent (p >= {INDEPENDENT_P}). No claim is made either way.",
        )
    return (
        f"Inconclusive: {reason}.",
        "The weight test could not run, so there is no p-value and no claim either way.",
    )


_LEVEL_MEANING = {
    "undisclosed-derivative": "the weights derive from another model, and the model card does not name it",
    "licence-obligations-unmet": "a licence this model is bound by asks for something its files do not show",
    "architecture-reuse-undisclosed": "the architecture (or the model code) is another model's and neither "
    "the config nor the card says so; reusing it is fine, not saying so is the fault",
    "inconclusive": "the evidence neither shows nor excludes reuse; no claim is made",
    "note": "for information: nothing undisclosed",
    "ok": "nothing undisclosed found",
}

_RELATION_MEANING = {
    "identical": "every id holds the same token",
    "extension": "B keeps all of A's ids and adds more",
    "shifted-extension": "all of A is in B at one constant id offset (tokens inserted in front)",
    "subset": "A keeps all of B's ids (B is A truncated)",
    "pruned": "B's tokens are nearly all A's, at other ids (a vocabulary cut and compacted)",
    "renumbered": "the two hold nearly the same tokens at different ids",
    "common-prefix": "both start with the same long run of ids, then diverge",
    "independent": "none of the above: no id-level relation",
}

_CONFIG_ROWS = (
    ("hidden_size", "hidden size"),
    ("num_hidden_layers", "layers"),
    ("num_attention_heads", "attention heads"),
    ("num_key_value_heads", "key/value heads"),
    ("head_dim", "head dim"),
    ("intermediate_size", "FFN width"),
    ("vocab_size", "vocabulary"),
    ("tie_word_embeddings", "tied embeddings"),
)


def _layer_pattern(name: str, layer: int | None) -> str:
    if layer is None:
        return name
    return re.sub(rf"(^|[./]){layer}(?=[./]|$)", r"\g<1>{i}", name, count=1)


def grouped_renames(entries: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(name pattern, reference pattern, layers, decided by): one row per renaming pattern, with
    ``{i}`` for the layer index, as ``unshell inspect`` prints them."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for entry in entries:
        layer = entry.get("layer")
        targets = [entry["canonical"]] if entry.get("canonical") else entry.get("candidates", [])
        target = " | ".join(_layer_pattern(t, layer) for t in targets)
        key = (_layer_pattern(entry["name"], layer), target, str(entry.get("resolved_by", "")))
        groups.setdefault(key, []).append(layer if layer is not None else -1)
    rows = []
    for (name, target, how), layers in groups.items():
        known = sorted(x for x in layers if x >= 0)
        span = (
            f"{len(known)} ({known[0]}-{known[-1]})" if len(known) > 1 else (str(known[0]) if known else "")
        )
        rows.append((name, target, span, how))
    return rows


_HOW_TO_READ_COMPARE = (
    "The verdict answers one question: did B's weights come from A's (or from a common ancestor)? "
    "'derived' needs p < 1e-6; 'independent' means p >= 0.01; anything between, or a test that could "
    "not run, is 'inconclusive'. 'identical' is proven by content hashes instead.",
    "The p-value is for the hypothesis 'B was trained independently of A'. It is calibrated: over 210 "
    "independent pairs none fell below 0.1. A tiny p-value says that chance alone cannot explain how "
    "alike the weights are.",
    "The test is blind to renaming, re-fusing, neuron and head permutations, sign flips and rotations "
    "of the residual stream: disguising a copy that way does not hide it.",
    "Architecture reuse (same design, same shapes, renamed tensors) is legitimate and reported apart: "
    "it is no evidence about the weights.",
    "The heatmap shows where B's layers come from: one dark cell per row for a derivative; two rows "
    "with the same best column for duplicated layers; a column no row picks for a dropped layer. "
    "Matrices whose names give no layer index (an ONNX export's anonymous weights) are placed in "
    "layers by their order in the file.",
    "The std-profile correlation is shown because it is often quoted, not because it decides: "
    "unrelated models of one architecture score high on it too.",
    "The tokenizer relation says whether B's vocabulary keeps A's token ids; tokenizers are shared "
    "legitimately, so it names no base by itself.",
)

_HOW_TO_READ_AUDIT = (
    "The audit sets what the evidence detects against what the model's files declare (config.json, "
    "the model card's front matter, GGUF metadata).",
    "Two questions are kept apart. Architecture reuse (structure, tensor layout, modeling code) is "
    "legitimate borrowing: the only fault is not saying so. Weight reuse makes the model a "
    "derivative, which must name its base and meet the base licence's conditions.",
    "A derivative is only ever claimed from a calibrated weight comparison (audit with --against BASE); "
    "tokenizer and architecture evidence suggest where to look but never accuse.",
    "Licence obligations marked NEEDS A PERSON cannot be shown by files either way; MISSING ones were "
    "looked for where the licence says they belong, and not found.",
)

_HOW_TO_READ_SEARCH = (
    "The library holds fingerprints of known models: enough of each to test lineage without its "
    "weights. The suspect's own weights were read in full.",
    "A cheap stage ranks the whole library by shared tensor hashes, architecture signature, width, "
    "vocabulary and tokenizer family; only the best candidates get the calibrated lineage test. A "
    "fingerprint screened out there counts as p = 1 below.",
    "Testing one suspect against many bases makes small p-values easier to find by chance, so every "
    "p-value is adjusted (Holm-Bonferroni) over the whole library, and 'derived' needs the adjusted "
    f"value below {DERIVED_P_TEXT}. A bigger library therefore needs stronger evidence.",
    "'identical' rests on content hashes, not on a p-value. 'inconclusive' makes no claim either way.",
    "Finding no match says only that none of these fingerprints is the source. A base that is not in "
    "the library would not show.",
)


# --- compare --------------------------------------------------------------------------------------


def _config_rows(result: CompareResult, arch: dict[str, Any]) -> list[dict[str, str]]:
    """The architecture table's rows: label, A's value, B's value, and "same", "differs" or
    "unknown" (a value one side does not give, such as an ONNX file's head count, is not a
    difference)."""
    config_a, config_b = arch["config_a"] or {}, arch["config_b"] or {}
    recognition_a, recognition_b = result.summary_a, result.summary_b
    rows = [
        {
            "label": "family",
            "a": f"{recognition_a.family} ({recognition_a.confidence})",
            "b": f"{recognition_b.family} ({recognition_b.confidence})",
            "state": "same" if arch["same_family"] else "differs",
        }
    ]
    for key, label in _CONFIG_ROWS:
        if key not in config_a and key not in config_b:
            continue
        a, b = config_a.get(key), config_b.get(key)
        state = "unknown" if a is None or b is None else "same" if a == b else "differs"
        rows.append(
            {
                "label": label,
                "a": "unknown" if a is None else plain(a),
                "b": "unknown" if b is None else plain(b),
                "state": state,
            }
        )
    renamed_a, renamed_b = result.summary_a.renamed_count, arch["renamed_in_b"]
    rows.append(
        {
            "label": "renamed tensors",
            "a": "not recorded" if renamed_a is None else str(renamed_a),
            "b": "not recorded" if renamed_b is None else str(renamed_b),
            "state": "unknown"
            if renamed_a is None or renamed_b is None
            else "same"
            if renamed_a == renamed_b
            else "differs",
        }
    )
    return rows


def _layer_pattern_findings(
    layers_a: Sequence[int], layers_b: Sequence[int], best: Sequence[int]
) -> list[str]:
    """Duplicated layers (two rows of B with one best column) and dropped ones (a column of A no
    row picks), as sentences."""
    owners: dict[int, list[int]] = {}
    for layer_b, layer_a in zip(layers_b, best, strict=True):
        owners.setdefault(layer_a, []).append(layer_b)
    shared = {a: bs for a, bs in owners.items() if len(bs) > 1}
    unused = [a for a in layers_a if a not in owners]
    findings = [
        f"A's layer {a} is the best match of B's layers {', '.join(map(str, bs))}: "
        "a duplicated layer (upscaling)."
        for a, bs in sorted(shared.items())
    ]
    if unused:
        findings.append(
            f"A's layer{'s' if len(unused) > 1 else ''} {', '.join(map(str, unused))} "
            f"{'are' if len(unused) > 1 else 'is'} no B layer's best match: dropped (pruned) or "
            "changed beyond recognition."
        )
    return findings


def _layers_view(doc: dict[str, Any]) -> dict[str, Any]:
    similarity = doc.get("layer_similarity")
    verdict = doc["verdict"]
    view: dict[str, Any] = {
        "matrix": None,
        # The voting layer map; for unrelated models it is noise, so it is left out.
        "map": doc["layers"] if verdict in ("derived", "inconclusive") else [],
    }
    if not similarity:
        view["why"] = (
            "B's values are A's (proven by hashes), so layers were not compared one by one"
            if verdict == "identical"
            else "the weight test did not run far enough to compare layers"
        )
        return view
    layers_a, layers_b, matrix = similarity["layers_a"], similarity["layers_b"], similarity["matrix"]
    meaningful = verdict == "derived"
    best = [layers_a[max(range(len(row)), key=row.__getitem__)] for row in matrix]
    view.update(
        matrix=matrix,
        meaningful=meaningful,
        heatmap=heatmap_svg(layers_a, layers_b, matrix),
        pattern=_layer_pattern_findings(layers_a, layers_b, best) if meaningful else [],
    )
    return view


def _short_role(role: str) -> str:
    return role.removesuffix(".weight")


def _profiles_view(result: CompareResult, doc: dict[str, Any]) -> dict[str, Any]:
    if result.std_profiles is None:
        why = (
            "the values are A's, proven by hashes, so no statistic was needed"
            if doc["verdict"] == "identical"
            else "the weight test did not run far enough to measure the matrices"
        )
        return {"why": why}
    value = doc["evidence"].get("std_profile_correlation")
    if value is None:
        where = ""
    elif value > PROFILE_NULL_MAX:
        where = (
            f"above every independent pair measured ({PROFILE_NULL_MAX}), yet still not evidence on its "
            "own: the statistic is not calibrated"
        )
    elif value >= PROFILE_NULL_MEDIAN:
        where = "inside the upper half of what independent pairs score: it cannot tell copying apart"
    else:
        where = "below the median of independent pairs"
    profiles_a, profiles_b = result.std_profiles.get("a") or {}, result.std_profiles.get("b") or {}
    roles = [r for r in profiles_a if r in profiles_b]
    charts = [
        line_chart_svg(
            f"profile-{index}", _short_role(role), (("A", profiles_a[role]), ("B", profiles_b[role]))
        )
        for index, role in enumerate(roles)
    ]
    return {"why": None, "value": value, "where": where, "band": profile_band_svg(value), "charts": charts}


def _evidence_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    evidence = doc["evidence"]
    rows: list[tuple[str, str]] = []
    if doc["score"] is not None:
        rows.append(
            (
                "similarity",
                f"{doc['score']:.3f}, descriptive only: the verdict rests on the p-value (mean sketch "
                "similarity of one model's matrices to their best match in the other, the better direction)",
            )
        )
    rows.append(("matrices compared", f"{evidence['units_compared']:,}"))
    hashes = evidence.get("hashes")
    if hashes:
        rows.append(
            (
                "content hashes",
                f"B's parameters with a twin in A: exact {hashes['exact']:.0%}, after bf16 rounding "
                f"{hashes['rounded']:.0%}, as value multisets {hashes['multiset']:.0%}",
            )
        )
    else:
        rows.append(("content hashes", "not computed" + (" (--quick)" if evidence["quick"] else "")))
    twins = twins_text(evidence.get("exact_twins"))
    if twins:
        rows.append(("exact twins", twins))
    alignment = alignment_text(evidence.get("alignment"))
    if alignment:
        rows.append(("residual alignment", alignment))
    rows.append(("mode", "quick (sampled rows, no hashing)" if evidence["quick"] else "full"))
    if evidence.get("bytes_read"):
        rows.append(("bytes read for the test", f"{evidence['bytes_read']:,}"))
    return rows


def _renames_view(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "count": len(entries),
        "rows": grouped_renames(entries),
        "caption": "Rename map of B (name in B -> reference name)",
    }


def value_added_view(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The value-added section's numbers: the component table and the per-layer bar chart."""
    if not value:
        return None
    components = [
        (
            name,
            f"{part['parameters']:,}",
            ", ".join(f"{kind} {share:.0%}" for kind, share in part["kinds"].items()),
            "-" if part["relative_change"] is None else f"{part['relative_change']:.3g}",
            "-"
            if part["low_rank"] is None
            else (f"low-rank (rank {part['rank']})" if part["low_rank"] else "full-rank"),
        )
        for name, part in value["components"].items()
    ]
    bars = [(f"B layer {row['layer_b']}", row["relative_change"], row["kind"]) for row in value["layers"]]
    return {
        "summary": value["summary"],
        "fractions": ", ".join(f"{kind} {share:.0%}" for kind, share in value["fractions"].items() if share),
        "score": value["score"],
        "effort": value["effort"],
        "components": components,
        "chart": change_bars_svg("value-layers", "Relative change of each layer of B", bars)
        if bars
        else None,
    }


def compare_html(result: CompareResult | TokenizerComparison) -> str:
    """The report of `unshell.compare` as one self-contained HTML page."""
    if isinstance(result, TokenizerComparison):
        return _tokenizer_comparison_html(result)
    doc = result.to_dict()
    headline, meaning = _verdict_text(doc["verdict"], doc["p_value"], doc["reason"], doc["how"])
    architecture = dict(doc["architecture"], rows=_config_rows(result, doc["architecture"]))
    return render(
        "compare.html",
        **_page_context(
            f"unshell compare: {doc['verdict']}",
            [
                ("verdict", "Verdict"),
                ("architecture", "Architecture"),
                ("renames", "Rename map"),
                ("layers", "Layers"),
                ("value", "Value added"),
                ("profiles", "Profiles"),
                ("tokenizer", "Tokenizer"),
                ("evidence", "Evidence"),
                ("how-to-read", "How to read this"),
            ],
        ),
        doc=doc,
        value=value_added_view(doc.get("value_added")),
        headline=headline,
        meaning=meaning,
        alignment=alignment_text(doc["evidence"].get("alignment")),
        architecture=architecture,
        renames=_renames_view(result.summary_b.renamed or []),
        layers=_layers_view(doc),
        experts_text=expert_map_text(doc.get("experts")),
        expert_rows=expert_map_rows(doc.get("experts"), limit=None),
        profiles=_profiles_view(result, doc),
        null={"median": PROFILE_NULL_MEDIAN, "max": PROFILE_NULL_MAX, "above_09": PROFILE_NULL_ABOVE_09},
        relation_meaning=_RELATION_MEANING,
        evidence=_evidence_rows(doc),
        how_to_read=_HOW_TO_READ_COMPARE,
        verdict_meaning=VERDICT_MEANING,
    )


def _tokenizer_comparison_html(result: TokenizerComparison) -> str:
    doc = result.to_dict()
    relation = doc["tokenizer"]["relation"]
    return render(
        "compare_tokenizers.html",
        **_page_context(
            f"unshell compare (tokenizers): {relation}",
            [("verdict", "Relation"), ("tokenizer", "Counts"), ("how-to-read", "How to read this")],
        ),
        doc=doc,
        relation=relation,
        box_class=level_class("ok" if relation == "independent" else "note"),
        relation_meaning=_RELATION_MEANING,
    )


# --- audit ----------------------------------------------------------------------------------------


def _evidence_items(evidence: dict[str, Any]) -> list[tuple[str, str]]:
    """A finding's evidence as (label, text) pairs."""
    items = []
    for key, value in evidence.items():
        if key == "code":
            shown = "see 'Model code' below"
        elif key == "renamed_examples":
            shown = "see the rename map below"
        elif key == "missing" and isinstance(value, list):
            shown = ", ".join(
                f"{v.get('obligation')} (§{v.get('section')})" if isinstance(v, dict) else str(v)
                for v in value
            )
        elif key == "p_value" and isinstance(value, float | int):
            shown = p_text(float(value))
        else:
            shown = plain(value)
        items.append((key.replace("_", " "), shown))
    return items


def _audit_renames_view(doc: dict[str, Any]) -> dict[str, Any]:
    arch = doc["detected"].get("architecture") or {}
    examples: list[str] = []
    for finding in doc["findings"]:
        found = (finding.get("evidence") or {}).get("renamed_examples")
        if found:
            examples = list(found)
            break
    pairs = []
    for example in examples:
        reference, _, name = example.partition(" -> ")
        pairs.append((name, reference))
    return {"count": arch.get("renamed_tensors", 0), "family": arch.get("family"), "examples": pairs}


def _weights_view(doc: dict[str, Any]) -> dict[str, Any]:
    weights = doc["detected"].get("weights")
    if not weights:
        return {"doc": None}
    library = weights.get("library")
    view = {"doc": weights, "library": library, "candidates": weights.get("candidates") or [], "value": None}
    if not (library and weights.get("base") is None):
        view["headline"], view["meaning"] = _verdict_text(
            weights["verdict"], weights["p_value"], weights["reason"], weights["how"]
        )
    added = weights.get("value_added")
    if added:  # what the weights add to the base: evidence for or against a "substantive change"
        view["value"] = value_added_view(added)
        view["substantive_change"] = added.get("substantive_change")
    return view


def audit_html(result: AuditResult) -> str:
    """The report of `unshell.audit` as one self-contained HTML page."""
    doc = result.to_dict()
    detected = doc["detected"]
    licence_findings = [
        finding["evidence"]
        for finding in doc["findings"]
        if finding["level"] == "licence-obligations-unmet" and "file" in (finding.get("evidence") or {})
    ]
    return render(
        "audit.html",
        **_page_context(
            f"unshell audit: {doc['level']}",
            [
                ("level", "Level and findings"),
                ("declared", "Declared vs detected"),
                ("architecture", "Architecture"),
                ("weights", "Weights"),
                ("code", "Code"),
                ("licence", "Licence"),
                *([("notes", "Notes")] if doc["notes"] else []),
                ("how-to-read", "How to read this"),
            ],
        ),
        doc=doc,
        findings=[dict(f, evidence=_evidence_items(f.get("evidence") or {})) for f in doc["findings"]],
        declared={
            "arch": detected.get("architecture") or {},
            "weights": detected.get("weights"),
            "licence": detected.get("licence"),
            "tokenizer": detected.get("tokenizer"),
            "copies": [c for c in detected.get("code") or [] if c.get("reference")],
            "claims": [(k, v) for k, v in doc["declared"].items() if isinstance(v, dict)],
        },
        renames=_audit_renames_view(doc),
        weights=_weights_view(doc),
        code=detected.get("code") or [],
        licence_view={"licence": detected.get("licence"), "code_rows": licence_findings},
        relation_meaning=_RELATION_MEANING,
        level_meaning=_LEVEL_MEANING,
        levels=LEVELS,
        how_to_read=_HOW_TO_READ_AUDIT,
    )


# --- search ---------------------------------------------------------------------------------------


def _search_headline(doc: dict[str, Any], best: dict[str, Any]) -> tuple[str, str]:
    how = f" ({', '.join(best['how'])})" if best["how"] else ""
    if best["verdict"] == "identical":
        return (
            f"The suspect holds the weights of {best['name']}: the same values{how}, proven by content hashes.",
            "No p-value is needed: identical values cannot come from independent training.",
        )
    p = best["p_adjusted"]
    return (
        f"The suspect's weights were derived from {best['name']}'s, or both from a common ancestor{how}: "
        f"adjusted p {p_relation(p)}.",
        f"The chance that an independently trained model looks this much like one of the library's "
        f"{doc['library']['size']} fingerprints is {chance_bound(p)} (Holm-adjusted over the whole "
        f"library). 'Derived' is only said when this chance is below {DERIVED_P_TEXT}.",
    )


def search_html(result: Any) -> str:
    """The report of `unshell.search` (a `SearchResult`) as one self-contained HTML page."""
    doc = result.to_dict()
    matches = [c for c in doc["candidates"] if c["verdict"] in ("identical", "derived")]
    best = matches[0] if matches else None
    headline, meaning = _search_headline(doc, best) if best else ("", "")
    return render(
        "search.html",
        **_page_context(
            "unshell search",
            [
                ("result", "Result"),
                ("candidates", "Candidates"),
                ("suspect", "Suspect"),
                *([("notes", "Notes")] if doc["notes"] else []),
                ("how-to-read", "How to read this"),
            ],
        ),
        doc=doc,
        suspect=doc["suspect"],
        best=best,
        others=len(matches) - 1,
        headline=headline,
        meaning=meaning,
        how_to_read=_HOW_TO_READ_SEARCH,
        verdict_meaning=VERDICT_MEANING,
    )


# --- writing --------------------------------------------------------------------------------------


def write_html(text: str, path: str | os.PathLike[str]) -> None:
    """Write a report atomically: a temporary file in the same folder, then `os.replace`, so a
    reader never sees half a report and an existing one survives a failed write."""
    target = Path(path)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
