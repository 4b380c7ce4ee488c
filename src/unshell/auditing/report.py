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
from ..inspection import InspectResult
from ..lineage.change import substantive_change
from ..lineage.compare import CompareResult, compare_checkpoints
from ..model import Model
from ..progress import ProgressReporter, reporting

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


@dataclass(frozen=True)
class ModelName:
    """What to call a model in a finding, and where that name came from.

    ``pastable`` names are Hub repo ids, what a card's ``base_model`` holds: from the Hub cache
    path, GGUF ``general.repo_url``/``general.source.*``/``general.base_model.N``, a library
    entry. Otherwise the file name stands in, and the finding says so. A config's
    ``_name_or_path`` is never used: it records where training started, often the parent's parent.
    ``aliases`` are every name the model is known by, for matching what a suspect declares.
    """

    name: str
    source: str
    pastable: bool
    aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": sanitize(self.name), "source": self.source, "hub_repo_id": self.pastable}


_REPO_FIELDS = ("repo_id", "source_repo", "base_model")


def verified_name(result: InspectResult, path: str) -> ModelName:
    """The verified identity of the model at ``path`` (see `ModelName`)."""
    from ..formats.facts import hub_repo_id

    declared = result.declared
    # A model's own names; the base it declares is not one of them (unless named after it below).
    aliases = [
        v for key in ("name", "basename", "repo_id", "source_repo") for v in _values(declared.get(key))
    ]
    target = Path(path)
    stem = target.name if target.is_dir() else target.stem
    aliases.append(stem)
    for key in _REPO_FIELDS:
        claim = declared.get(key)
        repos = [r for v in _values(claim) if (r := hub_repo_id(v)) is not None]
        if repos and isinstance(claim, dict) and (key != "base_model" or len(repos) == 1):
            source = str(claim.get("source", key))
            if key == "base_model":
                source += " (the base the file declares: its weights derive from it)"
            return ModelName(repos[0], source, True, tuple(dict.fromkeys([*aliases, repos[0]])))
    return ModelName(stem, "file name (no Hub repo id is recorded)", False, tuple(dict.fromkeys(aliases)))


def identities(result: InspectResult, path: str) -> list[str]:
    """Every name a model is known by: its verified name first, then declared names and the path."""
    named = verified_name(result, path)
    return list(dict.fromkeys(n for n in (named.name, *named.aliases) if _name_key(n)))


def declared_bases(result: InspectResult) -> list[tuple[str, str]]:
    """Every base the model itself names, with where: ``base_model`` (card, GGUF, safetensors, a
    training config's ``init_from``), the GGUF source repo, and config ``_name_or_path`` (for a
    derivative, where its training started: its base)."""
    found: list[tuple[str, str]] = []
    for key in ("base_model", "source_repo", "started_from"):
        claim = result.declared.get(key)
        if isinstance(claim, dict):
            found += [(value, str(claim.get("source", key))) for value in _values(claim)]
    return found


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


def _renamed_examples(result: InspectResult, renames: list[Any], limit: int = 6) -> list[str]:
    """Renamings as patterns ("model.layers.{i}.input_layernorm.weight -> model.layers.{i}.ln1.weight")."""
    patterns: dict[str, None] = {}
    for assignment in renames:
        target = assignment.canonical or " | ".join(assignment.canonical_candidates)
        pattern = re.sub(r"(?<=[./])\d+(?=[./])", "{i}", f"{target} -> {sanitize(assignment.name)}")
        patterns.setdefault(pattern, None)
        if len(patterns) == limit:
            break
    return list(patterns)


def _publisher_renames(result: InspectResult) -> list[Any]:
    """Renames that the publisher chose: not the format's or an exporter's names, not a convention
    that a format or a library sets for everyone (GGUF, Meta's layout, transformers' variants)."""
    from ..arch.catalog import ecosystem_conventions

    if result.facts.names_from == "exporter":
        return []
    shared = ecosystem_conventions()
    return [a for a in result.renamed if a.convention not in shared]


def _genuine(family_id: str) -> bool:
    """A catalog family that is its own published architecture, not another's renaming (the
    catalog's ``yi`` is Llama under Yi's November 2023 names: declaring it declares no Llama)."""
    from ..arch.catalog import family_by_id

    entry = family_by_id(family_id)
    return entry is not None and entry.reference_family == entry.family


def _family_keys(result: InspectResult) -> set[str]:
    """The detected family and every genuine family that is structurally identical on this checkpoint."""
    recognition = result.recognition
    names = [recognition.matched_family, *recognition.compatible_with]
    keys = {_name_key(n) for n in names if n and _genuine(n)}
    if recognition.family:
        keys.add(_name_key(recognition.family))
    return keys


def _declares(declared_type: str, families: set[str]) -> bool:
    """``LlamaForCausalLM``, ``llama`` and ``gemma3_text`` declare llama and gemma3."""
    key = _name_key(declared_type)
    return any(family and family in key for family in families)


def _known_family(declared_type: str) -> str | None:
    """The catalog family a declared type names (``Qwen2ForCausalLM`` -> qwen2), if any."""
    from ..arch.catalog import load_catalog

    key = _name_key(declared_type)
    matches = [
        f.family
        for f in load_catalog()
        if f.reference_family == f.family and _name_key(f.family) and _name_key(f.family) in key
    ]
    return max(matches, key=len) if matches else None


def _architecture_findings(
    result: InspectResult, card: str, code: list[Any], findings: list[Finding]
) -> dict[str, Any]:
    """Architecture reuse is a fault only when the model presents an identity of its own that hides
    the architecture it reuses (docs/audit-schema.md, "What counts as undisclosed architecture
    reuse"): publisher renames, a declared new architecture, or model code copied under a new
    name, while nothing (config, card, format metadata, a declared base) declares the real one."""
    recognition = result.recognition
    family = recognition.family
    declared_types = _values(result.declared.get("model_type")) + _values(
        result.declared.get("architectures")
    )
    renames = _publisher_renames(result)
    facts = result.facts
    detected: dict[str, Any] = {
        "family": family,
        "matched_family": recognition.matched_family,
        "confidence": recognition.confidence,
        "renamed_tensors": len(renames),
        "declared_model_type": declared_types,
        "declared_model_type_sources": sorted(
            {
                c["source"]
                for c in (result.declared.get("model_type"), result.declared.get("architectures"))
                if c
            }
        ),
        "names_from": facts.names_from,
    }
    if len(result.renamed) != len(renames):
        detected["convention_names"] = len(result.renamed) - len(renames)
    if family is None:
        return detected
    families = _family_keys(result)
    said_in_config = any(_declares(t, families) for t in declared_types)
    said_in_card = _mentions(card, [family])
    declares_base = bool(_values(result.declared.get("base_model")))
    copied = [m for m in code if m.similarity >= CODE_COPY_SIMILARITY and m.reference_family]
    evidence: dict[str, Any] = {
        "family": family,
        "declared_model_type": declared_types,
        "renamed_tensors": len(renames),
        "renamed_examples": _renamed_examples(result, renames),
        "card_mentions_family": said_in_card,
    }
    if copied:
        evidence["code"] = [m.to_dict() for m in copied]
    shown = _display(family)
    if said_in_config or said_in_card or declares_base:
        if renames:
            findings.append(
                Finding(
                    "note",
                    f"{len(renames)} tensors are renamed from {shown}'s reference names",
                    f"renamed tensors make {shown}-compatible code fail to load the model; "
                    f"`unshell convert {sanitize(result.path)} --to llama` restores the names"
                    if family == "llama"
                    else f"renamed tensors make {shown}-compatible code fail to load the model; keep the reference names",
                    evidence,
                )
            )
        return detected
    new_types = [t for t in declared_types if _known_family(t) is None]
    other_known = sorted({k for t in declared_types if (k := _known_family(t)) is not None})
    reasons = []
    if renames:
        reasons.append(f"{len(renames)} tensors renamed")
    if new_types:
        reasons.append(f"declared as {', '.join(sorted(set(new_types)))}")
    for match in copied:
        removed = (
            f", {len(match.removed_references)} references to it removed" if match.removed_references else ""
        )
        reasons.append(
            f"{match.file} is a copy of {match.reference} (similarity {match.similarity:.2f}{removed})"
        )
    if reasons:
        findings.append(
            Finding(
                "architecture-reuse-undisclosed",
                f"the architecture is {shown}'s ({'; '.join(reasons)}), but nothing the model declares says so",
                f"reusing {shown}'s architecture is fine: say so in the model card, and keep {shown}'s tensor names "
                f"and model code so existing {shown} code loads the model unchanged",
                evidence,
            )
        )
        return detected
    findings.append(_silent_architecture_note(result, shown, other_known, evidence))
    return detected


def _silent_architecture_note(
    result: InspectResult, shown: str, other_known: list[str], evidence: dict[str, Any]
) -> Finding:
    """Nothing declares the architecture, and nothing hides it either: a note, never a fault."""
    facts = result.facts
    if other_known:
        message = (
            f"declared as {', '.join(_display(k) for k in other_known)}, but the structure is {shown}'s; "
            "a mislabel, not a claim of a new architecture"
        )
        advice = f"check the declared architecture; {shown} code is what loads these tensors"
    elif facts.names_from == "exporter":
        message = (
            f"the architecture is {shown}'s; {facts.label} declares none, and its tensor names are the "
            "exporter's convention, not a rename"
        )
        advice = f"to say what it is, name the source model in the card or in the {facts.label} metadata"
    elif not facts.can_declare:
        message = (
            f"the architecture is {shown}'s; nothing can be declared in {facts.label} files "
            "(the format has no metadata fields), so nothing is hidden"
        )
        advice = "a model card beside the file is where to name the architecture and the source"
    else:
        message = (
            f"the architecture is {shown}'s, under {shown}'s own tensor names; nothing declares it, and "
            "nothing claims another"
        )
        advice = f"say in the card or config that the model is a {shown}"
    if facts.naming_note:
        evidence = {**evidence, "naming": facts.naming_note}
    return Finding("note", message, advice, evidence)


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


def _relation_advice(how: list[str], facts_label: str, names_from: str) -> str:
    """``base_model_relation`` to declare, from what the weights show (one value when it is known)."""
    if "quantized" in how:
        relation = "`base_model_relation: quantized`"
    elif "merge" in how:
        relation = "`base_model_relation: merge`"
    else:
        relation = "`base_model_relation` (finetune, merge, quantized or adapter)"
    if names_from == "publisher":
        return relation
    # An export (GGUF, ONNX) carries its declaration in a card beside it, or in its own metadata.
    keys = " or `general.base_model.0.repo_url` in the GGUF" if facts_label == "GGUF" else ""
    return f"{relation}{keys}"


def _weight_findings(
    comparison: CompareResult | LibraryMatch,
    result: InspectResult,
    base: ModelName,
    card: str,
    findings: list[Finding],
) -> None:
    bases = declared_bases(result)
    declared_keys = {_name_key(value) for value, _ in bases}
    names_base = any(_name_key(n) in declared_keys for n in (base.name, *base.aliases) if _name_key(n))
    how = list(comparison.how)
    evidence: dict[str, Any] = {
        "verdict": comparison.verdict,
        "p_value": comparison.p_value,
        "how": how,
        "base": base.to_dict(),
        "declared_base_model": [value for value, _ in bases],
        "declared_base_sources": sorted({source for _, source in bases}),
    }
    shown = base.name if base.pastable else f"{base.name} ({base.source})"
    p_text = "" if comparison.p_value is None else f", p {_p(comparison.p_value)}"
    if comparison.verdict in ("derived", "identical"):
        if names_base:
            where = next(source for value, source in bases if _name_key(value) in _keys_of(base))
            findings.append(
                Finding(
                    "ok",
                    f"the weights derive from {shown} ({comparison.verdict}{p_text}), and the model declares it "
                    f"({where})",
                    "nothing to change: the base is named",
                    evidence,
                )
            )
            return
        if comparison.verdict == "identical" and not _presents_identity(result, card):
            findings.append(
                Finding(
                    "note",
                    f"the weights are identical to {shown}: an unlabelled copy (no card, no name of its own), "
                    "which claims nothing",
                    f"a copy that is published should say what it is: `base_model: {base.name}` in a model card",
                    evidence,
                )
            )
            return
        mentioned = _mentions(card, [base.name, *base.aliases])
        where = (
            f"declares base {', '.join(value for value, _ in bases)} instead"
            if bases
            else ("mentions it in prose only" if mentioned else "names no base")
        )
        paste = (
            f"`base_model: {base.name}`"
            if base.pastable
            else f"`base_model: {base.name}` ({base.source}: write the base's Hub repo id instead, if it has one)"
        )
        findings.append(
            Finding(
                "undisclosed-derivative",
                f"the weights derive from {shown} ({comparison.verdict}{p_text}), but the model {where}",
                f"declare the base in the model card's front matter: {paste} and "
                f"{_relation_advice(how, result.facts.label, result.facts.names_from)}",
                evidence,
            )
        )
    elif comparison.verdict == "inconclusive":
        findings.append(
            Finding(
                "inconclusive",
                f"the weights neither show nor exclude derivation from {shown}: {comparison.reason}",
                "compare without --quick, or against the exact base release; no claim is made either way",
                evidence,
            )
        )
    elif names_base:
        findings.append(
            Finding(
                "note",
                f"the model declares {shown} as its base, but the weights look independently trained{p_text}",
                "check that the declared base is the right release; a different base would explain it",
                evidence,
            )
        )
    else:
        findings.append(
            Finding(
                "ok",
                f"the weights are independent of {shown}{p_text}",
                "nothing to disclose about this base",
                evidence,
            )
        )


def _presents_identity(result: InspectResult, card: str) -> bool:
    """Whether the model presents itself as something: a card, or a declared name of its own."""
    return bool(card.strip()) or any(_values(result.declared.get(key)) for key in ("name", "repo_id"))


def _keys_of(base: ModelName) -> set[str]:
    return {k for n in (base.name, *base.aliases) if (k := _name_key(n))}


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
    source: Model | Checkpoint,
    base: Model | Checkpoint | None = None,
    *,
    path: str = "",
    base_path: str | None = None,
    quick: bool = False,
    library: Any = None,
) -> AuditResult:
    from .licences import model_display_name

    """`audit` of an opened model; every fact comes from its `Model` (and the base's), so what a
    fingerprint or a search of the same model already read is not read again."""
    notes: list[str] = []
    findings: list[Finding] = []
    model = Model.of(source)
    checkpoint = model.checkpoint
    result = model.inspection
    card = model.card.text
    directory = _model_directory(checkpoint)
    code = _code_matches(directory, checkpoint.config, notes)
    detected: dict[str, Any] = {"architecture": _architecture_findings(result, card, code, findings)}
    detected["code"] = [m.to_dict() for m in code]
    _code_licence_findings(code, findings)

    families = model.tokenizer_families
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
        comparison = compare_checkpoints(base, model, quick=quick, path_a=base_path, path_b=path)
        base_result = comparison.inspect_a
        assert base_result is not None  # two checkpoints were compared
        base_name = verified_name(base_result, base_path)
        base_names = [base_name.name]
        detected["weights"] = {
            "base": base_name.name,
            "base_name_source": base_name.source,
            "verdict": comparison.verdict,
            "p_value": comparison.p_value,
            "reason": comparison.reason,
            "how": comparison.how,
            "tokenizer": comparison.to_dict().get("tokenizer"),
        }
        before = len(findings)
        _weight_findings(comparison, result, base_name, card, findings)
        if comparison.value_added is not None:
            # What the weights add to the base: evidence for or against a "substantive change",
            # beside the weight finding (a description, never a finding of its own).
            added = comparison.value_added.to_dict()
            del added["tensors"]  # the compare report lists them
            stance = substantive_change(comparison.value_added)
            detected["weights"]["value_added"] = dict(added, substantive_change=stance)
            for finding in findings[before:]:
                finding.evidence["value_added"] = {"summary": added["summary"], "score": added["score"]}
            notes.append(stance)
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
        detected["weights"] = _library_weights(model, path, library, result, card, findings, notes)
    elif families:
        family = families[0]
        notes.append(
            f"the tokenizer is {family.name}'s ({family.relation}); tokenizers are shared legitimately, so this "
            "names no base: audit with --against BASE to test the weights"
        )
    front = model.card.front_matter
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
    model: Model,
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

    checkpoint = model.checkpoint
    found = search(model, library, top=3)
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
    base = _library_name(library, match.name)
    weights.update(
        base=base.name,
        base_name_source=base.source,
        verdict=match.verdict,
        p_value=match.p_adjusted,
        reason=match.reason,
        how=match.how,
    )
    _weight_findings(evidence, result, base, card, findings)
    notes.append(
        f"weights: found in the fingerprint library as {match.name} (p Holm-adjusted over "
        f"{found.library_size} fingerprints); a fingerprint records no licence, so the base's licence "
        "obligations are checked only with --against BASE"
    )
    return weights


def _library_name(library: Any, entry_name: str) -> ModelName:
    """A library entry's Hub repo id: its name when that is one, else the Hub cache path it was
    added from; else its local name, said to be one."""
    from ..formats.facts import hub_repo_id, hub_repo_id_of_path

    aliases = (entry_name, entry_name.rstrip("/").rsplit("/", 1)[-1])
    repo = hub_repo_id(entry_name)
    if repo is not None:
        return ModelName(repo, "library entry name (shaped as a Hub repo id)", True, aliases)
    try:
        source = library.entry(entry_name).source
    except (OSError, UnshellError):
        source = None
    repo = hub_repo_id_of_path(Path(source)) if source else None
    if repo is not None:
        return ModelName(repo, "library entry's source path (hf-cache models--org--name)", True, aliases)
    return ModelName(entry_name, "library entry name (a local name, not a Hub repo id)", False, aliases)


def _is_itself(name: str, library: Any, own_names: set[str], path: str) -> bool:
    """A library entry recorded from this very model: the same name, or the same file."""
    if _name_key(name) in own_names:
        return True
    try:
        source = library.entry(name).source
        return bool(source) and Path(source).resolve() == Path(path).resolve()
    except (OSError, UnshellError):
        return False


def audit(
    path: str | os.PathLike[str],
    *,
    against: str | os.PathLike[str] | None = None,
    quick: bool = False,
    library: Any = None,
    progress: ProgressReporter | None = None,
) -> AuditResult:
    """Detected lineage (weights, architecture, tokenizer, code) against declared lineage.

    The weights are tested against ``against`` (a base checkpoint), or, without one, searched in
    ``library`` (a `unshell.Library` or the path of one) when it is given. ``progress``: where to
    report the comparison's or the search's stages (`unshell.progress`).

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
        with reporting(progress), open_checkpoint(path) as checkpoint:
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
