"""Licence obligations as data, and a checker that tells which ones a model directory meets.

A derivative model inherits its base model's licence terms: Llama's agreements ask for a copy of
the agreement, a ``Notice`` file, a "Built with ..." display and (from Llama 3 on) a name that
begins with "Llama"; Gemma's and DeepSeek's pass their use restrictions on; Apache-2.0 asks for a
copy of the licence. A shell that hides its base usually drops exactly these. This module holds
each licence's obligations as data (one JSON file per licence in ``licences/``, every obligation
citing the section it comes from, with the licence's own words quoted) and checks a directory
against them.

Data files (``schema_version`` 1)::

    {
      "schema_version": 1,
      "id": "llama3",                       # the Hugging Face card value where one exists
      "name": "Meta Llama 3 Community License Agreement",
      "url": "...",                         # where the text was read
      "version": "...",                     # release date or version line of the text read
      "verification": "primary" | "secondary",
      "verification_note": "...",           # optional: what could not be checked, and why
      "aliases": ["llama3", "llama-3", ...],  # card values (license / license_name) that mean it
      "families": ["llama"],                # architecture families it typically governs (a hint)
      "obligations": [
        {"id": "licence-copy", "section": "1.b.i", "quote": "<the licence's words>",
         "summary": "...", "applies_to": "distribution", "check": {...}}
      ],
      "notes": [                            # clauses worth reporting that a directory cannot meet
        {"id": "mau-700m", "section": "2", "quote": "...", "summary": "..."}
      ]
    }

``applies_to`` says when an obligation binds: ``distribution`` (any copy or derivative handed to
others), ``trained-derivative`` (a model created, trained or fine-tuned with the materials and
then distributed), ``modified-files`` (files you changed) or ``use`` (all use).

Check kinds:

- ``text_contains``: ``where`` (places), ``any_of`` (phrases); met when a phrase occurs in a
  place. A place is ``"card"`` (the model card's body, its YAML front matter left out) or a
  case-insensitive glob over the directory's top-level file names (``"*notice*"``).
  ``ignore_if_preceded_by`` discounts an occurrence when one of the strings comes just before it
  (so the notice quoted inside a copy of the licence is not taken for the notice itself);
  ``hint_where`` names places searched only to explain a miss ("the notice is in the card, not in
  a Notice file").
- ``name_prefix``: ``prefix``; met when the model name begins with it (case, spaces, ``-`` and
  ``_`` aside; ``Llama 3`` does not match ``Llama 30B``).
- ``any``: ``checks``; met when one of the sub-checks is met.
- ``manual``: nothing in the files can settle it (use restrictions, modified-file notices);
  ``look_for`` globs report related files that exist.

Phrases are matched after normalizing both sides: case folded, whitespace runs collapsed, curly
quotes made straight, ``©`` read as ``(c)``, Markdown ``*`` and ``\\`` dropped.

Statuses: ``met`` (found, evidence says where), ``missing`` (searched, not found, evidence says
where it looked) and ``manual`` (a person must decide). Only small top-level files are read
(``MAX_TEXT_BYTES`` each), never a symlink that leaves the directory (a hub-cache snapshot's links
into its own ``blobs/`` are followed), and undecodable bytes are replaced, never fatal.
"""

from __future__ import annotations

import fnmatch
import json
import re
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InputError, PathNotFoundError
from ..formats.base import sanitize
from ..formats.hf import resolve_cache

__all__ = [
    "APPLIES_TO",
    "CHECK_KINDS",
    "MAX_TEXT_BYTES",
    "SCHEMA_VERSION",
    "STATUSES",
    "Check",
    "Licence",
    "LicenceNote",
    "Obligation",
    "ObligationResult",
    "check_obligations",
    "known_licences",
    "licence_candidates_for_family",
    "licence_data_files",
    "licence_for_family",
    "load_licence",
    "model_display_name",
    "validate_licence_data",
]

SCHEMA_VERSION = 1
MAX_TEXT_BYTES = 1_000_000
MAX_DIRECTORY_ENTRIES = 4096
STATUSES = ("met", "missing", "manual")
APPLIES_TO = ("distribution", "trained-derivative", "modified-files", "use")
CHECK_KINDS = ("text_contains", "name_prefix", "any", "manual")
VERIFICATIONS = ("primary", "secondary")
CARD = "card"
CARD_FILE = "README.md"
# Card values that name no licence by themselves: the licence is then in ``license_name``.
UNNAMED = frozenset({"", "other", "unknown", "custom", "proprietary"})
PRECEDING_WINDOW = 48
QUANTIZED_RELATIONS = frozenset({"quantized"})


# -- data model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """How to tell from a directory whether an obligation is met (see the module docstring)."""

    kind: str
    where: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()
    ignore_if_preceded_by: tuple[str, ...] = ()
    hint_where: tuple[str, ...] = ()
    prefix: str | None = None
    checks: tuple[Check, ...] = ()
    look_for: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for name in ("where", "any_of", "ignore_if_preceded_by", "hint_where", "look_for"):
            value = getattr(self, name)
            if value:
                out[name] = list(value)
        if self.prefix is not None:
            out["prefix"] = self.prefix
        if self.checks:
            out["checks"] = [check.to_dict() for check in self.checks]
        return out


@dataclass(frozen=True)
class Obligation:
    """One thing a licence asks of whoever distributes or uses the model, with its section."""

    id: str
    section: str
    quote: str
    summary: str
    applies_to: str
    check: Check

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "section": self.section,
            "quote": self.quote,
            "summary": self.summary,
            "applies_to": self.applies_to,
            "check": self.check.to_dict(),
        }


@dataclass(frozen=True)
class LicenceNote:
    """A clause worth reporting that no file can meet (a user cap, a ban on training on outputs)."""

    id: str
    section: str
    quote: str
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "section": self.section, "quote": self.quote, "summary": self.summary}


@dataclass(frozen=True)
class Licence:
    """A licence's obligations and notes, as read from its data file."""

    id: str
    name: str
    url: str
    version: str
    verification: str
    aliases: tuple[str, ...]
    families: tuple[str, ...]
    obligations: tuple[Obligation, ...]
    notes: tuple[LicenceNote, ...] = ()
    verification_note: str | None = None

    def obligation(self, obligation_id: str) -> Obligation:
        for item in self.obligations:
            if item.id == obligation_id:
                return item
        raise KeyError(obligation_id)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "id": self.id,
            "name": self.name,
            "url": self.url,
            "version": self.version,
            "verification": self.verification,
        }
        if self.verification_note is not None:
            out["verification_note"] = self.verification_note
        out["aliases"] = list(self.aliases)
        out["families"] = list(self.families)
        out["obligations"] = [item.to_dict() for item in self.obligations]
        out["notes"] = [note.to_dict() for note in self.notes]
        return out


@dataclass(frozen=True)
class ObligationResult:
    """Whether one obligation is met, and the evidence: where it was found or where it was not."""

    licence: str
    obligation: str
    section: str
    quote: str
    summary: str
    applies_to: str
    status: str
    evidence: str
    found_in: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "licence": self.licence,
            "obligation": self.obligation,
            "section": self.section,
            "quote": self.quote,
            "summary": self.summary,
            "applies_to": self.applies_to,
            "status": self.status,
            "evidence": self.evidence,
        }
        if self.found_in is not None:
            out["found_in"] = self.found_in
        return out


# -- validation and loading ---------------------------------------------------------------------


def validate_licence_data(data: Any) -> list[str]:
    """Every way ``data`` (a parsed licence file) breaks the schema; empty when it is valid."""
    if not isinstance(data, Mapping):
        return [f"top level is a {type(data).__name__}, not an object"]
    problems: list[str] = []
    if data.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version is {data.get('schema_version')!r}, not {SCHEMA_VERSION}")
    for key in ("id", "name", "url", "version"):
        if not _nonempty_str(data.get(key)):
            problems.append(f"{key}: missing or empty")
    if data.get("verification") not in VERIFICATIONS:
        problems.append(f"verification must be one of {VERIFICATIONS}")
    if "verification_note" in data and not _nonempty_str(data["verification_note"]):
        problems.append("verification_note: empty")
    for key in ("aliases", "families"):
        values = data.get(key)
        if not isinstance(values, list) or not all(_nonempty_str(v) for v in values):
            problems.append(f"{key}: must be a list of non-empty strings")
        elif len({_alias_key(v) for v in values}) != len(values):
            problems.append(f"{key}: duplicates (after normalization)")
    aliases = data.get("aliases")
    if isinstance(aliases, list) and _nonempty_str(data.get("id")) and data["id"] not in aliases:
        problems.append("aliases: must include the id itself")
    obligations = data.get("obligations")
    if not isinstance(obligations, list) or not obligations:
        problems.append("obligations: must be a non-empty list")
        obligations = []
    notes = data.get("notes", [])
    if not isinstance(notes, list):
        problems.append("notes: must be a list")
        notes = []
    seen: set[str] = set()
    for index, item in enumerate([*obligations, *notes]):
        is_note = index >= len(obligations)
        where = f"{'notes' if is_note else 'obligations'}[{index - len(obligations) if is_note else index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where}: not an object")
            continue
        for key in ("id", "section", "quote", "summary"):
            if not _nonempty_str(item.get(key)):
                problems.append(f"{where}.{key}: missing or empty")
        item_id = item.get("id")
        if isinstance(item_id, str):
            if item_id in seen:
                problems.append(f"{where}.id: {item_id!r} used twice")
            seen.add(item_id)
        if is_note:
            continue
        if item.get("applies_to") not in APPLIES_TO:
            problems.append(f"{where}.applies_to must be one of {APPLIES_TO}")
        problems += [f"{where}.check: {p}" for p in _check_problems(item.get("check"))]
    return problems


def _check_problems(check: Any, depth: int = 0) -> list[str]:
    if not isinstance(check, Mapping):
        return ["not an object"]
    kind = check.get("kind")
    if kind not in CHECK_KINDS:
        return [f"kind {kind!r} is not one of {CHECK_KINDS}"]
    problems: list[str] = []
    allowed = {
        "text_contains": {"where", "any_of", "ignore_if_preceded_by", "hint_where"},
        "name_prefix": {"prefix"},
        "any": {"checks"},
        "manual": {"look_for"},
    }[kind]
    for key in check:
        if key != "kind" and key not in allowed:
            problems.append(f"{kind}: unexpected key {key!r}")
    for key in allowed - {"prefix", "checks"}:
        value = check.get(key, [])
        if not isinstance(value, list) or not all(_nonempty_str(v) for v in value):
            problems.append(f"{key}: must be a list of non-empty strings")
    if kind == "text_contains":
        for key in ("where", "any_of"):
            if not check.get(key):
                problems.append(f"text_contains needs {key}")
        if any(_normalize(p) == "" for p in check.get("any_of", []) if isinstance(p, str)):
            problems.append("any_of: a phrase is empty once normalized")
    elif kind == "name_prefix":
        if not _nonempty_str(check.get("prefix")):
            problems.append("name_prefix needs a prefix")
    elif kind == "any":
        subchecks = check.get("checks")
        if not isinstance(subchecks, list) or len(subchecks) < 2:
            problems.append("any needs at least two checks")
        elif depth >= 2:
            problems.append("any: nested too deep")
        else:
            for index, sub in enumerate(subchecks):
                problems += [f"checks[{index}]: {p}" for p in _check_problems(sub, depth + 1)]
    return problems


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _parse_check(data: Mapping[str, Any]) -> Check:
    return Check(
        kind=data["kind"],
        where=tuple(data.get("where", ())),
        any_of=tuple(data.get("any_of", ())),
        ignore_if_preceded_by=tuple(data.get("ignore_if_preceded_by", ())),
        hint_where=tuple(data.get("hint_where", ())),
        prefix=data.get("prefix"),
        checks=tuple(_parse_check(sub) for sub in data.get("checks", ())),
        look_for=tuple(data.get("look_for", ())),
    )


def _parse_licence(data: Mapping[str, Any]) -> Licence:
    return Licence(
        id=data["id"],
        name=data["name"],
        url=data["url"],
        version=data["version"],
        verification=data["verification"],
        verification_note=data.get("verification_note"),
        aliases=tuple(data["aliases"]),
        families=tuple(data["families"]),
        obligations=tuple(
            Obligation(
                id=item["id"],
                section=item["section"],
                quote=item["quote"],
                summary=item["summary"],
                applies_to=item["applies_to"],
                check=_parse_check(item["check"]),
            )
            for item in data["obligations"]
        ),
        notes=tuple(
            LicenceNote(id=n["id"], section=n["section"], quote=n["quote"], summary=n["summary"])
            for n in data.get("notes", ())
        ),
    )


def licence_data_files() -> list[tuple[str, str]]:
    """``(file name, text)`` of every packaged licence file, sorted by name."""
    root = resources.files("unshell") / "auditing" / "licences"
    out = [
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in root.iterdir()
        if entry.name.endswith(".json") and entry.is_file()
    ]
    return sorted(out)


@cache
def _registry() -> tuple[dict[str, Licence], dict[str, Licence]]:
    """``(by id, by alias key)``; a broken packaged file is a bug, so it raises ``ValueError``."""
    by_id: dict[str, Licence] = {}
    by_alias: dict[str, Licence] = {}
    for name, text in licence_data_files():
        data = json.loads(text)
        problems = validate_licence_data(data)
        if problems:
            raise ValueError(f"licence data {name}: " + "; ".join(problems))
        licence = _parse_licence(data)
        if licence.id in by_id:
            raise ValueError(f"licence data {name}: id {licence.id!r} used twice")
        by_id[licence.id] = licence
        for alias in licence.aliases:
            key = _alias_key(alias)
            if key in by_alias and by_alias[key].id != licence.id:
                raise ValueError(f"licence data {name}: alias {alias!r} also names {by_alias[key].id}")
            by_alias[key] = licence
    return by_id, by_alias


def _alias_key(value: str) -> str:
    """``"Llama 3"``, ``"llama_3"`` and ``"LLAMA-3"`` are one alias."""
    return re.sub(r"[\s_]+", "-", value.strip().casefold())


def known_licences() -> list[Licence]:
    """Every licence with a data file, sorted by id."""
    by_id, _ = _registry()
    return [by_id[key] for key in sorted(by_id)]


def load_licence(identifier: str | None, license_name: str | None = None) -> Licence | None:
    """The licence a model card names, or None when it is not one of ours.

    ``identifier`` is the card's ``license`` value (``llama3``, ``apache-2.0``, ``gemma``...);
    ``license_name`` is read when ``identifier`` is ``other`` (or missing, ``unknown``...), and as
    a fallback when ``identifier`` is not known. Both are matched case-insensitively against the
    licences' aliases, with spaces and underscores read as ``-``.
    """
    _, by_alias = _registry()
    candidates: list[str] = []
    if isinstance(identifier, str) and _alias_key(identifier) not in UNNAMED:
        candidates.append(identifier)
    if isinstance(license_name, str) and license_name.strip():
        candidates.append(license_name)
    for value in candidates:
        found = by_alias.get(_alias_key(value))
        if found is not None:
            return found
    return None


def licence_candidates_for_family(family: str) -> list[Licence]:
    """Every licence whose data lists ``family`` (``"llama"`` gives the five Llama agreements)."""
    key = family.strip().casefold()
    return [licence for licence in known_licences() if key in {f.casefold() for f in licence.families}]


def licence_for_family(family: str) -> Licence | None:
    """The one licence that typically governs a family, or None when none or several do.

    A hint for a base model that was detected but whose licence was not declared: ``gemma3`` gives
    the Gemma Terms of Use, ``llama`` gives None (Llama 2, 3, 3.1, 3.2 and 3.3 each have their own
    agreement; ``licence_candidates_for_family`` lists them).
    """
    candidates = licence_candidates_for_family(family)
    return candidates[0] if len(candidates) == 1 else None


# -- reading the directory ----------------------------------------------------------------------


@dataclass
class _Text:
    label: str
    normalized: str
    offsets: array[int]
    original: str
    first_line: int = 1


@dataclass
class _Directory:
    """The top-level text files of a model directory, read lazily, at most once each.

    ``remarks`` says, per file name, why a file was not read or read in part; those names still
    show in ``matching`` so that the evidence can say so.
    """

    root: Path
    containment: Path
    card_text: str | None
    remarks: dict[str, str] = field(default_factory=dict)
    _names: list[str] | None = None
    _texts: dict[str, _Text | None] = field(default_factory=dict)
    _card: _Text | None = None
    _card_read: bool = False

    def names(self) -> list[str]:
        if self._names is None:
            names: list[str] = []
            try:
                for count, entry in enumerate(self.root.iterdir()):
                    if count >= MAX_DIRECTORY_ENTRIES:
                        break
                    if self._admit(entry):
                        names.append(entry.name)
            except OSError:
                pass
            self._names = sorted(names)
        return self._names

    def _admit(self, entry: Path) -> bool:
        """Whether to list an entry: regular files, and links (refused ones get a remark)."""
        try:
            if entry.is_symlink() and not entry.resolve().is_relative_to(self.containment):
                self.remarks[entry.name] = "a link out of the directory, not read"
                return True
            return entry.is_file()
        except (OSError, RuntimeError):
            return False

    def matching(self, pattern: str) -> list[str]:
        """Top-level file names matching a case-insensitive glob (the card file never does)."""
        lowered = pattern.casefold()
        return [
            name
            for name in self.names()
            if name.casefold() != CARD_FILE.casefold() and fnmatch.fnmatchcase(name.casefold(), lowered)
        ]

    def describe(self, name: str) -> str:
        shown = sanitize(name, 80)
        remark = self.remarks.get(name)
        return f"{shown}: {remark}" if remark else shown

    def text(self, name: str) -> _Text | None:
        if name not in self._texts:
            raw = None if name in self.remarks else self._read(name)
            self._texts[name] = None if raw is None else _make_text(name, raw)
        return self._texts[name]

    def card(self) -> _Text | None:
        if not self._card_read:
            self._card_read = True
            raw = self.card_text
            if raw is None and CARD_FILE in self.names() and CARD_FILE not in self.remarks:
                raw = self._read(CARD_FILE)
            if raw is not None:
                body, first_line = _card_body(raw)
                self._card = _make_text(CARD_FILE, body, first_line=first_line)
        return self._card

    def _read(self, name: str) -> str | None:
        try:
            with (self.root / name).open("rb") as handle:
                raw = handle.read(MAX_TEXT_BYTES + 1)
        except OSError as exc:
            self.remarks[name] = f"unreadable ({sanitize(exc.strerror or type(exc).__name__)})"
            return None
        if len(raw) > MAX_TEXT_BYTES:
            self.remarks[name] = f"larger than {MAX_TEXT_BYTES} bytes, the first part read"
            raw = raw[:MAX_TEXT_BYTES]
        if b"\x00" in raw[:8192] and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            self.remarks[name] = "binary, not read"
            return None
        return _decode(raw)


def _decode(raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", errors="replace")
    return raw.decode("utf-8", errors="replace").removeprefix("\ufeff")


def _card_body(text: str) -> tuple[str, int]:
    """The card without its YAML front matter, and the line number its body starts at."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[0].rstrip() == "---":
        for index in range(1, len(lines)):
            if lines[index].rstrip() in ("---", "..."):
                return "\n".join(lines[index + 1 :]), index + 2
    return text, 1


def _open_directory(directory: Path | str, card_text: str | None) -> tuple[_Directory, str | None]:
    """A reader for a model directory, and its hub-cache repo id when it is a cache folder.

    A file path means its directory; a ``models--org--name`` folder means the snapshot
    ``refs/main`` names (as ``unshell inspect`` reads it). Links may point anywhere inside the
    directory, or for a snapshot anywhere inside its cache folder (the ``blobs/``), never beyond.
    """
    path = Path(directory)
    if not path.exists():
        raise PathNotFoundError(f"{sanitize(str(path))}: no such file or directory")
    if path.is_file():
        path = path.parent
    files_at, cache, cache_root = resolve_cache(path.absolute())
    containment = (cache_root if cache_root is not None else files_at).resolve()
    repo_id = cache.get("repo_id") if cache else None
    return _Directory(root=files_at, containment=containment, card_text=card_text), repo_id


# -- normalization and search -------------------------------------------------------------------

_REPLACEMENTS = {
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u2033": '"',
    "\u2018": "'",
    "\u2019": "'",
    "\u2032": "'",
    "\u00a9": "(c)",
    "\u2013": "-",
    "\u2014": "-",
    "*": "",
    "\\": "",
}


def _normalize_with_offsets(text: str) -> tuple[str, array[int]]:
    out: list[str] = []
    offsets: array[int] = array("q")
    pending_space = False
    for index, ch in enumerate(text):
        if ch.isspace():
            pending_space = bool(out)
            continue
        piece = _REPLACEMENTS.get(ch, ch).casefold()
        if not piece:
            continue
        if pending_space:
            out.append(" ")
            offsets.append(index - 1)
            pending_space = False
        out.append(piece)
        offsets.extend([index] * len(piece))
    return "".join(out), offsets


def _normalize(text: str) -> str:
    return _normalize_with_offsets(text)[0]


def _make_text(label: str, text: str, first_line: int = 1) -> _Text:
    normalized, offsets = _normalize_with_offsets(text)
    return _Text(label, normalized, offsets, text, first_line)


def _line_of(text: _Text, position: int) -> int:
    return text.first_line + text.original.count("\n", 0, text.offsets[position])


def _find(text: _Text, needles: Sequence[str], ignore_before: Sequence[str]) -> tuple[str, int] | None:
    """The first needle occurrence not preceded by an ignore marker: ``(needle, line)``."""
    markers = [_normalize(m) for m in ignore_before if _normalize(m)]
    for needle in needles:
        key = _normalize(needle)
        if not key:
            continue
        start = text.normalized.find(key)
        while start != -1:
            before = text.normalized[max(0, start - PRECEDING_WINDOW) : start]
            if not any(marker in before for marker in markers):
                return needle, _line_of(text, start)
            start = text.normalized.find(key, start + 1)
    return None


# -- checking -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    status: str
    evidence: str
    found_in: str | None = None


def check_obligations(
    licence: Licence,
    directory: Path | str,
    *,
    model_name: str | None,
    card_text: str | None,
    relation: str | None = None,
) -> list[ObligationResult]:
    """Check every obligation of ``licence`` against a model directory, in the licence's order.

    ``model_name`` is the name the model is distributed under (see ``model_display_name``);
    ``card_text`` the model card (``README.md`` of the directory is read when it is None; the YAML
    front matter never counts). ``relation`` is the card's ``base_model_relation``: for a
    ``quantized`` copy the obligations bound to training a model (``trained-derivative``) are left
    to a person, since re-quantizing is not obviously creating or fine-tuning one. A file path is
    read as its parent directory, a hub-cache ``models--org--name`` folder as its current snapshot.
    """
    reader, _ = _open_directory(directory, card_text)
    results: list[ObligationResult] = []
    for obligation in licence.obligations:
        if (
            obligation.applies_to == "trained-derivative"
            and isinstance(relation, str)
            and relation.strip().casefold() in QUANTIZED_RELATIONS
        ):
            outcome = _Outcome(
                "manual",
                "a quantized copy: whether it counts as a model created, trained or fine-tuned with the "
                "licensed materials is for a person to decide",
            )
        else:
            outcome = _evaluate(obligation.check, reader, model_name)
        results.append(
            ObligationResult(
                licence=licence.id,
                obligation=obligation.id,
                section=obligation.section,
                quote=obligation.quote,
                summary=obligation.summary,
                applies_to=obligation.applies_to,
                status=outcome.status,
                evidence=outcome.evidence,
                found_in=outcome.found_in,
            )
        )
    return results


def _evaluate(check: Check, reader: _Directory, model_name: str | None) -> _Outcome:
    if check.kind == "text_contains":
        return _text_contains(check, reader)
    if check.kind == "name_prefix":
        return _name_prefix(check.prefix or "", model_name)
    if check.kind == "any":
        outcomes = [_evaluate(sub, reader, model_name) for sub in check.checks]
        for outcome in outcomes:
            if outcome.status == "met":
                return outcome
        status = "manual" if any(o.status == "manual" for o in outcomes) else "missing"
        return _Outcome(status, "; ".join(o.evidence for o in outcomes))
    return _manual(check, reader)


def _places(reader: _Directory, where: Iterable[str]) -> tuple[list[_Text], list[str]]:
    """The texts a ``where`` list names, and a description of what was looked at."""
    texts: list[_Text] = []
    described: list[str] = []
    seen: set[str] = set()
    for place in where:
        if place == CARD:
            card = reader.card()
            described.append("the model card" if card is not None else "the model card (none)")
            if card is not None:
                texts.append(card)
            continue
        names = reader.matching(place)
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            text = reader.text(name)
            if text is not None:
                texts.append(text)
        # Described after reading, so that a file read in part or not at all says so.
        described.append(f"{place} ({', '.join(reader.describe(n) for n in names) or 'no such file'})")
    return texts, described


def _text_contains(check: Check, reader: _Directory) -> _Outcome:
    texts, described = _places(reader, check.where)
    for text in texts:
        found = _find(text, check.any_of, check.ignore_if_preceded_by)
        if found is not None:
            needle, line = found
            location = f"{sanitize(text.label, 80)}:{line}"
            return _Outcome("met", f'"{needle}" found in {location}', location)
    phrases = " or ".join(f'"{p}"' for p in check.any_of)
    evidence = f"{phrases} not found; looked in {', '.join(described)}"
    if check.hint_where:
        hint_texts, _ = _places(reader, check.hint_where)
        for text in hint_texts:
            found = _find(text, check.any_of, check.ignore_if_preceded_by)
            if found is not None:
                location = f"{sanitize(text.label, 80)}:{found[1]}"
                evidence += f"; the text is in {location}, which is not where the licence asks for it"
                break
    return _Outcome("missing", evidence)


def _name_prefix(prefix: str, model_name: str | None) -> _Outcome:
    if model_name is None or not model_name.strip():
        return _Outcome("manual", f'no model name given; it must begin with "{prefix}"')
    shown = model_name.strip().rstrip("/").rsplit("/", 1)[-1]
    name_key, prefix_key = _squashed_name(shown), _squashed_name(prefix)
    matches = name_key.startswith(prefix_key) and not (
        prefix_key[-1:].isdigit() and name_key[len(prefix_key) : len(prefix_key) + 1].isdigit()
    )
    if matches:
        return _Outcome("met", f'the name "{sanitize(shown, 120)}" begins with "{prefix}"', "model name")
    return _Outcome("missing", f'the name "{sanitize(shown, 120)}" does not begin with "{prefix}"')


def _squashed_name(value: str) -> str:
    return re.sub(r"[\s\-_]+", "", value.casefold())


def _manual(check: Check, reader: _Directory) -> _Outcome:
    present: list[str] = []
    for pattern in check.look_for:
        present += [name for name in reader.matching(pattern) if name not in present]
    if present:
        shown = ", ".join(reader.describe(name) for name in present)
        return _Outcome("manual", f"needs a person; related files present: {shown}")
    return _Outcome("manual", "needs a person: the files cannot show it")


# -- model name ---------------------------------------------------------------------------------


def model_display_name(directory: Path | str, card_front_matter: Mapping[str, Any] | None) -> str:
    """The name a model is distributed under, for the naming obligations.

    In order: the card's ``model_name``, the ``model-index`` entry's ``name``, the first Markdown
    H1 of the directory's ``README.md`` (outside code fences), the ``models--org--name`` repo
    name of a hub-cache snapshot, the directory's own name.
    """
    meta = card_front_matter if isinstance(card_front_matter, Mapping) else {}
    for value in (meta.get("model_name"), _model_index_name(meta.get("model-index"))):
        if isinstance(value, str) and value.strip():
            return sanitize(value.strip(), 200)
    path = Path(directory)
    try:
        reader, repo_id = _open_directory(path, None)
    except InputError:
        return sanitize(path.absolute().name or str(path), 200)
    heading = _first_h1(reader)
    if heading is not None:
        return heading
    if repo_id:
        return sanitize(repo_id.rsplit("/", 1)[-1], 200)
    return sanitize(reader.root.resolve().name or str(path), 200)


def _model_index_name(value: Any) -> str | None:
    if isinstance(value, list) and value and isinstance(value[0], Mapping):
        name = value[0].get("name")
        return name if isinstance(name, str) else None
    return None


def _first_h1(reader: _Directory) -> str | None:
    card = reader.card()
    if card is None:
        return None
    fenced = False
    for line in card.original.split("\n"):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced and re.match(r"#(?!#)\s*\S", stripped):
            title = stripped[1:].strip().strip("#").strip()
            return sanitize(title, 200) if title else None
    return None
