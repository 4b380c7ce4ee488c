"""`unshell.inspect(path)`: what a checkpoint is, from headers alone.

The result is a plain dataclass with `to_dict()` producing the versioned JSON document that
``unshell inspect --format json`` prints (schema in ``docs/inspect-schema.md``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .arch.recognize import Assignment, Recognition, is_buffer, recognize
from .formats.base import Checkpoint, sanitize
from .formats.facts import FormatFacts, facts_of

if TYPE_CHECKING:
    from .tokenizers.report import TokenizerReport

SCHEMA_VERSION = 1


@dataclass
class InspectResult:
    path: str
    format: str
    layout: str
    files: list[dict[str, Any]]
    recognition: Recognition
    declared_config: dict[str, Any] | None
    declared_config_source: str | None
    parameters: int
    tensor_count: int
    total_bytes: int
    dtypes: dict[str, dict[str, int]]
    ignored: list[str]
    tokenizer: dict[str, Any] | None
    declared: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    facts: FormatFacts = field(default_factory=FormatFacts)

    @property
    def native_conventions(self) -> frozenset[str]:
        return self.facts.native_conventions

    @property
    def family(self) -> str | None:
        return self.recognition.family

    @property
    def renamed(self) -> list[Assignment]:
        """Tensors whose names are not the reference names (nor the container's own convention)."""
        out = []
        for assignment in self.recognition.assignments:
            if assignment.convention in self.native_conventions:
                continue
            if assignment.role is not None:
                canonical = assignment.canonical
                if canonical is None or _same_up_to_prefix(assignment.name, canonical):
                    continue
            elif any(_same_up_to_prefix(assignment.name, c) for c in assignment.canonical_candidates):
                continue
            out.append(assignment)
        return out

    def to_dict(self, *, tensor_map: bool = False) -> dict[str, Any]:
        recognition = self.recognition
        renamed = self.renamed
        document: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "path": sanitize(self.path, limit=4096),
            "format": self.format,
            "layout": self.layout,
            "files": self.files,
            "architecture": {
                "family": recognition.family,
                "reference": recognition.reference,
                "matched_family": recognition.matched_family,
                "compatible_with": recognition.compatible_with,
                "confidence": recognition.confidence,
                "evidence": recognition.evidence,
                "config": recognition.config,
                "declared_config_source": self.declared_config_source,
                "layered": recognition.layered,
                "notes": recognition.notes,
            },
            "naming": _naming_summary(recognition.assignments, renamed),
            "renamed": [_assignment_dict(a) for a in renamed],
            "unexplained": [sanitize(n) for n in recognition.unexplained],
            "ignored_buffers": [sanitize(n) for n in self.ignored],
            "parameters": self.parameters,
            "tensors": self.tensor_count,
            "bytes": self.total_bytes,
            "dtypes": self.dtypes,
            "tokenizer": _sanitize_tree(self.tokenizer),
            "declared": _sanitize_tree(self.declared),
            "notes": [sanitize(n, limit=1000) for n in self.notes],
        }
        if tensor_map:
            document["tensor_map"] = [_assignment_dict(a) for a in recognition.assignments]
        return document


def _sanitize_tree(value: Any) -> Any:
    """Escape control characters in every string of a JSON-able tree read from untrusted files."""
    if isinstance(value, str):
        return sanitize(value, limit=4096)
    if isinstance(value, dict):
        return {sanitize(str(k), limit=256): _sanitize_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sanitize_tree(v) for v in value]
    return value


def _same_up_to_prefix(name: str, canonical: str) -> bool:
    return name == canonical or name.endswith("." + canonical) or canonical.endswith("." + name)


def _assignment_dict(assignment: Assignment) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": sanitize(assignment.name), "layer": assignment.layer}
    if assignment.role is not None:
        entry["canonical"] = assignment.canonical
        entry["role"] = assignment.role
    else:
        entry["canonical"] = None
        entry["candidates"] = list(assignment.canonical_candidates)
        entry["roles"] = list(assignment.candidates)
    entry["resolved_by"] = assignment.resolved_by
    if assignment.convention:
        entry["convention"] = assignment.convention
    return entry


def _naming_summary(assignments: list[Assignment], renamed: list[Assignment]) -> dict[str, Any]:
    conventions: dict[str, int] = {}
    for assignment in assignments:
        if assignment.convention:
            conventions[assignment.convention] = conventions.get(assignment.convention, 0) + 1
    return {
        "conventions": dict(sorted(conventions.items(), key=lambda kv: -kv[1])),
        "renamed": len(renamed),
        "ambiguous": sum(1 for a in assignments if a.role is None),
    }


def declared_config(checkpoint: Checkpoint) -> tuple[dict[str, Any] | None, str | None]:
    """What the files declare about hyperparameters, in Hugging Face config.json key names: the
    config.json, else what the format's own header says (its reader's `FormatFacts.config`)."""
    if checkpoint.config:
        config = dict(checkpoint.config)
        text = config.get("text_config")
        if isinstance(text, dict):
            merged = {**config, **text}
            return merged, "config.json (text_config)"
        return config, "config.json"
    facts = facts_of(checkpoint)
    return facts.config, facts.config_source


def _dtype_summary(checkpoint: Checkpoint) -> dict[str, dict[str, int]]:
    summary: dict[str, dict[str, int]] = {}
    for info in checkpoint.tensors.values():
        row = summary.setdefault(info.dtype, {"tensors": 0, "parameters": 0, "bytes": 0})
        row["tensors"] += 1
        row["parameters"] += info.numel
        row["bytes"] += info.nbytes
    return dict(sorted(summary.items(), key=lambda kv: -kv[1]["parameters"]))


def weight_tensors(checkpoint: Checkpoint) -> tuple[list[tuple[str, tuple[int, ...]]], list[str]]:
    """Weight tensors for recognition and the buffers left out. Tensors that are views of the same
    bytes count once: PyTorch saves tied embeddings as two names over one storage."""
    weights, ignored = [], []
    seen: dict[tuple[object, ...], str] = {}
    for name, info in checkpoint.tensors.items():
        if is_buffer(name, info.dtype, dict(info.extra)):
            ignored.append(name)
            continue
        if not info.parts:
            location = (info.file, info.offset, info.nbytes, info.dtype, info.shape, info.strides)
            if seen.setdefault(location, name) != name:
                continue  # the reader already notes shared storage
        weights.append((name, info.shape))
    return weights, ignored


def _file_rows(files: Iterable[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in files:
        try:
            size = os.stat(path).st_size
        except OSError:
            size = None
        rows.append({"path": sanitize(str(path), limit=4096), "bytes": size})
    return rows


def _tokenizer_section(checkpoint: Checkpoint, tokenizer: Any) -> dict[str, Any] | None:
    """The tokenizer's description, with the known family it belongs to (None when none)."""
    from .tokenizers.families import match_families
    from .tokenizers.report import family_section
    from .tokenizers.vocab import vocabulary_of

    if tokenizer is None:
        return None
    section: dict[str, Any] = tokenizer.to_dict()
    vocabulary = vocabulary_of(checkpoint)
    section["family"] = family_section(match_families(vocabulary)) if vocabulary is not None else None
    return section


def inspect_checkpoint(checkpoint: Checkpoint) -> InspectResult:
    """Inspect an already opened checkpoint (reads no tensor data); once per opened checkpoint."""
    return checkpoint.memo("inspection", lambda: _inspect(checkpoint))


def _inspect(checkpoint: Checkpoint) -> InspectResult:
    from .declared import read_declared
    from .tokenizers import describe_tokenizer

    facts = facts_of(checkpoint)
    config, config_source = declared_config(checkpoint)
    weights, ignored = weight_tensors(checkpoint)
    recognition = recognize(weights, declared_config=config, declared_family=facts.family_hint)
    tokenizer = describe_tokenizer(checkpoint)
    declared = read_declared(checkpoint, facts)
    notes = list(checkpoint.notes)
    notes.extend(declared.notes)
    notes.extend(f"declared metadata conflict: {c}" for c in declared.conflicts)
    claims = {k: v for k, v in declared.to_dict().items() if k not in ("notes", "conflicts")}
    return InspectResult(
        path=str(checkpoint.path),
        format=checkpoint.format,
        layout=checkpoint.layout,
        files=_file_rows(checkpoint.files),
        recognition=recognition,
        declared_config=config,
        declared_config_source=config_source,
        parameters=checkpoint.parameter_count,
        tensor_count=len(checkpoint.tensors),
        total_bytes=checkpoint.total_bytes,
        dtypes=_dtype_summary(checkpoint),
        ignored=ignored,
        tokenizer=_tokenizer_section(checkpoint, tokenizer),
        declared=claims,
        notes=notes,
        facts=facts,
    )


def inspect(path: str | os.PathLike[str]) -> InspectResult | TokenizerReport:
    """What a checkpoint is: format, architecture, renamed tensors, tokenizer, declared lineage.

    Reads headers and small side files only, never tensor data. A tokenizer alone (a tokenizer
    file or folder, a vocabulary-only GGUF) gets a `TokenizerReport`: its kind and family.

    Example:
        >>> import unshell
        >>> result = unshell.inspect("tests/data/fixtures/stories260K.bin")  # doctest: +SKIP
        >>> result.family
        'llama'
    """
    from .tokenizers.report import inspect_tokenizer, open_model_or_tokenizer

    opened = open_model_or_tokenizer(path)
    if not isinstance(opened, Checkpoint):
        return inspect_tokenizer(path, opened)
    with opened as checkpoint:
        return inspect_checkpoint(checkpoint)
