"""Code provenance: which transformers implementation is a model's own modeling code a copy of?

A model directory may ship its own modeling code (``modeling_*.py``, named by ``auto_map`` in
``config.json``). In the Yi case, the mentions of Llama were deleted from such a file and later put
back. This module compares that code with the reference implementations in the *installed*
transformers package and reports the closest one, how much of the file it explains, and the
references to the original model that the file renamed or removed.

The model's code is never imported or executed: it is read (at most ``MAX_SOURCE_BYTES``) and
parsed with :func:`ast.parse` only. transformers itself is never imported either: its package
directory is located with :func:`importlib.util.find_spec` and its ``models/*/modeling_*.py`` files
are parsed the same way.

**Normalization.** Each function or method is one unit, and so is the rest of each class body and
the rest of the module. A unit becomes a pre-order sequence of tokens: the AST node types
(structure), operators, numeric and boolean constants (string constants become one token:
messages and names in strings do not survive a rename), and the names that carry meaning whatever
the model is called: imported library names resolved through the imports (``nn.Linear`` and
``torch.nn.Linear`` are the same token; ``F.silu`` is ``torch.nn.functional.silu``), builtins, and
attribute or keyword names that the file does not define (``.view``, ``.transpose``, ``dim=``).
Every name the file defines (classes, functions, arguments, variables, stored attributes, names
imported from the model's own package) is replaced by its distance, in defined-name occurrences,
to the previous use of the same name in the unit (Baker's parameterized encoding; 0 on first use).
That encoding is exactly invariant under any consistent renaming (``LlamaAttention`` to
``YiAttention``, ``hidden_states`` to ``hs``) yet keeps the data flow, and unlike numbering names
by first appearance, an inserted or deleted name only perturbs the tokens near it. Docstrings,
bare string statements, comments, imports and type annotations are dropped.

**Comparison.** A file's fingerprint is the set of hashes of all token ``SHINGLE``-grams inside
its units (a unit shorter than that gives one padded shingle), so reordering classes or methods
changes nothing and a partial copy keeps the shingles of what it copied. Two numbers describe a
pair:

* ``similarity``: the share of the model file's shingles found in the reference (containment),
  i.e. how much of this file the reference explains. It stays high for a file that copies part
  of a reference and adds nothing new, and does not depend on what else the reference holds.
* ``coverage``: the share of the reference's shingles found in the file.

References are ranked by their harmonic mean (the Dice coefficient of the two sets), so that a much
larger file that happens to contain the same code (a multimodal model embedding a Llama text
model) does not outrank the implementation itself; ``similarity`` is the figure reported.
Transformers holds many near-copies of one implementation (files generated from ``modular_*.py``
files that build on Llama, "Copied from" blocks), so the runner-up and each reference's own
declared origin (``reference_derived_from``) are reported with the best match.

**Removed references.** The model file's raw identifiers, strings and comments are compared with
the best reference's: each class or top-level function of the reference whose name holds the
reference's family name (``LlamaAttention``) and whose body matches one of the file's under
another name (by structure; ties settled by the name pattern ``Llama`` -> ``Yi``), the license
header's copyright lines and the "Copied from transformers.models.X" and "generated from
modular_X.py" comments that the file lacks, and how often the family name appears in each.
Only what the two files show is reported.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import hashlib
import importlib.util
import io
import json
import os
import re
import sys
import time
import tokenize
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MissingDependencyError, PathNotFoundError, ResourceLimitError
from ..formats.base import sanitize

__all__ = [
    "MAX_SOURCE_BYTES",
    "CodeFingerprint",
    "CodeMatch",
    "CodeUnit",
    "ReferenceIndex",
    "code_provenance",
    "code_similarity",
    "find_model_code",
    "fingerprint_code",
]

MAX_SOURCE_BYTES = 4_000_000
MAX_SOURCE_TOKENS = 300_000
"""Tokens (estimated: names, numbers and punctuation) in one file given to ast.parse. The parser
holds about a kilobyte per token, so this, not the byte size, bounds its memory: transformers'
largest modeling file has about 34,000; a 4 MB list of small ints has two million."""
MAX_CONFIG_BYTES = 4_000_000
MAX_CODE_FILES = 64
SHINGLE = 10
TOP_CANDIDATES = 5
MIN_REPORTED_SIMILARITY = 0.2
MIN_RENAME_JACCARD = 0.5
MAX_ALIGNED_DEFINITIONS = 5_000
MIN_OTHER_SOURCE = 0.1
INDEX_FORMAT = 1
_BAKER_CAP = 32

# --- result ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeMatch:
    """What one of the model's code files is closest to among the reference implementations.

    - ``file``: the file, relative to the model directory.
    - ``reference``: the closest reference (``transformers/models/llama/modeling_llama.py``), or
      None when the file could not be read (``notes`` says why) or when no reference explains at
      least ``MIN_REPORTED_SIMILARITY`` of it (the closest are still in ``candidates``).
    - ``reference_family``: its model family (``llama``).
    - ``similarity``: share of the file's normalized shingles found in the reference (0..1).
    - ``coverage``: share of the reference's shingles found in the file.
    - ``runner_up`` and ``candidates``: the next best, and the best few, as ``(reference, similarity)``.
    - ``also_from``: other references that explain parts of the file the best one does not, with
      the share of the file each adds (a file that pastes two models together).
    - ``reference_derived_from``: the families the reference's own code says it comes from.
    - ``removed_references``: renamed definitions and removed attributions, each shown by the files.
    - ``notes``: everything else worth knowing, including what could not be checked.
    """

    file: str
    reference: str | None
    reference_family: str | None
    similarity: float
    coverage: float = 0.0
    runner_up: tuple[str, float] | None = None
    candidates: tuple[tuple[str, float], ...] = ()
    also_from: tuple[tuple[str, float], ...] = ()
    reference_derived_from: tuple[str, ...] = ()
    removed_references: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "reference": self.reference,
            "reference_family": self.reference_family,
            "similarity": round(self.similarity, 4),
            "coverage": round(self.coverage, 4),
            "runner_up": None
            if self.runner_up is None
            else {"reference": self.runner_up[0], "similarity": round(self.runner_up[1], 4)},
            "candidates": [
                {"reference": name, "similarity": round(value, 4)} for name, value in self.candidates
            ],
            "also_from": [{"reference": name, "share": round(value, 4)} for name, value in self.also_from],
            "reference_derived_from": list(self.reference_derived_from),
            "removed_references": list(self.removed_references),
            "notes": list(self.notes),
        }


# --- normalization ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeUnit:
    """One normalized unit of a file: a function, a method, the rest of a class, or the rest of
    the module."""

    kind: str  # "module", "class", "function" or "method"
    name: str  # the class or function name as written ("" for the module)
    owner: str  # the class a method or class body belongs to ("" otherwise)


@dataclass(frozen=True)
class CodeFingerprint:
    """The normalized shingle hashes of one source file.

    ``hashes`` is the sorted set of all shingle hashes (uint64); ``unit_hashes`` the same per unit
    (``units[i]`` describes ``unit_hashes[i]``), used to align classes and functions.
    """

    hashes: np.ndarray
    units: tuple[CodeUnit, ...]
    unit_hashes: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return int(self.hashes.size)


_TOKEN_IDS: dict[str, int] = {}


def _tok(text: str) -> int:
    found = _TOKEN_IDS.get(text)
    if found is None:
        # Stable across processes (the disk cache relies on it) and never 0 (0 pads units).
        found = zlib.crc32(text.encode("utf-8", "surrogatepass")) | (1 << 32)
        _TOKEN_IDS[text] = found
    return found


_SKIPPED_FIELDS = frozenset({"ctx", "type_comment", "annotation", "returns", "type_params", "kind"})
_FIELDS: dict[type, tuple[int, tuple[str, ...]]] = {}


def _fields(cls: type) -> tuple[int, tuple[str, ...]]:
    found = _FIELDS.get(cls)
    if found is None:
        names = tuple(name for name in reversed(cls._fields) if name not in _SKIPPED_FIELDS)  # type: ignore[attr-defined]
        found = (_tok(cls.__name__), names)
        _FIELDS[cls] = found
    return found


_KEPT_NAMES = frozenset({"self", "cls", "super", "__name__", "__class__"})
_T_ATTR = _tok(".")
_T_KW = _tok("kw")
_T_KW_SPREAD = _tok("kw**")
_T_ARG = _tok("arg")
_T_DEF = _tok("def")
_T_CLASS = _tok("class")
_T_NONE_SLOT = _tok("<none>")
_T_STR = _tok("S")
_T_BYTES = _tok("B")
_T_NEW = _tok("P:new")
_T_FAR = _tok("P:far")
_T_DIST = tuple(_tok(f"P:{d}") for d in range(_BAKER_CAP + 1))


def _constant_token(value: Any) -> int:
    if isinstance(value, str):
        return _T_STR
    if isinstance(value, bytes):
        return _T_BYTES
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 64:
        return _tok("C:bigint")
    return _tok("C:" + repr(value)[:64])


class _Walker:
    """Turns one parsed module into units of tokens (ints) and raw names (str, resolved later)."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}  # name bound by an import of a library -> what it names
        self.defined: set[str] = set()
        self.units: list[tuple[CodeUnit, list[int | str]]] = []

    def run(self, tree: ast.Module) -> None:
        module: list[int | str] = []
        for statement in tree.body:
            if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                items: list[int | str] = []
                self.walk(statement, items)
                self.units.append((CodeUnit("function", statement.name, ""), items))
            elif isinstance(statement, ast.ClassDef):
                self.walk_class(statement)
            else:
                self.walk(statement, module)
        self.units.append((CodeUnit("module", "", ""), module))

    def walk_class(self, node: ast.ClassDef) -> None:
        header: list[int | str] = [_T_CLASS, node.name]
        self.defined.add(node.name)
        for expression in [*node.decorator_list, *node.bases, *node.keywords]:
            self.walk(expression, header)
        for statement in node.body:
            if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                items: list[int | str] = []
                self.walk(statement, items)
                self.units.append((CodeUnit("method", statement.name, node.name), items))
            else:
                self.walk(statement, header)
        self.units.append((CodeUnit("class", node.name, node.name), header))

    def walk(self, root: ast.AST, out: list[int | str]) -> None:
        append = out.append
        defined = self.defined
        aliases = self.aliases
        stack: list[Any] = [root]
        pop = stack.pop
        push = stack.append
        while stack:
            node = pop()
            if node is None:
                append(_T_NONE_SLOT)
                continue
            cls = type(node)
            if cls is ast.Name:
                name = node.id
                if name in _KEPT_NAMES:
                    append(_tok(name))
                else:
                    if type(node.ctx) is not ast.Load:
                        defined.add(name)
                    append(name)
                continue
            if cls is ast.Attribute:
                chain = [node.attr]
                base = node.value
                while type(base) is ast.Attribute:
                    chain.append(base.attr)
                    base = base.value
                if type(base) is ast.Name and base.id in aliases and base.id not in defined:
                    chain.append(aliases[base.id])
                    append(_tok("M:" + ".".join(reversed(chain))))
                    continue
                if type(node.ctx) is not ast.Load:
                    defined.add(node.attr)
                append(_T_ATTR)
                append(node.attr)
                push(node.value)
                continue
            if cls is ast.Constant:
                append(_constant_token(node.value))
                continue
            if cls is ast.Expr:
                value = node.value
                if type(value) is ast.Constant and isinstance(value.value, str):
                    continue  # docstring or a string used as a comment
            elif cls is ast.Import or cls is ast.ImportFrom:
                self.bind_imports(node)
                continue
            elif cls is ast.arg:
                append(_T_ARG)
                if node.arg in _KEPT_NAMES:
                    append(_tok(node.arg))
                else:
                    append(node.arg)
                    defined.add(node.arg)
                continue
            elif cls is ast.keyword:
                if node.arg is None:
                    append(_T_KW_SPREAD)
                else:
                    append(_T_KW)
                    append(node.arg)
                push(node.value)
                continue
            elif cls is ast.FunctionDef or cls is ast.AsyncFunctionDef or cls is ast.ClassDef:
                append(_T_CLASS if cls is ast.ClassDef else _T_DEF)
                append(node.name)
                defined.add(node.name)
                body = node.body
                if body and type(body[0]) is ast.Expr:
                    first = body[0].value
                    if type(first) is ast.Constant and isinstance(first.value, str):
                        body = body[1:]
                stack.extend(reversed(body))
                if cls is ast.ClassDef:
                    stack.extend(reversed(node.keywords))
                    stack.extend(reversed(node.bases))
                else:
                    push(node.args)
                stack.extend(reversed(node.decorator_list))
                continue
            elif cls is ast.Global or cls is ast.Nonlocal:
                append(_tok(cls.__name__))
                for name in node.names:
                    defined.add(name)
                    append(name)
                continue
            elif cls is ast.ExceptHandler:
                append(_tok("except"))
                if node.name:
                    defined.add(node.name)
                    append(node.name)
                stack.extend(reversed(node.body))
                if node.type is not None:
                    push(node.type)
                continue
            token, names = _fields(cls)
            append(token)
            for field_name in names:
                value = getattr(node, field_name, None)
                if type(value) is list:
                    for item in reversed(value):
                        if item is None or isinstance(item, ast.AST):
                            push(item)
                elif isinstance(value, ast.AST):
                    push(value)

    def bind_imports(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".", 1)[0]
                    self.aliases[top] = top
            return
        module = node.module or ""
        own_package = node.level == 1 or (node.level == 0 and module.startswith("configuration_"))
        for alias in node.names:
            bound = alias.asname or alias.name
            if alias.name == "*":
                continue
            if own_package:
                # The model's own modules (configuration_yi, a helper next to the file): renamed with it.
                self.defined.add(bound)
            elif node.level == 0 and module.split(".", 1)[0] not in ("transformers",):
                self.aliases[bound] = f"{module}.{alias.name}"  # torch.nn, math.sqrt, ...
            else:
                self.aliases[bound] = alias.name  # transformers internals, relative or absolute

    def token_units(self) -> list[tuple[CodeUnit, list[int]]]:
        defined = self.defined
        aliases = self.aliases
        units = []
        for unit, items in self.units:
            tokens: list[int] = []
            add = tokens.append
            last: dict[str, int] = {}
            count = 0
            for item in items:
                if type(item) is int:
                    add(item)
                elif item in defined:
                    previous = last.get(item)
                    if previous is None:
                        add(_T_NEW)
                    else:
                        distance = count - previous
                        add(_T_DIST[distance] if distance <= _BAKER_CAP else _T_FAR)
                    last[item] = count
                    count += 1
                elif item in aliases:
                    add(_tok("M:" + aliases[item]))
                else:
                    add(_tok(f"X:{item}"))
            if tokens:
                units.append((unit, tokens))
        return units


_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_BASE = np.uint64(0x100000001B3)


def _shingles(units: Sequence[tuple[CodeUnit, list[int]]]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every ``SHINGLE``-gram that starts inside a unit, and the unit each belongs to."""
    pad = [0] * (SHINGLE - 1)
    flat: list[int] = []
    lengths = []
    for _, tokens in units:
        flat += tokens
        flat += pad
        lengths.append(len(tokens) + SHINGLE - 1)
    if not flat:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    values = np.asarray(flat, dtype=np.uint64)
    count = values.size - SHINGLE + 1
    hashes = values[:count].copy()
    for offset in range(1, SHINGLE):
        hashes *= _BASE
        hashes += values[offset : offset + count]
    hashes ^= hashes >> np.uint64(30)
    hashes *= _MIX_1
    hashes ^= hashes >> np.uint64(27)
    hashes *= _MIX_2
    hashes ^= hashes >> np.uint64(31)
    starts = values[:count] != 0
    owners = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)[:count]
    return hashes[starts], owners[starts]


def _fingerprint_tree(tree: ast.Module, *, per_unit: bool) -> CodeFingerprint:
    walker = _Walker()
    walker.run(tree)
    units = walker.token_units()
    hashes, owners = _shingles(units)
    unit_hashes: tuple[np.ndarray, ...] = ()
    if per_unit:
        unit_hashes = tuple(np.unique(hashes[owners == index]) for index in range(len(units)))
    return CodeFingerprint(np.unique(hashes), tuple(unit for unit, _ in units), unit_hashes)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Parsing allocates a million small objects; the cyclic collector would spend most of the
    time walking them (parse time drops about sixfold without it). Nothing here makes cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _token_estimate(source: bytes) -> int:
    """About how many tokens the Python tokenizer makes of ``source`` (an overestimate: text in
    strings and comments counts too): each run of word bytes, and each other non-space byte."""
    data = np.frombuffer(source, dtype=np.uint8)
    word = (
        ((data >= ord("a")) & (data <= ord("z")))
        | ((data >= ord("A")) & (data <= ord("Z")))
        | ((data >= ord("0")) & (data <= ord("9")))
        | (data == ord("_"))
        | (data >= 0x80)
    )
    space = (data == ord(" ")) | (data == ord("\n")) | (data == ord("\t")) | (data == ord("\r"))
    starts = int(np.count_nonzero(word[1:] & ~word[:-1])) + int(bool(data.size and word[0]))
    return starts + int(np.count_nonzero(~word & ~space))


def _parse(source: bytes, label: str) -> ast.Module:
    """``ast.parse`` only (never compiled to bytecode, never run); every failure an InputError."""
    tokens = _token_estimate(source)
    if tokens > MAX_SOURCE_TOKENS:
        raise ResourceLimitError(
            f"{label}: about {tokens:,} tokens of Python, more than the {MAX_SOURCE_TOKENS:,} parsed "
            "(parsing takes about a kilobyte of memory per token)"
        )
    try:
        with _gc_paused():
            return ast.parse(source, filename=label)
    except SyntaxError as exc:  # IndentationError and TabError included
        where = f" (line {exc.lineno})" if exc.lineno else ""
        raise InputError(f"{label}: not valid Python{where}: {sanitize(str(exc.msg), 200)}") from None
    except ValueError as exc:  # null bytes, before Python 3.12
        raise InputError(f"{label}: not valid Python: {sanitize(str(exc), 200)}") from None
    except RecursionError:
        raise ResourceLimitError(f"{label}: nested too deeply to parse") from None
    except MemoryError:  # CPython's parser raises it for real exhaustion and for a parser stack overflow
        raise ResourceLimitError(
            f"{label}: the Python parser ran out of memory on {len(source):,} bytes "
            "(nested too deeply, or too large, to parse)"
        ) from None


def _read_source(path: Path, label: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SOURCE_BYTES + 1)
    except FileNotFoundError:
        raise PathNotFoundError(f"{label}: no such file") from None
    except OSError as exc:
        raise PathNotFoundError(
            f"{label}: unreadable ({sanitize(exc.strerror or type(exc).__name__)})"
        ) from None
    if len(data) > MAX_SOURCE_BYTES:
        raise ResourceLimitError(
            f"{label}: more than {MAX_SOURCE_BYTES:,} bytes of Python; refusing to parse a file this large"
        )
    return data


def fingerprint_code(source: str | bytes | Path, *, label: str | None = None) -> CodeFingerprint:
    """The normalized fingerprint of Python source, parsed and never executed.

    ``source`` is the code itself (``str`` or ``bytes``) or a ``Path`` to read it from.

    Raises:
        InputError: not valid Python. ResourceLimitError: larger than ``MAX_SOURCE_BYTES`` or
        nested too deeply. PathNotFoundError: the path cannot be read.
    """
    if isinstance(source, Path):
        label = label or sanitize(source.name)
        data = _read_source(source, label)
    else:
        data = source.encode("utf-8", "surrogatepass") if isinstance(source, str) else source
        label = label or "<source>"
        if len(data) > MAX_SOURCE_BYTES:
            raise ResourceLimitError(f"{label}: more than {MAX_SOURCE_BYTES:,} bytes of Python")
    return _fingerprint_tree(_parse(data, label), per_unit=True)


def _overlap(first: np.ndarray, second: np.ndarray) -> int:
    return int(np.intersect1d(first, second, assume_unique=True).size)


def code_similarity(file: str | Path, reference: str | Path) -> float:
    """Share of ``file``'s normalized shingles found in ``reference`` (0..1), both parsed, never run."""
    mine = fingerprint_code(Path(file))
    theirs = fingerprint_code(Path(reference))
    return _overlap(mine.hashes, theirs.hashes) / len(mine) if len(mine) else 0.0


class _Shared:
    """Overlap of one set of hashes with each of many sets at once (sorted, with owners)."""

    def __init__(self, sets: Sequence[np.ndarray]) -> None:
        self.sizes = np.asarray([array.size for array in sets], dtype=np.int64)
        flat = np.concatenate(sets) if sets else np.zeros(0, dtype=np.uint64)
        owners = np.repeat(np.arange(len(sets), dtype=np.int64), self.sizes)
        order = np.argsort(flat, kind="stable")
        self.sorted, self.owners = flat[order], owners[order]

    def counts(self, query: np.ndarray) -> np.ndarray:
        left = np.searchsorted(self.sorted, query, side="left")
        runs = np.searchsorted(self.sorted, query, side="right") - left
        hit = runs > 0
        left, runs = left[hit], runs[hit]
        if runs.size == 0:
            return np.zeros(self.sizes.size, dtype=np.int64)
        starts = np.repeat(left - np.concatenate([[0], np.cumsum(runs)[:-1]]), runs)
        positions = starts + np.arange(int(runs.sum()))
        return np.bincount(self.owners[positions], minlength=self.sizes.size)

    def jaccard(self, query: np.ndarray) -> np.ndarray:
        shared = self.counts(query).astype(np.float64)
        union = query.size + self.sizes - shared
        return np.divide(shared, union, out=np.zeros_like(shared), where=union > 0)


# --- the reference index ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reference:
    name: str  # "transformers/models/llama/modeling_llama.py"
    family: str  # "llama"
    path: Path
    derived_from: tuple[tuple[str, str], ...]  # (family, evidence) its code says it comes from


_COPIED_FROM = re.compile(rb"#\s*Copied from transformers\.models\.(\w+)\.")
_MODULAR_IMPORT = re.compile(rb"^from \.\.(\w+)\.modeling_\w+ import (\([^)]*\)|[^\n]*)", re.MULTILINE)
_GENERATED_FROM = re.compile(rb"automatically generated from (src/transformers/models/\w+/modular_\w+\.py)")


def _derived_from(path: Path, family: str, source: bytes) -> tuple[tuple[str, str], ...]:
    """Families this reference file says its code comes from, each with the evidence, most first:
    for a file generated from a ``modular_*.py``, the models that modular file imports from; then
    the families of its "Copied from transformers.models.X" comments."""
    imported: Counter[str] = Counter()
    generated = _GENERATED_FROM.search(source)
    modular = path.with_name(path.name.replace("modeling_", "modular_", 1))
    if generated:
        with contextlib.suppress(OSError):
            if modular.stat().st_size <= MAX_SOURCE_BYTES:
                for name, names in _MODULAR_IMPORT.findall(modular.read_bytes()):
                    imported[name.decode()] += len(
                        [p for p in names.strip(b"() \n").split(b",") if p.strip()]
                    )
    copied = Counter(match.decode() for match in _COPIED_FROM.findall(source))
    found: list[tuple[str, str]] = []
    for name, count in imported.most_common():
        if name != family:
            also = f"; {copied.pop(name)} 'Copied from' comments" if name in copied else ""
            found.append((name, f"{modular.name} imports {count} names from it{also}"))
    for name, count in copied.most_common():
        if name != family:
            found.append(
                (name, f"{count} 'Copied from transformers.models.{name}' comment{'s' * (count > 1)}")
            )
    return tuple(found)


_INDEXES: dict[tuple[str, str], ReferenceIndex] = {}


def _transformers_root() -> Path:
    try:
        spec = importlib.util.find_spec("transformers")  # finds the package without importing it
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingDependencyError(
            "code provenance compares with the installed transformers: pip install 'unshell[transformers]'"
        )
    return Path(locations[0])


def _transformers_version() -> str:
    try:
        from importlib.metadata import version

        return version("transformers")
    except Exception:  # metadata missing or unreadable: the file signature still keys the cache
        return "unknown"


def _default_cache_dir() -> Path:
    from ..constants import cache_dir

    return cache_dir()


class ReferenceIndex:
    """Normalized fingerprints of reference implementations, queried by similarity.

    ``ReferenceIndex()`` indexes the installed transformers' ``models/*/modeling_*.py`` (located
    without importing transformers). It is built on first use, kept per process (a second
    ``ReferenceIndex()`` for the same installation and cache shares it) and cached on disk under
    ``cache_dir`` (default ``$UNSHELL_CACHE_DIR``, else ``$XDG_CACHE_HOME/unshell`` or
    ``~/.cache/unshell``; ``False`` disables it), keyed by the transformers version, the Python
    version and every indexed file's name, size and mtime. ``ReferenceIndex(root)`` indexes another
    transformers tree (``root/models/*/modeling_*.py``); ``ReferenceIndex.from_files({...})`` any
    set of files.

    Raises:
        MissingDependencyError: transformers is not installed (on construction, when no ``root``
        is given).
    """

    def __init__(self, root: str | Path | None = None, *, cache_dir: str | Path | bool | None = None) -> None:
        self._root = Path(root) if root is not None else _transformers_root()
        self._cache_dir: Path | None
        if cache_dir is False:
            self._cache_dir = None
        elif cache_dir is None or cache_dir is True:
            self._cache_dir = _default_cache_dir()
        else:
            self._cache_dir = Path(cache_dir)
        self._references: tuple[_Reference, ...] | None = None
        self._positions: dict[str, int] = {}
        self._table = _Shared([])
        self.build_seconds: float | None = None
        self.loaded_from_cache = False
        self.notes: list[str] = []

    @classmethod
    def from_files(cls, files: Mapping[str, str | Path]) -> ReferenceIndex:
        """An index of the given files, ``{reference name: path}``; the family is the parent folder."""
        index = cls(Path("."), cache_dir=False)
        refs = [_Reference(name, Path(path).parent.name, Path(path), ()) for name, path in files.items()]
        index._build(refs)
        return index

    # -- building ----------------------------------------------------------------------------------

    def _discover(self) -> tuple[list[_Reference], str]:
        parent = self._root.parent
        refs = []
        signature = hashlib.sha256()
        for path in sorted((self._root / "models").glob("*/modeling_*.py")):
            try:
                info = path.stat()
            except OSError:
                continue
            name = path.relative_to(parent).as_posix()
            signature.update(f"{name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
            refs.append(_Reference(name, path.parent.name, path, ()))
        version = re.sub(r"[^0-9A-Za-z.+_-]", "_", _transformers_version())[:40]
        tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
        return (
            refs,
            f"code-index-v{INDEX_FORMAT}-{tag}-transformers-{version}-{signature.hexdigest()[:16]}.npz",
        )

    def _ensure(self) -> None:
        if self._references is not None:
            return
        process_key = (str(self._root.resolve()), str(self._cache_dir))
        shared = _INDEXES.get(process_key)
        if shared is not None and shared._references is not None:
            self._references, self._positions, self._table = (
                shared._references,
                shared._positions,
                shared._table,
            )
            self.build_seconds, self.loaded_from_cache = shared.build_seconds, shared.loaded_from_cache
            self.notes = shared.notes
            return
        started = time.perf_counter()
        refs, file_name = self._discover()
        if not refs:
            raise MissingDependencyError(
                f"no models/*/modeling_*.py under {sanitize(str(self._root))}: pip install 'unshell[transformers]'"
            )
        cache_file = self._cache_dir / file_name if self._cache_dir is not None else None
        if cache_file is not None and self._load(cache_file, refs):
            self.loaded_from_cache = True
        else:
            self._build(refs, derive=True)
            if cache_file is not None:
                self._save(cache_file)
        self.build_seconds = time.perf_counter() - started
        _INDEXES[process_key] = self

    def _build(self, refs: list[_Reference], *, derive: bool = False) -> None:
        kept: list[_Reference] = []
        arrays: list[np.ndarray] = []
        with _gc_paused():
            for ref in refs:
                try:
                    source = _read_source(ref.path, ref.name)
                    tree = _parse(source, ref.name)
                except InputError as exc:
                    self.notes.append(f"reference skipped: {exc}")
                    continue
                arrays.append(_fingerprint_tree(tree, per_unit=False).hashes)
                del tree
                if derive:
                    ref = _Reference(
                        ref.name, ref.family, ref.path, _derived_from(ref.path, ref.family, source)
                    )
                kept.append(ref)
        self._set(kept, arrays)

    def _set(self, refs: list[_Reference], arrays: list[np.ndarray]) -> None:
        self._references = tuple(refs)
        self._positions = {ref.name: position for position, ref in enumerate(refs)}
        self._table = _Shared(arrays)

    def _save(self, cache_file: Path) -> None:
        assert self._references is not None
        table = self._table
        order = np.lexsort((table.sorted, table.owners))  # back to one run per reference
        meta = [
            {
                "name": ref.name,
                "family": ref.family,
                "derived_from": [list(pair) for pair in ref.derived_from],
            }
            for ref in self._references
        ]
        temporary = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as handle:
                np.savez(
                    handle, hashes=table.sorted[order], sizes=table.sizes, meta=np.asarray(json.dumps(meta))
                )
            os.replace(temporary, cache_file)
        except OSError as exc:  # a read-only home: the index still works, it is rebuilt next time
            self.notes.append(f"reference index not cached ({sanitize(exc.strerror or type(exc).__name__)})")
            with contextlib.suppress(OSError):
                temporary.unlink()

    def _load(self, cache_file: Path, refs: list[_Reference]) -> bool:
        """Read a cached index; False (and the index is rebuilt) for anything unexpected in it."""
        try:
            with np.load(cache_file, allow_pickle=False) as data:
                hashes, sizes = data["hashes"], data["sizes"]
                meta = json.loads(str(data["meta"]))
            paths = {ref.name: ref.path for ref in refs}
            loaded = [
                _Reference(
                    str(item["name"]),
                    str(item["family"]),
                    paths[item["name"]],
                    tuple((str(family), str(how)) for family, how in item["derived_from"]),
                )
                for item in meta
            ]
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
            return False
        if (
            hashes.dtype != np.uint64
            or sizes.ndim != 1
            or len(loaded) != sizes.size
            or [ref.name for ref in loaded] != [ref.name for ref in refs]
            or int(sizes.sum()) != hashes.size
        ):
            return False
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        self._set(loaded, [hashes[bounds[i] : bounds[i + 1]] for i in range(sizes.size)])
        return True

    # -- queries -------------------------------------------------------------------------------------

    @property
    def references(self) -> tuple[str, ...]:
        """Names of the indexed reference files, say ``transformers/models/llama/modeling_llama.py``."""
        self._ensure()
        assert self._references is not None
        return tuple(ref.name for ref in self._references)

    def __len__(self) -> int:
        return len(self.references)

    def _reference(self, name: str) -> _Reference:
        self._ensure()
        assert self._references is not None
        return self._references[self._positions[name]]

    def path(self, name: str) -> Path:
        """Where the reference file ``name`` lies."""
        return self._reference(name).path

    def family(self, name: str) -> str:
        """The model family of a reference (its folder name under ``models/``)."""
        return self._reference(name).family

    def derived_from(self, name: str) -> tuple[str, ...]:
        """The families a reference's own code says it comes from ("Copied from" comments, or the
        models its ``modular_*.py`` builds on), most cited first."""
        return tuple(family for family, _ in self._reference(name).derived_from)

    def derived_from_evidence(self, name: str) -> tuple[tuple[str, str], ...]:
        """``derived_from`` with the evidence for each family."""
        return self._reference(name).derived_from

    def hashes(self, name: str) -> np.ndarray:
        """The sorted shingle hashes of one reference."""
        position = self._positions[self._reference(name).name]
        return np.sort(self._table.sorted[self._table.owners == position])

    def scores(self, fingerprint: CodeFingerprint | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(similarity, coverage)`` against every reference, in the order of ``references``:
        the share of the fingerprint's shingles found in each, and of each one's found in it."""
        self._ensure()
        query = fingerprint.hashes if isinstance(fingerprint, CodeFingerprint) else fingerprint
        shared = self._table.counts(query).astype(np.float64)
        return shared / max(query.size, 1), shared / np.maximum(self._table.sizes, 1)

    def rank(
        self, fingerprint: CodeFingerprint, *, top: int = TOP_CANDIDATES
    ) -> list[tuple[str, float, float]]:
        """The ``top`` closest references as ``(name, similarity, coverage)``, best first.

        Ranked by the harmonic mean of similarity and coverage (see the module docstring), then by
        similarity; references that share nothing with the fingerprint are left out.
        """
        similarity, coverage = self.scores(fingerprint)
        total = similarity + coverage
        score = np.divide(2 * similarity * coverage, total, out=np.zeros_like(total), where=total > 0)
        order = [int(i) for i in np.lexsort((-similarity, -score))[:top] if similarity[i] > 0]
        assert self._references is not None
        return [(self._references[i].name, float(similarity[i]), float(coverage[i])) for i in order]

    def similarity(self, fingerprint: CodeFingerprint, reference: str) -> float:
        """Share of ``fingerprint``'s shingles found in the named reference."""
        position = self._positions[self._reference(reference).name]
        return float(self.scores(fingerprint)[0][position])

    def other_sources(
        self, fingerprint: CodeFingerprint, first: str, *, limit: int = 3
    ) -> list[tuple[str, float]]:
        """References that explain parts of the file that ``first`` does not, as ``(name, share)``.

        Greedy: the shingles ``first`` explains are set aside, the rest is ranked like a file of its
        own (so a large file that merely contains the same code does not win), and the best is kept
        when it explains at least ``MIN_OTHER_SOURCE`` of the whole file; repeated ``limit`` times.
        """
        remaining = np.setdiff1d(fingerprint.hashes, self.hashes(first), assume_unique=True)
        found: list[tuple[str, float]] = []
        total = max(len(fingerprint), 1)
        assert self._references is not None
        while len(found) < limit and remaining.size >= MIN_OTHER_SOURCE * total:
            shared = self._table.counts(remaining).astype(np.float64)
            score = 2 * shared / (remaining.size + self._table.sizes)  # Dice, as in ``rank``
            best = int(np.argmax(score))
            share = float(shared[best]) / total
            if share < MIN_OTHER_SOURCE:
                break
            name = self._references[best].name
            found.append((name, share))
            remaining = np.setdiff1d(remaining, self.hashes(name), assume_unique=True)
        return found


def _default_index() -> ReferenceIndex:
    return ReferenceIndex()


# --- finding the model's code ----------------------------------------------------------------------


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a symlink loop
        return False
    return True


def _auto_map_files(config: Mapping[str, Any], notes: list[tuple[str, str]]) -> list[str]:
    auto_map = config.get("auto_map")
    if not isinstance(auto_map, Mapping):
        return []
    names: list[str] = []
    for key, value in auto_map.items():
        if not str(key).startswith("AutoModel"):
            continue  # AutoConfig / AutoTokenizer code is not modeling code
        for reference in value if isinstance(value, list) else [value]:
            if not isinstance(reference, str) or "." not in reference:
                continue
            where = f"auto_map {sanitize(str(key))}"
            if "--" in reference:
                notes.append(
                    ("config.json", f"{where}: code in another repository ({sanitize(reference)}), not read")
                )
                continue
            module = reference.rsplit(".", 1)[0]
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", module):
                notes.append(("config.json", f"{where}: odd module name {sanitize(module)!r}, ignored"))
                continue
            names.append(module.replace(".", "/") + ".py")
    return names


def _locate(directory: Path, config: Mapping[str, Any] | None) -> tuple[list[Path], list[tuple[str, str]]]:
    """``find_model_code``, with each note tied to the file (or ``config.json``) it is about."""
    notes: list[tuple[str, str]] = []
    named = _auto_map_files(config or {}, notes)
    candidates: dict[str, tuple[Path, bool]] = {name: (directory / name, True) for name in named}
    try:
        listed = sorted(directory.glob("modeling_*.py"))
    except OSError:
        listed = []
    for path in listed:
        candidates.setdefault(path.name, (path, False))
    found: list[Path] = []
    for position, (name, (path, from_auto_map)) in enumerate(candidates.items()):
        label = sanitize(name)
        if position >= MAX_CODE_FILES:
            more = len(candidates) - MAX_CODE_FILES
            notes.append(
                (label, f"more than {MAX_CODE_FILES} code files: {label} and {more - 1} more not read")
            )
            break
        if not _inside(path, directory):
            notes.append((label, f"{label}: a symlink to outside the model directory, not read"))
        elif path.is_file():
            found.append(path)
        elif from_auto_map and not path.exists():
            notes.append((label, f"{label}: named by auto_map but not in the directory"))
        else:
            notes.append((label, f"{label}: not a regular file, not read"))
    return found, notes


def find_model_code(
    directory: str | Path, config: Mapping[str, Any] | None = None, *, notes: list[str] | None = None
) -> list[Path]:
    """The model's own modeling code in ``directory``: the files that ``config["auto_map"]`` names
    for ``AutoModel*`` classes (``"modeling_yi.YiForCausalLM"`` -> ``modeling_yi.py``), then its
    other ``modeling_*.py`` files, at most ``MAX_CODE_FILES``.

    Only regular files that stay inside ``directory`` once symlinks are resolved are returned;
    anything else (a symlink pointing outside, a missing file, code in another repository) is
    left out with a line appended to ``notes``. Nothing is imported.
    """
    found, located_notes = _locate(Path(directory), config)
    if notes is not None:
        notes.extend(note for _, note in located_notes)
    return found


def _read_config(directory: Path, notes: list[str]) -> Mapping[str, Any] | None:
    path = directory / "config.json"
    if not path.is_file():
        return None
    if not _inside(path, directory):
        notes.append("config.json: a symlink to outside the model directory, not read")
        return None
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            notes.append(f"config.json: larger than {MAX_CONFIG_BYTES:,} bytes, not read")
            return None
        parsed = json.loads(raw)
    except (OSError, ValueError, RecursionError) as exc:
        notes.append(f"config.json: unreadable ({sanitize(type(exc).__name__)})")
        return None
    return parsed if isinstance(parsed, Mapping) else None


# --- removed references ----------------------------------------------------------------------------


@dataclass
class _Raw:
    """The raw (un-normalized) text of one file: identifiers, strings, comments, defs."""

    identifiers: list[str]
    strings: list[str]
    comments: list[str]
    header: list[str]  # the leading comment block


def _raw(tree: ast.Module, source: bytes) -> _Raw:
    identifiers: list[str] = []
    strings: list[str] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            identifiers.append(node.id)
        elif isinstance(node, ast.Attribute):
            identifiers.append(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            identifiers.append(node.name)
        elif isinstance(node, ast.arg | ast.keyword):
            if node.arg:
                identifiers.append(node.arg)
        elif isinstance(node, ast.alias):
            identifiers.extend(part for part in (node.name, node.asname) if part)
        elif isinstance(node, ast.ImportFrom) and node.module:
            identifiers.append(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.append(node.value)
        stack.extend(ast.iter_child_nodes(node))
    comments: list[str] = []
    header: list[str] = []
    in_header = True
    with contextlib.suppress(tokenize.TokenError, SyntaxError, UnicodeDecodeError):
        for token in tokenize.tokenize(io.BytesIO(source).readline):
            if token.type == tokenize.COMMENT:
                comments.append(token.string)
                if in_header:
                    header.append(token.string.lstrip("#").strip())
            elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.ENCODING):
                in_header = False
    return _Raw(identifiers, strings, comments, header)


def _family_pattern(family: str) -> re.Pattern[str]:
    """The family name in any case as a word of an identifier or text: ``Llama`` in
    ``LlamaAttention``, ``llama`` in ``meta-llama/``, ``GPTNeoX`` for ``gpt_neox``; not ``opt`` in
    ``Optional`` nor ``bert`` in ``roberta``."""
    parts = [re.escape(part) for part in re.split(r"[_\-]+", family) if part]
    return re.compile(r"(?:^|(?<=[^A-Za-z])|(?<=[a-z])(?=[A-Z]))(?i:" + r"[_\-]?".join(parts) + r")(?![a-z])")


def _mentions(raw: _Raw, pattern: re.Pattern[str]) -> tuple[int, int, int]:
    return (
        sum(len(pattern.findall(text)) for text in raw.identifiers),
        sum(len(pattern.findall(text)) for text in raw.strings),
        sum(len(pattern.findall(text)) for text in raw.comments),
    )


def _def_groups(fingerprint: CodeFingerprint) -> dict[tuple[str, str], np.ndarray]:
    """Shingles of each class (header and methods together) and each top-level function."""
    groups: dict[tuple[str, str], list[np.ndarray]] = {}
    for unit, hashes in zip(fingerprint.units, fingerprint.unit_hashes, strict=True):
        if unit.kind in ("class", "method"):
            groups.setdefault(("class", unit.owner), []).append(hashes)
        elif unit.kind == "function":
            groups.setdefault(("function", unit.name), []).append(hashes)
    return {key: np.unique(np.concatenate(parts)) for key, parts in groups.items()}


def _substitute(their_names: Sequence[str], my_names: Sequence[str], pattern: re.Pattern[str]) -> str | None:
    """The word that replaced the family name (``Yi`` for ``LlamaMLP`` -> ``YiMLP``), when at
    least two definitions agree on it and no other word does as often."""
    votes: Counter[str] = Counter()
    mine = set(my_names)
    for name in their_names:
        match = pattern.search(name)
        if match is None:
            continue
        prefix, suffix = name[: match.start()], name[match.end() :]
        for other in mine:
            if other != name and other.startswith(prefix) and other.endswith(suffix):
                middle = other[len(prefix) : len(other) - len(suffix)]
                if re.fullmatch(r"[A-Za-z0-9_]+", middle) and not pattern.search(middle):
                    votes[middle] += 1
    ranked = votes.most_common(2)
    if not ranked or ranked[0][1] < 2 or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
        return None
    return ranked[0][0]


def _renamed_definitions(
    mine: CodeFingerprint, theirs: CodeFingerprint, pattern: re.Pattern[str], notes: list[str]
) -> tuple[list[str], str | None]:
    """``"class LlamaAttention -> YiAttention (...)"`` for each of the reference's definitions whose
    name holds the family name and whose body is found, under another name, in the file.

    A definition is paired with the file's definition of the same kind whose body is most alike
    (Jaccard of their shingles, at least ``MIN_RENAME_JACCARD``). When several are equally alike
    (tiny bodies such as ``pass``), only the name pattern can decide, and without it nothing is said.
    """
    my_groups = _def_groups(mine)
    their_groups = _def_groups(theirs)
    if len(my_groups) > MAX_ALIGNED_DEFINITIONS:
        notes.append(f"more than {MAX_ALIGNED_DEFINITIONS} definitions: renamed definitions not aligned")
        return [], None
    wanted = [key for key in their_groups if pattern.search(key[1]) and key not in my_groups]
    substitute = _substitute(
        sorted({name for _, name in wanted}), sorted({name for _, name in my_groups}), pattern
    )
    proposals: list[tuple[float, tuple[str, str], tuple[str, str], bool]] = []
    for kind in ("class", "function"):
        keys = [key for key in my_groups if key[0] == kind]
        if not keys:
            continue
        shared = _Shared([my_groups[key] for key in keys])
        position = {key: index for index, key in enumerate(keys)}
        for key in wanted:
            if key[0] != kind:
                continue
            scores = shared.jaccard(their_groups[key])
            best = float(scores.max())
            if best < MIN_RENAME_JACCARD:
                continue
            expected = (kind, pattern.sub(substitute, key[1], count=1)) if substitute else None
            if expected in position and scores[position[expected]] >= max(MIN_RENAME_JACCARD, best - 0.1):
                proposals.append((float(scores[position[expected]]), key, expected, True))
                continue
            tied = np.flatnonzero(scores >= best - 1e-12)
            if tied.size == 1:
                proposals.append((best, key, keys[int(tied[0])], False))
    proposals.sort(key=lambda item: (-item[0], not item[3], item[1]))
    used: set[tuple[str, str]] = set()
    found: list[str] = []
    for score, (kind, name), other, by_name in proposals:
        if other in used:
            continue
        used.add(other)
        how = f"body {score:.0%} alike" + (", name pattern" if by_name else "")
        found.append(f"{kind} {name} -> {other[1]} ({how})")
    return found, substitute


def _normal_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _removed_references(
    mine: CodeFingerprint,
    my_raw: _Raw,
    theirs: CodeFingerprint,
    their_raw: _Raw,
    family: str,
    reference: str,
) -> tuple[list[str], list[str]]:
    removed: list[str] = []
    notes: list[str] = []
    pattern = _family_pattern(family)
    renames, substitute = _renamed_definitions(mine, theirs, pattern, notes)
    removed += renames
    if substitute is not None and any(line.endswith(", name pattern)") for line in renames):
        notes.append(
            f"definitions named after {family!r} in the reference are named with {substitute!r} here"
        )

    my_text = {_normal_line(line) for line in [*my_raw.header, *(c.lstrip("#") for c in my_raw.comments)]}
    for line in their_raw.header:
        if "copyright" in line.casefold() and _normal_line(line) not in my_text:
            removed.append(f"license header line {sanitize(line, 160)!r} of the reference is absent")
    own = [line for line in my_raw.header if "copyright" in line.casefold()]
    if own:
        notes.append("the file's own header: " + "; ".join(repr(sanitize(line, 160)) for line in own[:3]))

    generated = [c for c in their_raw.comments if "automatically generated from" in c]
    if generated and not any("automatically generated from" in c for c in my_raw.comments):
        match = _GENERATED_FROM.search(generated[0].encode())
        what = match.group(1).decode() if match else "a modular file"
        removed.append(
            f"comment 'This file was automatically generated from {what}' of the reference is absent"
        )

    def copied(raw: _Raw) -> Counter[str]:
        return Counter(
            match.decode()
            for c in raw.comments
            for match in _COPIED_FROM.findall(c.encode("utf-8", "replace"))
        )

    theirs_copied, mine_copied = copied(their_raw), copied(my_raw)
    for source_family, count in sorted(theirs_copied.items()):
        if mine_copied.get(source_family, 0) < count:
            removed.append(
                f"comments 'Copied from transformers.models.{source_family}...': "
                f"the reference has {count}, the file has {mine_copied.get(source_family, 0)}"
            )
    if mine_copied:
        notes.append(
            "the file credits: "
            + ", ".join(
                f"'Copied from transformers.models.{name}' x{n}" for name, n in sorted(mine_copied.items())
            )
        )

    their_counts = _mentions(their_raw, pattern)
    my_counts = _mentions(my_raw, pattern)
    line = (
        f"{family!r} (any case) in identifiers/strings/comments: reference {reference} has "
        f"{their_counts[0]}/{their_counts[1]}/{their_counts[2]}, the file has "
        f"{my_counts[0]}/{my_counts[1]}/{my_counts[2]}"
    )
    if sum(their_counts) and sum(my_counts) * 2 < sum(their_counts):
        removed.append(line)
    elif sum(their_counts):
        notes.append(line)
    return removed, notes


# --- the public entry point --------------------------------------------------------------------------


def _match_file(path: Path, label: str, index: ReferenceIndex) -> CodeMatch:
    source = _read_source(path, label)
    tree = _parse(source, label)
    with _gc_paused():
        mine = _fingerprint_tree(tree, per_unit=True)
    if len(mine) == 0:
        return CodeMatch(label, None, None, 0.0, notes=("no code to compare (empty after normalization)",))
    notes: list[str] = []
    ranked = index.rank(mine)
    candidates = tuple((name, similarity) for name, similarity, _ in ranked)
    runner_up = candidates[1] if len(candidates) > 1 else None
    best_name, best_similarity, best_coverage = ranked[0] if ranked else ("", 0.0, 0.0)
    if best_similarity < MIN_REPORTED_SIMILARITY:
        best = f" (closest: {best_name}, {best_similarity:.1%})" if ranked else ""
        notes.append(f"no reference explains {MIN_REPORTED_SIMILARITY:.0%} of the file{best}")
        return CodeMatch(
            label, None, None, best_similarity, best_coverage, runner_up, candidates, notes=tuple(notes)
        )
    family = index.family(best_name)
    derived = index.derived_from(best_name)
    for source_family, how in index.derived_from_evidence(best_name):
        notes.append(f"the reference's own code credits {source_family}: {how}")
    if runner_up is not None and abs(runner_up[1] - best_similarity) < 0.02:
        notes.append(f"{runner_up[0]} is about as close ({runner_up[1]:.1%})")
    also_from = tuple(index.other_sources(mine, best_name))
    removed: list[str] = []
    try:
        reference_source = _read_source(index.path(best_name), best_name)
        reference_tree = _parse(reference_source, best_name)
        with _gc_paused():
            theirs = _fingerprint_tree(reference_tree, per_unit=True)
        removed, more = _removed_references(
            mine, _raw(tree, source), theirs, _raw(reference_tree, reference_source), family, best_name
        )
        notes += more
    except InputError as exc:  # the installed reference changed since the index was built
        notes.append(f"removed references not checked: {exc}")
    for other, _ in also_from:  # the other sources' renamed definitions, said with their source
        try:
            other_tree = _parse(_read_source(index.path(other), other), other)
        except InputError as exc:
            notes.append(f"removed references not checked: {exc}")
            continue
        with _gc_paused():
            other_fingerprint = _fingerprint_tree(other_tree, per_unit=True)
        renames, _ = _renamed_definitions(
            mine, other_fingerprint, _family_pattern(index.family(other)), notes
        )
        removed += [f"{line[:-1]}; {other})" for line in renames]
    return CodeMatch(
        file=label,
        reference=best_name,
        reference_family=family,
        similarity=best_similarity,
        coverage=best_coverage,
        runner_up=runner_up,
        candidates=candidates,
        also_from=also_from,
        reference_derived_from=derived,
        removed_references=tuple(removed),
        notes=tuple(notes),
    )


def code_provenance(path: str | Path, *, references: ReferenceIndex | None = None) -> list[CodeMatch]:
    """Compare a model's own modeling code with the reference implementations.

    ``path`` is a model directory (its ``modeling_*.py`` files and those named by ``auto_map`` in
    ``config.json``; an empty list when it ships no code) or one ``.py`` file. The code is parsed,
    never imported or run. For a directory, a file that cannot be read or parsed becomes a
    ``CodeMatch`` without a reference and a note saying why; a single file raises instead.

    Raises:
        PathNotFoundError: ``path`` does not exist.
        InputError: a single file that is not a ``.py`` file or not valid Python.
        ResourceLimitError: one too large or nested too deeply.
        MissingDependencyError: transformers is not installed (and no ``references`` were given).
    """
    target = Path(path)
    if not target.exists():
        raise PathNotFoundError(f"{sanitize(str(path))}: no such file or directory")
    index = references if references is not None else _default_index()
    if target.is_file():
        if target.suffix != ".py":
            raise InputError(
                f"{sanitize(target.name)}: not a Python file (give a .py file or a model directory)"
            )
        return [_match_file(target, sanitize(target.name), index)]
    config_notes: list[str] = []
    config = _read_config(target, config_notes)
    matches = [CodeMatch("config.json", None, None, 0.0, notes=(note,)) for note in config_notes]
    files, notes = _locate(target, config)
    matches += [CodeMatch(label, None, None, 0.0, notes=(note,)) for label, note in notes]
    for file in files:
        label = sanitize(file.relative_to(target).as_posix())
        try:
            matches.append(_match_file(file, label, index))
        except InputError as exc:  # ResourceLimitError and PathNotFoundError included
            matches.append(CodeMatch(label, None, None, 0.0, notes=(str(exc),)))
    return matches
