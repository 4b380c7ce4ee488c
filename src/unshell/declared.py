"""What a checkpoint says about itself: name, base model, licence, architecture, organization.

Declared metadata is evidence, not truth: anyone can edit a model card or a GGUF key. Every value
is therefore kept together with where it was read (`Claim.source`), and when two places disagree
the disagreement itself is recorded (`Declared.conflicts`), because a renamed copy often forgets
to rewrite one of them.

Sources, in order of precedence (the first that states a field wins):

1. the model card (``README.md``) YAML front matter,
2. ``config.json`` (``architectures``, ``model_type``, ``auto_map``; ``_name_or_path`` is kept
   apart as ``started_from``: it records where training started, often the parent's parent,
   never the model's own name),
3. the format's own metadata, from its reader (`unshell.formats.facts`): GGUF ``general.*``
   keys, ONNX ``metadata_props``/producer/doc string, safetensors ``__metadata__``, a PyTorch
   training checkpoint's ``init_from``,
4. the Hugging Face cache folder's repo id (``models--org--name``).

Nothing here raises on bad input: an unreadable or malformed card becomes a note.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .formats.base import Checkpoint, sanitize
from .formats.facts import Claim, FormatFacts, claim_text, facts_of

__all__ = ["Card", "Claim", "Declared", "card_of", "read_card_front_matter", "read_declared"]

MAX_CARD_BYTES = 1_000_000
MAX_FRONT_MATTER_BYTES = 256_000
MAX_BASE_MODELS = 64
MAX_FLOW_DEPTH = 64


@dataclass
class Declared:
    """Declared metadata of one checkpoint. A field is None when no source states it."""

    name: Claim | None = None
    base_model: Claim | None = None
    base_model_relation: Claim | None = None
    license: Claim | None = None
    license_name: Claim | None = None
    license_link: Claim | None = None
    architectures: Claim | None = None
    model_type: Claim | None = None
    auto_map: Claim | None = None
    organization: Claim | None = None
    repo_id: Claim | None = None
    source_repo: Claim | None = None
    started_from: Claim | None = None
    basename: Claim | None = None
    finetune: Claim | None = None
    quantized_by: Claim | None = None
    tags: Claim | None = None
    producer: Claim | None = None
    description: Claim | None = None
    conflicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def claims(self) -> Iterator[tuple[str, Claim]]:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Claim):
                yield item.name, value

    def to_dict(self) -> dict[str, Any]:
        """``{field: {"value", "source"}}`` for stated fields, plus ``conflicts``/``notes`` when any."""
        out: dict[str, Any] = {name: claim.to_dict() for name, claim in self.claims()}
        if self.conflicts:
            out["conflicts"] = list(self.conflicts)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


CLAIM_FIELDS = tuple(f.name for f in fields(Declared) if f.name not in ("conflicts", "notes"))


@dataclass(frozen=True)
class Card:
    """A model card, read and parsed once: its text (the first `MAX_CARD_BYTES`), its YAML front
    matter (None when absent or unusable) and what reading it noted."""

    path: Path | None
    text: str
    front_matter: dict[str, Any] | None
    notes: tuple[str, ...]


def card_of(checkpoint: Checkpoint) -> Card:
    """The model card beside ``checkpoint`` (an empty `Card` when there is none), read once."""
    return checkpoint.memo("card", lambda: _read_card(checkpoint.sidecars.get("card")))


def _read_card(path: Path | None) -> Card:
    if path is None:
        return Card(None, "", None, ())
    notes: list[str] = []
    text = _read_card_text(path, notes)
    front = None if text is None else _front_matter_of(text, sanitize(path.name), notes)
    return Card(path, text or "", front, tuple(notes))


def read_declared(checkpoint: Checkpoint, facts: FormatFacts | None = None) -> Declared:
    """Collect the declared metadata of ``checkpoint`` from its card, config and format metadata
    (once per opened checkpoint)."""
    return checkpoint.memo("declared", lambda: _read_declared(checkpoint, facts or facts_of(checkpoint)))


def _read_declared(checkpoint: Checkpoint, facts: FormatFacts) -> Declared:
    declared = Declared()
    card = card_of(checkpoint)
    candidates: list[tuple[str, Claim]] = []
    if card.path is not None:
        declared.notes.extend(card.notes)
        candidates += _card_claims(card, declared.notes)
    candidates += _config_claims(checkpoint.config)
    candidates += list(facts.claims)
    for field_name, claim in candidates:
        _merge(declared, field_name, claim)
    if not facts.can_declare and not any(True for _ in declared.claims()):
        declared.notes.append(f"{facts.label}: none declared (the format has no metadata fields)")
    return declared


def _merge(declared: Declared, field_name: str, claim: Claim) -> None:
    current: Claim | None = getattr(declared, field_name)
    if current is None:
        setattr(declared, field_name, claim)
    elif not _same(field_name, current.value, claim.value):
        declared.conflicts.append(
            f"{field_name}: {current.source} says {_show(current.value)}, {claim.source} says {_show(claim.value)}"
        )


def _same(field_name: str, first: Any, second: Any) -> bool:
    if field_name in ("name", "base_model", "repo_id", "source_repo", "started_from"):
        return _name_keys(first) == _name_keys(second)
    return _plain_keys(first) == _plain_keys(second)


def _name_keys(value: Any) -> frozenset[str]:
    """Compare model names loosely: "google/gemma-3-270m" and "Gemma 3 270M" are the same name."""
    items = value if isinstance(value, list) else [value]
    return frozenset(
        re.sub(r"[^0-9a-z]", "", str(item).rstrip("/").rsplit("/", 1)[-1].lower()) for item in items
    )


def _plain_keys(value: Any) -> frozenset[str]:
    items = value if isinstance(value, list) else [value]
    return frozenset(str(item).strip().casefold() for item in items)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(repr(sanitize(str(v), 120)) for v in value) + "]"
    return repr(sanitize(str(value), 200))


# -- model card ------------------------------------------------------------------------------------


class _CardLoader(yaml.SafeLoader):
    """YAML 1.1 safe loader that keeps ``no``/``yes``/``on``/``off`` and dates as written.

    Model cards list languages (``no`` is Norwegian) and versions; YAML 1.1 would turn them into
    booleans and datetimes (the "Norway problem"). Only ``true``/``false`` stay booleans.

    A double-quoted ``"\\ud800"`` escape makes a string with a lone surrogate, which no UTF-8
    output (a terminal, the converted model's card) can write; it becomes U+FFFD.
    """

    def construct_yaml_str(self, node: yaml.Node) -> str:
        return _LONE_SURROGATE.sub("\ufffd", super().construct_yaml_str(node))


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_CardLoader.add_constructor("tag:yaml.org,2002:str", _CardLoader.construct_yaml_str)


_UNWANTED_IMPLICIT_TAGS = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
_CardLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in _UNWANTED_IMPLICIT_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_CardLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_card_front_matter(path: Path, notes: list[str]) -> dict[str, Any] | None:
    """The YAML front matter of a model card as a dict, or None (with a note saying why)."""
    text = _read_card_text(path, notes)
    return None if text is None else _front_matter_of(text, sanitize(path.name), notes)


def _front_matter_of(text: str, label: str, notes: list[str]) -> dict[str, Any] | None:
    block = _front_matter_block(text)
    if block is None:
        notes.append(f"{label}: no YAML front matter")
        return None
    if len(block.encode("utf-8", "surrogatepass")) > MAX_FRONT_MATTER_BYTES:
        notes.append(f"{label}: front matter larger than {MAX_FRONT_MATTER_BYTES} bytes, ignored")
        return None
    if _flow_depth(block) > MAX_FLOW_DEPTH:
        notes.append(f"{label}: front matter nests [ and {{ more than {MAX_FLOW_DEPTH} deep, ignored")
        return None
    parsed = _parse_yaml(block, label, notes)
    if parsed is None:
        return None
    if not isinstance(parsed, dict):
        notes.append(f"{label}: front matter is a {type(parsed).__name__}, not a mapping; ignored")
        return None
    return parsed


def _flow_depth(block: str) -> int:
    """The deepest nesting of YAML flow collections (``[`` and ``{``) in ``block``, outside quotes
    and comments; an over-estimate for plain scalars that hold brackets, which is harmless here.

    PyYAML's scanner takes time quadratic in this depth: a 6 KB card of ``[`` took seconds per
    parse before the parser's recursion limit stopped it. Real cards nest a few levels.
    """
    depth = deepest = 0
    quote = ""
    previous = "\n"
    index = 0
    while index < len(block):
        char = block[index]
        if quote:
            if char == "\\" and quote == '"':
                index += 1
            elif char == quote:
                quote = ""
        elif char in "\"'" and previous in " \t\n[{,:":
            quote = char
        elif char == "#" and previous in " \t\n":
            end = block.find("\n", index)
            index = len(block) if end < 0 else end
            continue
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(depth - 1, 0)
        previous = char
        index += 1
    return deepest


def _read_card_text(path: Path, notes: list[str]) -> str | None:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CARD_BYTES + 1)
    except OSError as exc:
        notes.append(f"{sanitize(path.name)}: unreadable ({sanitize(exc.strerror or type(exc).__name__)})")
        return None
    if len(raw) > MAX_CARD_BYTES:
        # The front matter is at the top; the rest of a huge card is prose.
        notes.append(f"{sanitize(path.name)}: larger than {MAX_CARD_BYTES} bytes, read the first part only")
        raw = raw[:MAX_CARD_BYTES]
    text = raw.decode("utf-8", errors="replace").removeprefix("\ufeff")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _front_matter_block(text: str) -> str | None:
    lines = text.split("\n")
    if not lines or lines[0].rstrip() != "---":
        return None
    for index in range(1, len(lines)):
        if lines[index].rstrip() in ("---", "..."):
            return "\n".join(lines[1:index])
    return None


def _parse_yaml(block: str, label: str, notes: list[str]) -> Any:
    try:
        # yaml.load is safe here: _CardLoader is a SafeLoader.
        return yaml.load(block, Loader=_CardLoader)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as exc:
        first_error = exc
    if "\t" in block:
        try:
            parsed = yaml.load(block.replace("\t", "  "), Loader=_CardLoader)
        except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError):
            pass
        else:
            notes.append(f"{label}: front matter indents with tabs (invalid YAML); read with tabs as spaces")
            return parsed
    problem = str(first_error).split("\n", 1)[0]
    notes.append(f"{label}: front matter is not valid YAML ({sanitize(problem, 120)}); ignored")
    return None


def _card_claims(card: Card, notes: list[str]) -> list[tuple[str, Claim]]:
    meta, path = card.front_matter, card.path
    if meta is None or path is None:
        return []
    source = f"{sanitize(path.name)} front matter"
    claims: list[tuple[str, Claim]] = []
    for key in ("license", "license_name", "license_link", "base_model_relation"):
        text = _text(meta.get(key))
        if text is not None:
            claims.append((key, Claim(text, source)))
    name = _text(meta.get("model_name")) or _model_index_name(meta.get("model-index"))
    if name is not None:
        claims.append(("name", Claim(name, source)))
    base = _base_model_value(meta.get("base_model"), f"{sanitize(path.name)}: base_model", notes)
    if base is not None:
        claims.append(("base_model", Claim(base, source)))
        if isinstance(base, list) and len(base) > 1 and _text(meta.get("base_model_relation")) is None:
            claims.append(
                ("base_model_relation", Claim("merge", f"{source} (inferred: several base models)"))
            )
    return claims


def _model_index_name(model_index: Any) -> str | None:
    if isinstance(model_index, list) and model_index and isinstance(model_index[0], dict):
        return _text(model_index[0].get("name"))
    return None


def _base_model_value(value: Any, where: str, notes: list[str]) -> str | list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        text = _text(value)
        if text is None:
            notes.append(f"{where} is a {type(value).__name__}, not a string or list; ignored")
        return text
    names = [text for item in value[:MAX_BASE_MODELS] if (text := _text(item)) is not None]
    if len(names) != len(value):
        notes.append(f"{where}: kept {len(names)} of {len(value)} entries (the rest are not names)")
    if not names:
        return None
    return names[0] if len(names) == 1 else names


_text = claim_text


# -- config.json ------------------------------------------------------------------------------------


def _config_claims(config: Mapping[str, Any] | None) -> list[tuple[str, Claim]]:
    if not isinstance(config, Mapping):
        return []
    claims: list[tuple[str, Claim]] = []
    architectures = config.get("architectures")
    if isinstance(architectures, list):
        names = [text for item in architectures[:MAX_BASE_MODELS] if (text := _text(item)) is not None]
        if names:
            claims.append(("architectures", Claim(names, "config.json")))
    model_type = _text(config.get("model_type"))
    if model_type is not None:
        claims.append(("model_type", Claim(model_type, "config.json")))
    auto_map = config.get("auto_map")
    if isinstance(auto_map, Mapping):
        # Which of the model's own code files transformers would run (`trust_remote_code`).
        targets: dict[str, str] = {}
        for key, value in list(auto_map.items())[:MAX_BASE_MODELS]:
            first = value[0] if isinstance(value, list) and value else value  # [slow, fast] tokenizer pairs
            if isinstance(key, str) and isinstance(first, str) and (text := _text(first)) is not None:
                targets[sanitize(key, 100)] = text
        if targets:
            claims.append(("auto_map", Claim(targets, "config.json auto_map")))
    name = _text(config.get("_name_or_path"))
    if name is not None:
        claims.append(("started_from", Claim(name, "config.json _name_or_path")))
    return claims
