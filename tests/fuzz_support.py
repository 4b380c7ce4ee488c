"""Shared pieces of the property-based fuzz tests (``tests/test_fuzz_*.py``).

The property every fuzz test checks: for any input, unshell's public call either succeeds or
raises one of unshell's own errors (`unshell.errors.UnshellError`, which the CLI turns into one
line and its exit code). Any other exception is what the CLI reports as exit 70, an internal
error, and fails the test with the input that caused it (shrunk by hypothesis).

Inputs are structured: valid files built by the test helpers (``gguf_writer``, ``torchzip``,
``hostile_gguf_onnx``, ``llama2c_export``) or copied from ``tests/data/fixtures``, then mutated
where it matters (header fields flipped, numbers made huge, NaN or infinite, names duplicated,
nesting deepened, bytes cut off), so the properties reach the code behind the first check.

Profiles (``UNSHELL_FUZZ_PROFILE``):

- ``ci`` (default): derandomized (the same examples on every run), no example database, each test
  runs the number of examples it names with `fuzz_settings`. All fuzz tests together stay within
  a few minutes on two cores.
- ``dev``: random, 50 times the examples, failures saved under ``~/.cache/unshell-fuzz/hypothesis`` and
  replayed first on the next run. For long runs: ``UNSHELL_FUZZ_PROFILE=dev pytest tests/test_fuzz_*``.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import io
import json
import os
import resource
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.errors import InvalidArgument

from unshell.errors import (
    CorruptCheckpointError,
    InconsistentHeaderError,
    ResourceLimitError,
    UnshellError,
)

PROFILE_ENV = "UNSHELL_FUZZ_PROFILE"
DEV_SCALE = 50
_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]


def register_profiles() -> None:
    """Register ``ci`` and ``dev`` and load the one ``UNSHELL_FUZZ_PROFILE`` names (``ci``)."""
    settings.register_profile(
        "ci",
        max_examples=100,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=_SUPPRESSED,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),  # no slow "explain" phase
    )
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "unshell-fuzz" / "hypothesis"
    settings.register_profile(
        "dev",
        max_examples=100 * DEV_SCALE,
        deadline=None,
        derandomize=False,
        database=DirectoryBasedExampleDatabase(str(cache)),
        print_blob=True,
        suppress_health_check=_SUPPRESSED,
    )
    settings.load_profile(os.environ.get(PROFILE_ENV, "ci"))


def fuzz_settings(ci_examples: int) -> settings:
    """``ci_examples`` examples under the ci profile, proportionally more under dev."""
    scale = max(1, settings.default.max_examples // 100)
    return settings(max_examples=ci_examples * scale)


# -- the property ---------------------------------------------------------------------------------


def unshell_errors_only(call: Callable[[], Any]) -> Any:
    """Run ``call``; return its result, or None when it raised an unshell error (checked to be
    printable as the CLI prints it). Any other exception propagates and fails the test.

    Each outcome is a hypothesis event (``--hypothesis-show-statistics`` shows how often each
    step succeeded and which errors it met, so a generator that never gets past the first
    check is visible)."""
    label = getattr(call, "__name__", "call")
    try:
        result = call()
    except UnshellError as error:
        message = str(error)  # the CLI prints this: it must not itself fail
        assert message.strip(), f"{type(error).__name__} without a message"
        _record(f"{label}: {type(error).__name__}")
        return None
    _record(f"{label}: ok")
    return result


OUTCOMES: collections.Counter[str] = collections.Counter()
"""How often each labelled step succeeded or met which error, since the current test started."""


def _record(outcome: str) -> None:
    OUTCOMES[outcome] += 1
    with contextlib.suppress(InvalidArgument):  # outside a hypothesis test (a regression test)
        event(outcome)


def reaches(*labels: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Fail a fuzz test whose inputs never got through the steps ``labels`` name (the function
    names passed to `unshell_errors_only`): a generator that only ever makes inputs the first
    check refuses would test almost nothing and still pass."""

    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(test)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            OUTCOMES.clear()
            test(*args, **kwargs)
            missing = [label for label in labels if not (OUTCOMES[label] or OUTCOMES[f"{label}: ok"])]
            assert not missing, f"no generated input got through {missing}; outcomes: {dict(OUTCOMES)}"

        return wrapper

    return decorate


ADDRESS_SPACE_HEADROOM = 512 << 20
"""Memory a fuzzed input of a few kilobytes may make unshell allocate (the bound's floor)."""
DECODED_BYTES_PER_INPUT_BYTE = 64
"""Legitimate decoding widens at most about 20 times (2-bit quantized blocks to float32)."""


@contextlib.contextmanager
def memory_bound(input_bytes: int) -> Iterator[None]:
    """Cap this process's address space near its current size for the block, so an input that
    makes unshell allocate far more than its own size fails fast (MemoryError names the call)
    instead of exhausting a shared machine. Restores the previous limit."""
    headroom = max(ADDRESS_SPACE_HEADROOM, DECODED_BYTES_PER_INPUT_BYTE * input_bytes)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as handle:
        current = int(handle.read().split()[0]) * resource.getpagesize()
    limit = current + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    except MemoryError:
        raise AssertionError(
            f"an input of {input_bytes} bytes made unshell allocate more than {headroom >> 20} MiB"
        ) from None
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


FORBIDDEN_EXIT_CODES = {19: "an I/O error", 21: "out of memory", 70: "an internal error"}
"""Exit codes a fuzzed input of a few kilobytes must never produce: it is no I/O failure, it
cannot need gigabytes, and anything else is a bug."""


def run_cli(*args: str) -> tuple[int, str]:
    """Run ``unshell ARGS`` in this process as its console script does, writing to a strict
    UTF-8 stdout like a terminal's; return (exit code, stdout). ``UNSHELL_DEBUG`` is set, so an
    internal error propagates with its traceback instead of becoming exit 70."""
    from unshell.cli.main import main

    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", errors="strict", write_through=True)
    stderr = io.TextIOWrapper(err, encoding="utf-8", errors="strict", write_through=True)
    previous = os.environ.get("UNSHELL_DEBUG")
    os.environ["UNSHELL_DEBUG"] = "1"
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        if previous is None:
            os.environ.pop("UNSHELL_DEBUG", None)
        else:
            os.environ["UNSHELL_DEBUG"] = previous
    errors = err.getvalue().decode()
    assert code not in FORBIDDEN_EXIT_CODES, (
        f"unshell {' '.join(args)}: exit {code} ({FORBIDDEN_EXIT_CODES[code]}): {errors.strip()[:500]}"
    )
    assert "Traceback" not in errors, errors
    command = " ".join(args[:2]) if args[0] == "library" else args[0]
    _record(f"unshell {command}: exit {code}")
    return code, out.getvalue().decode()


def exercise_checkpoint(path: Path, *, read_values: bool = True, fingerprint: bool = False) -> None:
    """What the CLI does with a checkpoint, each step held to the property.

    ``unshell inspect`` (as a table and as JSON), then, within `memory_bound`, every tensor's
    values (``compare`` and ``library add`` read them) and optionally the fingerprint (``library
    add``, ``search``) with a bytes round trip.
    """
    import unshell
    from unshell.formats import open_checkpoint

    size = _input_size(path)
    with memory_bound(size):
        code, _ = run_cli("inspect", "--tensors", str(path))
        run_cli("inspect", "--format", "json", str(path))
    if code == 0:
        _record("inspect: ok")
    if read_values:

        def read_all() -> None:
            with open_checkpoint(path) as checkpoint:
                for name in list(checkpoint.tensors):
                    checkpoint.read(name)

        with memory_bound(size):
            unshell_errors_only(read_all)
    if fingerprint:
        from unshell.lineage.fingerprint import Fingerprint

        def fingerprint_round_trip() -> None:
            fp = unshell.fingerprint(path)
            Fingerprint.from_bytes(fp.to_bytes())

        with memory_bound(size):
            unshell_errors_only(fingerprint_round_trip)


def exercise_model_folder(model: Path, output: Path) -> None:
    """`exercise_checkpoint` with the fingerprint, then ``audit`` and ``convert --no-verify`` (into
    ``output``, which must not exist): the commands that read a folder's config and card."""
    exercise_checkpoint(model, fingerprint=True)
    run_cli("audit", "--format", "json", str(model))
    code, _ = run_cli("convert", str(model), "--to", "llama", "--output", str(output), "--no-verify")
    if code == 0:
        _record("convert: ok")


# The tokenizer reader's errors that say what is wrong with a tokenizer file better than the
# checkpoint reader's "not a checkpoint" (exit 12) does.
TOKENIZER_ERRORS = (CorruptCheckpointError, InconsistentHeaderError, ResourceLimitError)


def exercise_tokenizer(path: Path, *, same_exit_code: bool = True) -> None:
    """``unshell inspect`` on the file and on its folder, the vocabulary read with its family
    match, and a comparison with itself and with a real tokenizer. When the tokenizer reader
    refuses the file as corrupt or over a limit, ``inspect`` says so with that exit code
    (issue 13, U2)."""
    from unshell.tokenizers.report import compare_tokenizers, inspect_tokenizer
    from unshell.tokenizers.vocab import read_vocabulary

    with memory_bound(sum(p.stat().st_size for p in path.parent.iterdir())):
        code, _ = run_cli("inspect", "--format", "json", str(path))
        run_cli("inspect", str(path.parent))

        def tokenizer_report() -> None:
            inspect_tokenizer(path).to_dict()
            compare_tokenizers(path, path).to_dict()
            compare_tokenizers(
                path, Path(__file__).resolve().parent / "data" / "fixtures" / "stories260K.tok512.bin"
            ).to_dict()

        unshell_errors_only(tokenizer_report)
    if not same_exit_code:
        return
    try:
        read_vocabulary(path)
    except TOKENIZER_ERRORS as error:
        assert code == error.exit_code, (
            f"unshell inspect exits {code}, but the tokenizer reader says {type(error).__name__} "
            f"(exit {error.exit_code}): {error}"
        )
    except UnshellError:
        pass


def exercise_library(library: Path) -> None:
    """Every command that reads a fingerprint library: list, show, search, export."""
    code, out = run_cli("library", "list", "--library", str(library), "--format", "json")
    run_cli("library", "list", "--library", str(library))
    if code == 0:
        for entry in json.loads(out).get("entries", [])[:3]:
            run_cli("library", "show", entry["name"], "--library", str(library))
            run_cli("library", "show", entry["name"], "--library", str(library), "--format", "json")
    run_cli("search", str(tiny_llama_template()), "--library", str(library), "--format", "json")
    with scratch_dir() as directory:
        run_cli("library", "export", str(directory / "again.jsonl"), "--library", str(library))


# -- unshell serve --------------------------------------------------------------------------------

_CLIENT: list[Any] = []
SERVED_ENTRIES = ("tiny", "card-0x", "stories260K.bin", "tok", "ünïcode dir", "empty")


def _served_root() -> Path:
    """A root with a model, a model whose card holds ``license: 0x`` and 6,000 hex digits (issue
    13, C1), a llama2.c export, a broken tokenizer, an oddly named and an empty folder."""
    root = Path(tempfile.mkdtemp(prefix="unshell-fuzz-web-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    shutil.copytree(tiny_llama_template(), root / "tiny")
    shutil.copytree(tiny_llama_template(), root / "card-0x")
    (root / "card-0x" / "README.md").write_text("---\nlicense: 0x" + "f" * 6000 + "\n---\n# card\n")
    shutil.copy(
        Path(__file__).resolve().parent / "data" / "fixtures" / "stories260K.bin", root / "stories260K.bin"
    )
    (root / "tok").mkdir()
    (root / "tok" / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {"a": -1}}}')
    (root / "ünïcode dir").mkdir()
    (root / "empty").mkdir()
    return root


def web_client() -> Any:
    """One app for every example (its job pool and threads are made once), serving `_served_root`
    with a library that holds the tiny model."""
    if not _CLIENT:
        from fastapi.testclient import TestClient

        from unshell.web import create_app

        root = _served_root()
        library = root.parent / f"{root.name}-library.sqlite"
        atexit.register(lambda: library.unlink(missing_ok=True))
        code, _ = run_cli(
            "library", "add", str(root / "tiny"), "--library", str(library), "--name", "org/tiny"
        )
        assert code == 0
        test_client = TestClient(
            create_app([root], library=library),
            base_url="http://127.0.0.1:8000",
            raise_server_exceptions=False,
        )
        test_client.__enter__()
        atexit.register(test_client.__exit__, None, None, None)
        _CLIENT.append(test_client)
    return _CLIENT[0]


def web_get(path: str, params: dict[str, str] | None = None) -> Any:
    """GET with ``params`` percent-encoded from their UTF-8 bytes (a lone surrogate becomes the
    invalid UTF-8 a hostile client may send)."""
    query = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in (params or {}).items()})
    return web_client().get(f"{path}?{query}" if query else path)


def check_response(response: Any) -> None:
    """Never a 500; an API error is a JSON object with a one-line ``error``."""
    assert response.status_code != 500, f"{response.request.url}: 500 {response.text[:300]}"
    if response.request.url.path.startswith("/api/") and response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and "\n" not in body["error"], body


def _input_size(path: Path) -> int:
    if path.is_dir():
        return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())
    return path.stat().st_size if path.exists() else 0


_TEMPLATE: list[Path] = []


def tiny_llama_template() -> Path:
    """A tiny random Llama folder (safetensors, config.json, card, tokenizer config), made once
    per process by `foreign_layouts.make_tiny_llama`; tests copy it before changing it."""
    if not _TEMPLATE:
        from foreign_layouts import make_tiny_llama

        root = Path(tempfile.mkdtemp(prefix="unshell-fuzz-template-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        folder = make_tiny_llama(
            root / "tiny-llama", hidden=16, layers=1, heads=2, kv_heads=1, intermediate=32, vocab=32
        )
        _TEMPLATE.append(folder)
    return _TEMPLATE[0]


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A fresh directory per example (hypothesis runs many examples in one test call)."""
    with tempfile.TemporaryDirectory(prefix="unshell-fuzz-") as name:
        yield Path(name)


# -- byte mutations -------------------------------------------------------------------------------

INTERESTING_U32 = (0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
INTERESTING_U64 = (*INTERESTING_U32, 1 << 32, 1 << 40, 1 << 62, (1 << 63) - 1, 1 << 63, (1 << 64) - 1)


@dataclass(frozen=True)
class Mutation:
    kind: str
    position: int
    value: bytes = b""
    length: int = 0

    def apply(self, data: bytearray) -> None:
        position = min(self.position, len(data))
        if self.kind == "overwrite":
            data[position : position + len(self.value)] = self.value
        elif self.kind == "insert":
            data[position:position] = self.value
        elif self.kind == "delete":
            del data[position : position + self.length]
        elif self.kind == "duplicate":
            data[position:position] = data[position : position + self.length]
        elif self.kind == "truncate":
            del data[position:]


def _mutation(start: int, hot: int) -> st.SearchStrategy[Mutation]:
    position = st.integers(min(start, hot - 1), max(hot - 1, 0))
    packed = st.one_of(
        st.sampled_from(INTERESTING_U32).map(lambda v: struct.pack("<I", v)),
        st.sampled_from(INTERESTING_U64).map(lambda v: struct.pack("<Q", v)),
        st.sampled_from((b"\x00", b"\xff", b"\x7f", b"\x80", b'"', b"{", b"[", b"\n", b"-")),
        st.binary(min_size=1, max_size=8),
    )
    overwrite = st.builds(Mutation, st.just("overwrite"), position, packed)
    return st.one_of(
        overwrite,  # most often: a changed field keeps every later offset valid
        overwrite,
        overwrite,
        st.builds(Mutation, st.just("insert"), position, packed),
        st.builds(Mutation, st.just("delete"), position, length=st.integers(1, 64)),
        st.builds(Mutation, st.just("duplicate"), position, length=st.integers(1, 256)),
        st.builds(Mutation, st.just("truncate"), position),
    )


def mutated(
    data: bytes, *, start: int = 0, hot: int | None = None, max_mutations: int = 4
) -> st.SearchStrategy[bytes]:
    """``data`` with one to ``max_mutations`` byte-level mutations, at positions from ``start`` up
    to ``hot`` (a header region; default the whole input)."""
    limit = len(data) if hot is None else min(hot, len(data))

    def apply(mutations: list[Mutation]) -> bytes:
        out = bytearray(data)
        for mutation in mutations:
            mutation.apply(out)
        return bytes(out)

    return st.lists(_mutation(start, limit), min_size=1, max_size=max_mutations).map(apply)


def _same_width_values(original: bytes) -> st.SearchStrategy[bytes]:
    width = len(original)
    mask = (1 << (8 * width)) - 1
    value = int.from_bytes(original, "little")
    nearby = [(value + 1) & mask, (value - 1) & mask, (value * 2) & mask, value // 2]
    specials = [struct.pack("<f", v) for v in (float("nan"), float("inf"), float("-inf"), 3e38, -0.0)]
    specials += [struct.pack("<d", v) for v in (float("nan"), float("inf"), 1e308)]
    return st.one_of(
        st.sampled_from(nearby).map(lambda v: v.to_bytes(width, "little")),
        st.sampled_from(INTERESTING_U64).map(lambda v: (v & mask).to_bytes(width, "little")),
        st.sampled_from([b for b in specials if len(b) == width] or [b"\xff" * width]),
        st.binary(min_size=width, max_size=width),
    )


def field_mutated(
    data: bytes, fields: list[tuple[int, int]], *, max_mutations: int = 3
) -> st.SearchStrategy[bytes]:
    """``data`` with one to ``max_mutations`` of its ``fields`` ((offset, width): counts, lengths,
    types, dimensions, offsets, scalar values) overwritten by a value of the same width: one more
    or less, double or half, zero, all ones, a power of two, NaN, infinity... Everything else stays in place, so the
    parser gets past the changed field and meets its consequences."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, max_mutations))):
            offset, width = draw(st.sampled_from(fields))
            out[offset : offset + width] = draw(_same_width_values(data[offset : offset + width]))
        return bytes(out)

    return build()


def protobuf_fields(
    data: bytes, start: int = 0, end: int | None = None, depth: int = 0
) -> list[tuple[int, int]]:
    """(offset, width) of every tag, varint value and length prefix in a protobuf message, nested
    messages included (a length-delimited payload that parses as a message is walked too)."""
    end = len(data) if end is None else end
    fields: list[tuple[int, int]] = []
    position = start
    while position < end:
        tag, after_tag = _varint_at(data, position)
        if tag is None:
            return fields
        fields.append((position, after_tag - position))
        wire_type = tag & 7
        if wire_type == 0:
            _, after = _varint_at(data, after_tag)
            fields.append((after_tag, after - after_tag))
            position = after
        elif wire_type == 2:
            length, payload = _varint_at(data, after_tag)
            if length is None or payload + length > end:
                return fields
            fields.append((after_tag, payload - after_tag))
            if depth < 6:
                fields += protobuf_fields(data, payload, payload + length, depth + 1)
            position = payload + length
        elif wire_type in (1, 5):
            position = after_tag + (8 if wire_type == 1 else 4)
        else:
            return fields
    return fields


def _varint_at(data: bytes, position: int) -> tuple[int | None, int]:
    value, shift = 0, 0
    while position < len(data) and shift < 70:
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if byte < 0x80:
            return value, position
        shift += 7
    return None, position


# -- adversarial JSON -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RawJSON:
    """JSON text inserted verbatim (a 5,000-digit number, a lone surrogate escape...)."""

    text: str

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 40 else f"{self.text[:20]}...({len(self.text)} chars)"
        return f"RawJSON({text!r})"


@dataclass(frozen=True)
class Pairs:
    """A JSON object written from its key/value pairs, so that a key may appear twice."""

    items: tuple[tuple[str, Any], ...]


def dump_json(value: Any) -> str:
    """JSON text for `value`, which may hold `RawJSON`, `Pairs`, NaN and infinities."""
    if isinstance(value, RawJSON):
        return value.text
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{dump_json(v)}" for k, v in value.items) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dump_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dump_json(v) for v in value) + "]"
    return json.dumps(value)


HUGE_NUMBERS = (
    RawJSON("1" + "0" * 4000),  # an int Python parses; 10^4000 overflows a float
    RawJSON("9" * 5000),  # beyond Python's 4,300-digit int limit: json.loads refuses it
    RawJSON("1e400"),  # parses as inf
    RawJSON("-1e400"),
    RawJSON("1e-400"),
    RawJSON('"\\ud800"'),  # a lone surrogate: a str that cannot be encoded as UTF-8
)
SPECIAL_NUMBERS: tuple[Any, ...] = (
    0,
    -1,
    1,
    2**31,
    2**32 - 1,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63),
    10**30,
    0.5,
    -0.0,
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    True,
    False,
    None,
)


HOSTILE_TEXT = (
    "",
    " ",
    "\x00",
    "\n",
    "\x1b[2J",
    "\u202e",
    "\ud800",  # a lone surrogate: valid in JSON escapes and pickles, not encodable as UTF-8
    "a\udfffb",
    "x" * 301,  # one past the length at which names are cut when printed
    "..",
    "../../etc/passwd",
    "llama",
    "LlamaForCausalLM",
)


def usually(
    common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], every: int = 8
) -> st.SearchStrategy[Any]:
    """`mostly` for strategies: ``common``, or about once in ``every`` draws ``rare``. (`st.one_of`
    would not do: it merges equal branches, so repeating ``common`` does not weigh it.)"""
    return mostly((False,), (True,), every).flatmap(lambda pick_rare: rare if pick_rare else common)


def mostly(common: tuple[Any, ...], rare: tuple[Any, ...], every: int = 8) -> st.SearchStrategy[Any]:
    """One of ``common``, or about once in ``every`` draws one of ``rare``. (hypothesis draws the
    first and last items of a `sampled_from` far more often than the others, so the rare items
    go in the middle of a list padded with repeats of the common ones.)"""
    padded = list(common) * max(1, (every - 1) * len(rare) // len(common))
    middle = len(padded) // 2
    return st.sampled_from((*padded[:middle], *rare, *padded[middle:]))


hostile_text = st.sampled_from(HOSTILE_TEXT)


def names(*common: str) -> st.SearchStrategy[str]:
    """Names: mostly the ``common`` ones a real file holds, else arbitrary or hostile text."""
    return usually(st.sampled_from(common or ("a",)), st.one_of(st.text(max_size=20), hostile_text), every=4)


def adversarial_leaves() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(SPECIAL_NUMBERS),
        st.sampled_from(HUGE_NUMBERS),
        st.integers(),
        st.floats(),
        st.text(max_size=40),
        hostile_text,
    )


def adversarial_json(leaves: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Any]:
    """JSON values: adversarial leaves inside lists and objects (some with duplicate keys)."""
    base = leaves if leaves is not None else adversarial_leaves()
    return st.recursive(
        base,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=12), children, max_size=4),
            st.lists(st.tuples(st.sampled_from(("a", "b", "model_type")), children), max_size=4).map(
                lambda items: Pairs(tuple(items))
            ),
        ),
        max_leaves=12,
    )


def deep_nesting(depth: int) -> RawJSON:
    return RawJSON("[" * depth + "]" * depth)
