"""`unshell.audit(path, against=base)`: what the evidence detects, against what the model declares.

The disclosure question has two halves, kept apart because they have different answers:

* architecture reuse (structure, tensor layout, modeling code) is legitimate borrowing; the only
  fault is not saying so (the Yi case: Llama's architecture under new names);
* weight reuse (a fine-tune, a merge, a quantization) makes the model a derivative, which must
  name its base and meet the base licence's conditions.

A derivative is only ever claimed from a calibrated weight comparison (`unshell.compare` with
``--against``): tokenizer and architecture evidence suggest where to look but never accuse.

Findings, most severe first (`LEVELS`): ``undisclosed-derivative``, ``licence-obligations-unmet``,
``architecture-reuse-undisclosed``, ``inconclusive``, ``note``, ``ok``. The report's ``level`` is
that of its most severe finding.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnshellError, UsageError
from ..formats import open_checkpoint
from ..formats.base import Checkpoint, sanitize
from ..inspection import InspectResult, inspect_checkpoint
from ..lineage.compare import CompareResult, compare_checkpoints

__all__ = ["AUDIT_SCHEMA_VERSION", "LEVELS", "AuditResult", "Finding", "audit", "audit_checkpoint"]

AUDIT_SCHEMA_VERSION = 1
LEVELS = (
    "undisclosed-derivative",
    "licence-obligations-unmet",
    "architecture-reuse-undisclosed",
    "inconclusive",
    "note",
    "ok",
)
CARD_LIMIT = 1 << 20
# Modeling code this similar to a reference implementation is a copy of it (the renamed Llama
# file in the tests scores above 0.9; unrelated references below 0.5).
CODE_COPY_SIMILARITY = 0.8


@dataclass(frozen=True)
class Finding:
    level: str
    message: str
    advice: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "message": self.message,
            "advice": self.advice,
            "evidence": self.evidence,
        }


@dataclass
class AuditResult:
    path: str
    against: str | None
    findings: list[Finding]
    detected: dict[str, Any]
    declared: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def level(self) -> str:
        return min((f.level for f in self.findings), key=LEVELS.index, default="ok")

    def to_dict(self) -> dict[str, Any]:
        ordered = sorted(self.findings, key=lambda f: LEVELS.index(f.level))
        return {
            "schema_version": AUDIT_SCHEMA_VERSION,
            "path": sanitize(self.path, limit=4096),
            "against": None if self.against is None else sanitize(self.against, limit=4096),
            "level": self.level,
            "findings": [f.to_dict() for f in ordered],
            "detected": self.detected,
            "declared": self.declared,
            "notes": self.notes,
        }


@dataclass
class LibraryMatch:
    """The weight evidence of `audit --library`: the best library candidate `search` found, with
    its Holm-adjusted p-value standing in for the pairwise one (the library is many hypotheses)."""

    verdict: str
    p_value: float | None
    how: list[str]
    reason: str


# -- names -----------------------------------------------------------------------------------------


def _name_key(text: str) -> str:
    """ "meta-llama/Llama-2-7b-hf", "Llama 2 7B HF" and "llama-2-7b-hf" are the same name."""
    return re.sub(r"[^0-9a-z]", "", text.rstrip("/").rsplit("/", 1)[-1].casefold())


def _values(claim: Any) -> list[str]:
    if not isinstance(claim, dict):
        return []
    value = claim.get("value")
    items = value if isinstance(value, list) else [value]
    return [str(v) for v in items if isinstance(v, str | int | float) and str(v)]


def identities(result: InspectResult, path: str) -> list[str]:
    """Every name a model is known by: declared name, hub repo id, folder (or file) name."""
    names = _values(result.declared.get("name"))
    target = Path(path)
    if target.name.startswith("models--"):
        names.append(target.name.removeprefix("models--").replace("--", "/"))
    names.append(target.name if target.is_dir() else target.stem)
    return list(dict.fromkeys(n for n in names if _name_key(n)))


def _mentions(text: str, names: list[str]) -> bool:
    squashed = re.sub(r"[^0-9a-z]", "", text.casefold())
    return any(len(key := _name_key(n)) >= 3 and key in squashed for n in names)


# -- evidence ---------------------------------------------------------------------------------------


def _model_directory(checkpoint: Checkpoint) -> Path | None:
    card = checkpoint.sidecars.get("card")
    if card is not None:
        return card.parent
    if checkpoint.path.is_dir():
        return checkpoint.path
    config = checkpoint.sidecars.get("config")
    return config.parent if config is not None else None


def _card_text(checkpoint: Checkpoint, notes: list[str]) -> str:
    card = checkpoint.sidecars.get("card")
    if card is None:
        return ""
    try:
        with card.open("rb") as handle:
            raw = handle.read(CARD_LIMIT)
    except OSError as error:
        notes.append(f"model card unreadable: {sanitize(error.strerror or type(error).__name__)}")
        return ""
    return raw.decode("utf-8", errors="replace")


def _renamed_examples(result: InspectResult, limit: int = 6) -> list[str]:
    """Renamings as patterns ("model.layers.{i}.input_layernorm.weight -> model.layers.{i}.ln1.weight")."""
    patterns: dict[str, None] = {}
    for entry in result.to_dict()["renamed"]:
        target = entry.get("canonical") or " | ".join(entry.get("candidates", []))
        pattern = re.sub(r"(?<=[./])\d+(?=[./])", "{i}", f"{target} -> {entry['name']}")
        patterns.setdefault(pattern, None)
        if len(patterns) == limit:
            break
    return list(patterns)


def _architecture_findings(
    result: InspectResult, card: str, code: list[Any], findings: list[Finding]
) -> dict[str, Any]:
    recognition = result.recognition
    family = recognition.family
    declared_types = _values(result.declared.get("model_type")) + _values(
        result.declared.get("architectures")
    )
    detected: dict[str, Any] = {
        "family": family,
        "matched_family": recognition.matched_family,
        "confidence": recognition.confidence,
        "renamed_tensors": len(result.renamed),
        "declared_model_type": declared_types,
    }
    if family is None:
        return detected
    said_in_config = any(_name_key(family) in _name_key(t) for t in declared_types)
    said_in_card = _mentions(card, [family])
    declares_base = bool(_values(result.declared.get("base_model")))
    copied = [m for m in code if m.similarity >= CODE_COPY_SIMILARITY and m.reference_family]
    evidence: dict[str, Any] = {
        "family": family,
        "declared_model_type": declared_types,
        "renamed_tensors": len(result.renamed),
        "renamed_examples": _renamed_examples(result),
        "card_mentions_family": said_in_card,
    }
    if copied:
        evidence["code"] = [m.to_dict() for m in copied]
    shown = _display(family)
    if said_in_config or said_in_card or declares_base:
        if result.renamed:
            findings.append(
                Finding(
                    "note",
                    f"{len(result.renamed)} tensors are renamed from {shown}'s reference names",
                    f"renamed tensors make {shown}-compatible code fail to load the model; "
                    f"`unshell convert {sanitize(result.path)} --to llama` restores the names"
                    if family == "llama"
                    else f"renamed tensors make {shown}-compatible code fail to load the model; keep the reference names",
                    evidence,
                )
            )
        return detected
    reasons = []
    if result.renamed:
        reasons.append(f"{len(result.renamed)} tensors renamed")
    if declared_types:
        reasons.append(f"declared as {', '.join(sorted(set(declared_types)))}")
    for match in copied:
        removed = (
            f", {len(match.removed_references)} references to it removed" if match.removed_references else ""
        )
        reasons.append(
            f"{match.file} is a copy of {match.reference} (similarity {match.similarity:.2f}{removed})"
        )
    findings.append(
        Finding(
            "architecture-reuse-undisclosed",
            f"the architecture is {shown}'s ({'; '.join(reasons) or 'same structure'}), "
            f"but neither the config nor the card says so",
            f"reusing {shown}'s architecture is fine: say so in the model card, and keep {shown}'s tensor names "
            f"and model code so existing {shown} code loads the model unchanged",
            evidence,
        )
    )
    return detected


def _code_licence_findings(code: list[Any], findings: list[Finding]) -> None:
    """Model code copied from transformers (Apache-2.0) must keep the reference's copyright lines."""
    for match in code:
        if match.similarity < CODE_COPY_SIMILARITY or match.reference is None:
            continue
        removed = [r for r in match.removed_references if r.startswith("license header line")]
        if not removed:
            continue
        findings.append(
            Finding(
                "licence-obligations-unmet",
                f"{match.file} reproduces {match.reference} (similarity {match.similarity:.2f}) without its "
                f"copyright notice",
                "Apache-2.0 §4(c): retain all copyright and attribution notices of the work you derive from; "
                "restore the reference file's header and say which file the code comes from",
                {
                    "file": match.file,
                    "reference": match.reference,
                    "removed": removed,
                    "licence": "apache-2.0",
                },
            )
        )


def _code_matches(directory: Path | None, config: Any, notes: list[str]) -> list[Any]:
    if directory is None:
        return []
    from .code import code_provenance, find_model_code

    if not find_model_code(directory, config if isinstance(config, dict) else None):
        return []
    try:
        return list(code_provenance(directory))
    except UnshellError as error:
        notes.append(f"model code not compared: {error}")
        return []


def _p(value: float) -> str:
    return "< 1e-300" if value == 0 else f"= {value:.2g}"


def _display(family: str) -> str:
    """ "llama" -> "Llama", from the reference class name (LlamaForCausalLM)."""
    from ..arch.catalog import family_by_id

    entry = family_by_id(family)
    if entry is None:
        return family
    name = re.sub(r"(For\w+|Model|LMHeadModel)$", "", entry.reference)
    return name or family


def _weight_findings(
    comparison: CompareResult | LibraryMatch,
    result: InspectResult,
    base_names: list[str],
    card: str,
    findings: list[Finding],
) -> None:
    declared_bases = _values(result.declared.get("base_model"))
    declared_keys = {_name_key(b) for b in declared_bases}
    names_base = any(_name_key(n) in declared_keys for n in base_names)
    evidence: dict[str, Any] = {
        "verdict": comparison.verdict,
        "p_value": comparison.p_value,
        "how": comparison.how,
        "base": base_names[:4],
        "declared_base_model": declared_bases,
    }
    p_text = "" if comparison.p_value is None else f", p {_p(comparison.p_value)}"
    if comparison.verdict in ("derived", "identical"):
        if names_base:
            findings.append(
                Finding(
                    "ok",
                    f"the weights derive from {base_names[0]} ({comparison.verdict}{p_text}), and the card declares it",
                    "nothing to change: the base is named",
                    evidence,
                )
            )
            return
        mentioned = _mentions(card, base_names)
        where = (
            f"declares base_model {', '.join(declared_bases)}"
            if declared_bases
            else ("mentions it in prose only" if mentioned else "does not name it")
        )
        findings.append(
            Finding(
                "undisclosed-derivative",
                f"the weights derive from {base_names[0]} ({comparison.verdict}{p_text}), but the card {where}",
                f"declare the base in the model card's front matter: `base_model: {base_names[0]}` "
                "(and `base_model_relation`: finetune, merge, quantized or adapter)",
                evidence,
            )
        )
    elif comparison.verdict == "inconclusive":
        findings.append(
            Finding(
                "inconclusive",
                f"the weights neither show nor exclude derivation from {base_names[0]}: {comparison.reason}",
                "compare without --quick, or against the exact base release; no claim is made either way",
                evidence,
            )
        )
    elif names_base:
        findings.append(
            Finding(
                "note",
                f"the card declares {base_names[0]} as its base, but the weights look independently trained{p_text}",
                "check that the declared base is the right release; a different base would explain it",
                evidence,
            )
        )
    else:
        findings.append(
            Finding(
                "ok",
                f"the weights are independent of {base_names[0]}{p_text}",
                "nothing to disclose about this base",
                evidence,
            )
        )


def _licence_findings(
    licence_id: str | None,
    licence_name: str | None,
    why: str,
    directory: Path | None,
    model_name: str | None,
    card: str,
    relation: str | None,
    findings: list[Finding],
    notes: list[str],
) -> dict[str, Any] | None:
    from .licences import check_obligations, load_licence

    if licence_id is None:
        return None
    licence = load_licence(licence_id, licence_name)
    if licence is None:
        notes.append(f"licence {sanitize(licence_id)!r} ({why}) has no obligations on file; not checked")
        return {"id": licence_id, "why": why, "known": False}
    if directory is None:
        notes.append("no model folder to check licence obligations in")
        return {"id": licence.id, "why": why, "known": True}
    results = check_obligations(licence, directory, model_name=model_name, card_text=card, relation=relation)
    missing = [r for r in results if r.status == "missing"]
    manual = [r for r in results if r.status == "manual"]
    section = {
        "id": licence.id,
        "name": licence.name,
        "why": why,
        "known": True,
        "obligations": [r.to_dict() for r in results],
    }
    if missing:
        listed = "; ".join(f"{r.obligation} (§{r.section})" for r in missing)
        findings.append(
            Finding(
                "licence-obligations-unmet",
                f"{licence.name} ({why}): {len(missing)} obligation(s) not met: {listed}",
                "; ".join(f"§{r.section}: {r.quote}" for r in missing),
                {
                    "licence": licence.id,
                    "missing": [r.to_dict() for r in missing],
                    "manual": [r.obligation for r in manual],
                },
            )
        )
    return section


# -- entry points ----------------------------------------------------------------------------------


def _declared_licence(result: InspectResult) -> tuple[str | None, str | None]:
    licence = _values(result.declared.get("license"))
    name = _values(result.declared.get("license_name"))
    return (licence[0] if licence else None), (name[0] if name else None)


def audit_checkpoint(
    checkpoint: Checkpoint,
    base: Checkpoint | None = None,
    *,
    path: str = "",
    base_path: str | None = None,
    quick: bool = False,
    library: Any = None,
) -> AuditResult:
    from ..tokenizers.families import match_families
    from ..tokenizers.vocab import vocabulary_of
    from .licences import model_display_name

    notes: list[str] = []
    findings: list[Finding] = []
    result = inspect_checkpoint(checkpoint)
    card = _card_text(checkpoint, notes)
    directory = _model_directory(checkpoint)
    code = _code_matches(directory, checkpoint.config, notes)
    detected: dict[str, Any] = {"architecture": _architecture_findings(result, card, code, findings)}
    detected["code"] = [m.to_dict() for m in code]
    _code_licence_findings(code, findings)

    vocabulary = vocabulary_of(checkpoint)
    families = match_families(vocabulary) if vocabulary is not None else []
    detected["tokenizer"] = families[0].to_dict() if families else None

    own_licence, own_licence_name = _declared_licence(result)
    # A licence's conditions bind those who redistribute someone else's work: they are checked
    # for a derivative (declared, or shown by the weights), never for a model's own licence.
    licence_id: str | None = None
    licence_name: str | None = None
    why = ""
    if _values(result.declared.get("base_model")) and own_licence is not None:
        licence_id, licence_name, why = own_licence, own_licence_name, "declared by this derivative"
    if base is not None:
        assert base_path is not None
        comparison = compare_checkpoints(base, checkpoint, quick=quick, path_a=base_path, path_b=path)
        base_result = comparison.inspect_a
        base_names = identities(base_result, base_path)
        detected["weights"] = {
            "base": base_names[0],
            "verdict": comparison.verdict,
            "p_value": comparison.p_value,
            "reason": comparison.reason,
            "how": comparison.how,
            "tokenizer": comparison.to_dict().get("tokenizer"),
        }
        _weight_findings(comparison, result, base_names, card, findings)
        if comparison.verdict in ("derived", "identical"):
            base_licence, base_licence_name = _declared_licence(base_result)
            if base_licence is not None:
                licence_id, licence_name, why = (
                    base_licence,
                    base_licence_name,
                    f"the licence of {base_names[0]}",
                )
                if own_licence is not None and _name_key(own_licence) != _name_key(base_licence):
                    findings.append(
                        Finding(
                            "licence-obligations-unmet",
                            f"the model declares licence {own_licence}, but its base {base_names[0]} is under {base_licence}",
                            f"a derivative stays under its base's licence terms: declare `license: {base_licence}`",
                            {"declared": own_licence, "base": base_licence},
                        )
                    )
            else:
                notes.append(f"{base_names[0]} declares no licence; its obligations are not checked")
    elif library is not None:
        detected["weights"] = _library_weights(checkpoint, path, library, result, card, findings, notes)
    elif families:
        family = families[0]
        notes.append(
            f"the tokenizer is {family.name}'s ({family.relation}); tokenizers are shared legitimately, so this "
            "names no base: audit with --against BASE to test the weights"
        )
    front = _front_matter(checkpoint, notes)
    relations = _values(result.declared.get("base_model_relation"))
    relation = relations[0] if relations else None
    model_name = model_display_name(directory, front) if directory is not None else None
    detected["licence"] = _licence_findings(
        licence_id, licence_name, why, directory, model_name, card, relation, findings, notes
    )
    if not any(f.level != "note" for f in findings):
        tested = base is not None or library is not None
        findings.append(
            Finding(
                "ok",
                "nothing undisclosed found"
                + ("" if tested else " (weights not compared: no --against or --library)"),
                "nothing to change"
                if tested
                else "audit with --against BASE, or --library FILE, to test weight reuse",
            )
        )
    return AuditResult(
        path=path or str(checkpoint.path),
        against=base_path,
        findings=findings,
        detected=detected,
        declared={k: v for k, v in result.declared.items()},
        notes=notes + [n for n in result.notes if n not in notes],
    )


def _library_weights(
    checkpoint: Checkpoint,
    path: str,
    library: Any,
    result: InspectResult,
    card: str,
    findings: list[Finding],
    notes: list[str],
) -> dict[str, Any]:
    """Search the fingerprint library for the weights' source; a match is judged as `--against`
    would judge it, with the Holm-adjusted p-value (so a large library claims nothing cheaply)."""
    from ..library.search import search

    found = search(checkpoint, library, top=3)
    weights: dict[str, Any] = {
        "source": "library",
        "library": {"path": sanitize(str(library.path), limit=4096), "size": found.library_size},
        "tested": found.tested,
        "candidates": [c.to_dict() for c in found.candidates],
    }
    own = {_name_key(n) for n in identities(result, path or str(checkpoint.path))}
    matches = []
    for candidate in found.matches:
        if _is_itself(candidate.name, library, own, path or str(checkpoint.path)):
            notes.append(
                f"weights: the library's {candidate.name} is this model itself (same name or same file); "
                "not counted as a base"
            )
        else:
            matches.append(candidate)
    if not matches:
        best = next((c for c in found.candidates if c not in found.matches), None)
        weights.update(base=None, verdict=None, p_value=None, reason=None, how=[])
        findings.append(
            Finding(
                "note",
                f"none of the library's {found.library_size} fingerprints is the source of these weights"
                + (f" (closest tested: {best.name}, {best.verdict})" if best is not None else ""),
                "a base missing from the library would not show: add it with `unshell library add`, or "
                "audit with --against BASE",
                {"library_size": found.library_size, "tested": found.tested},
            )
        )
        return weights
    match = matches[0]
    evidence = LibraryMatch(match.verdict, match.p_adjusted, list(match.how), match.reason)
    names = list(dict.fromkeys([match.name, match.name.rstrip("/").rsplit("/", 1)[-1]]))
    weights.update(
        base=match.name, verdict=match.verdict, p_value=match.p_adjusted, reason=match.reason, how=match.how
    )
    _weight_findings(evidence, result, names, card, findings)
    notes.append(
        f"weights: found in the fingerprint library as {match.name} (p Holm-adjusted over "
        f"{found.library_size} fingerprints); a fingerprint records no licence, so the base's licence "
        "obligations are checked only with --against BASE"
    )
    return weights


def _is_itself(name: str, library: Any, own_names: set[str], path: str) -> bool:
    """A library entry recorded from this very model: the same name, or the same file."""
    if _name_key(name) in own_names:
        return True
    try:
        source = library.entry(name).source
        return bool(source) and Path(source).resolve() == Path(path).resolve()
    except (OSError, UnshellError):
        return False


def _front_matter(checkpoint: Checkpoint, notes: list[str]) -> dict[str, Any] | None:
    from ..declared import read_card_front_matter

    card = checkpoint.sidecars.get("card")
    return None if card is None else read_card_front_matter(card, [])


def audit(
    path: str | os.PathLike[str],
    *,
    against: str | os.PathLike[str] | None = None,
    quick: bool = False,
    library: Any = None,
) -> AuditResult:
    """Detected lineage (weights, architecture, tokenizer, code) against declared lineage.

    The weights are tested against ``against`` (a base checkpoint), or, without one, searched in
    ``library`` (a `unshell.Library` or the path of one) when it is given.

    Example:
        >>> import unshell
        >>> report = unshell.audit("suspect", against="base")  # doctest: +SKIP
        >>> report.level, [f.message for f in report.findings]
    """
    if against is not None and library is not None:
        raise UsageError("give a base to test against or a library to search, not both")
    from ..library import Library, existing_library

    opened = library is not None and not isinstance(library, Library)
    store = existing_library(library) if opened else library
    try:
        with open_checkpoint(path) as checkpoint:
            if not checkpoint.tensors:
                raise UsageError(
                    f"{sanitize(str(path))}: no weights to audit (a tokenizer alone? use inspect)"
                )
            if against is None:
                return audit_checkpoint(checkpoint, path=str(path), library=store)
            with open_checkpoint(against) as base:
                return audit_checkpoint(checkpoint, base, path=str(path), base_path=str(against), quick=quick)
    finally:
        if opened:
            store.close()
