"""Coverage-guided fuzzing of unshell's readers and parsers, for runs of hours (atheris/libFuzzer).

One target per reader or parser; each feeds its input to unshell the way a user's file would
reach it and holds it to the fuzz tests' property (``tests/fuzz_support.py``): the CLI exits
with a result or an unshell error, never 70 (internal error), 19 or 21 (a few KB are no I/O
failure and need no gigabytes); reading tensors stays within a memory bound per input byte;
``unshell serve`` never answers 500. Anything else is a crash: libFuzzer stops and writes the
input under the work folder's ``crashes/``.

Setup (atheris ships manylinux wheels: no clang needed)::

    pip install -e '.[test,fuzz]'
    python tools/make_fuzz_corpus.py             # only after changing the seeds

Commands::

    python tools/fuzz.py list                    # the targets and their seed counts
    python tools/fuzz.py run gguf                # fuzz one target until stopped (Ctrl-C)
    python tools/fuzz.py run gguf -- -max_total_time=3600 -jobs=2 -workers=2
    python tools/fuzz.py replay                  # every seed of every target, once (no atheris)
    python tools/fuzz.py replay card path/to/crash-1234   # one target's seeds, or given files

Work folders are ``$UNSHELL_FUZZ_DIR/<target>`` (default ``~/.cache/unshell-fuzz``): ``corpus/``
(the seeds of ``tools/fuzz-corpus/<target>`` plus every input libFuzzer found new coverage
with) and ``crashes/``. Arguments after ``--`` go to libFuzzer; the defaults are
``-timeout=60`` (seconds per input: slowness per input byte is a finding too),
``-rss_limit_mb=4096`` and ``-max_len=65536``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import shutil
import sqlite3
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tools" / "fuzz-corpus"
DEFAULT_LIBFUZZER_ARGS = ["-timeout=60", "-rss_limit_mb=4096", "-max_len=65536"]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]


def _import_unshell() -> None:
    """Import every unshell module now: atheris instruments only what is imported inside
    ``instrument_imports``, and unshell imports many modules lazily, inside functions."""
    import unshell

    for module in pkgutil.walk_packages(unshell.__path__, "unshell."):
        if module.name == "unshell.__main__":  # runs the CLI when imported
            continue
        with contextlib.suppress(ImportError):  # an optional extra that is not installed (ray)
            importlib.import_module(module.name)


# -- targets: write the input where a user's file would be, run what reads it -------------------------


class Workspace:
    """A scratch folder for one process; each input is written into a fresh copy of it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="unshell-fuzz-harness-"))

    def fresh(self) -> Path:
        folder = self.root / "input"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        return folder


def _checkpoint(name: str) -> Callable[[bytes, Path], None]:
    def run(data: bytes, folder: Path) -> None:
        from fuzz_support import exercise_checkpoint

        (folder / name).write_bytes(data)
        exercise_checkpoint(folder / name, fingerprint=True)

    return run


def _model_folder(name: str, config_extra: dict[str, object] | None = None) -> Callable[[bytes, Path], None]:
    """The input replaces one file (``name``) of a tiny Llama folder; then every command."""

    def run(data: bytes, folder: Path) -> None:
        import json

        from fuzz_support import exercise_model_folder, tiny_llama_template

        model = folder / "model"
        shutil.copytree(tiny_llama_template(), model)
        if config_extra:
            config = json.loads((model / "config.json").read_text())
            (model / "config.json").write_text(json.dumps({**config, **config_extra}))
        (model / name).write_bytes(data)
        exercise_model_folder(model, folder / "converted")

    return run


def _meta_params(data: bytes, folder: Path) -> None:
    import numpy as np

    import torchzip
    from fuzz_support import exercise_checkpoint

    model = folder / "meta"
    model.mkdir()
    state = {"tok_embeddings.weight": np.ones((16, 8), np.float32), "norm.weight": np.ones(8, np.float32)}
    torchzip.save(model / "consolidated.00.pth", torchzip.state_dict_refs(state))
    (model / "params.json").write_bytes(data)
    exercise_checkpoint(model, fingerprint=True)


def _tokenizer(name: str, partner: tuple[str, bytes] | None = None) -> Callable[[bytes, Path], None]:
    def run(data: bytes, folder: Path) -> None:
        from fuzz_support import exercise_tokenizer

        if partner is not None:
            (folder / partner[0]).write_bytes(partner[1])
        (folder / name).write_bytes(data)
        exercise_tokenizer(folder / name)

    return run


def _library_import(data: bytes, folder: Path) -> None:
    from fuzz_support import exercise_library, run_cli, tiny_llama_template

    library = folder / "lib.sqlite"
    run_cli("library", "add", str(tiny_llama_template()), "--library", str(library), "--name", "tiny")
    (folder / "export.jsonl").write_bytes(data)
    run_cli("library", "import", str(folder / "export.jsonl"), "--library", str(library))
    exercise_library(library)


def _library_file(data: bytes, folder: Path) -> None:
    from fuzz_support import exercise_library

    library = folder / "lib.sqlite"
    library.write_bytes(data)
    with contextlib.suppress(sqlite3.Error):  # most mutations are no database at all
        sqlite3.connect(library).close()
    exercise_library(library)


def _web(data: bytes, folder: Path) -> None:
    """The input's first line is a URL path and query, sent as GET to ``unshell serve``."""
    from fuzz_support import check_response, web_client

    line = data.split(b"\n", 1)[0]
    if not line.startswith(b"/"):
        return
    # Bytes a URL cannot hold raw are sent percent-encoded, as a client would.
    url = "http://127.0.0.1:8000" + quote(line, safe="/?=&%:@!$'()*+,;[]~-._")
    check_response(web_client().get(url))


TARGETS: dict[str, Callable[[bytes, Path], None]] = {
    "safetensors": _checkpoint("model.safetensors"),
    "gguf": _checkpoint("model.gguf"),
    "pytorch": _checkpoint("pytorch_model.bin"),
    "onnx": _checkpoint("model.onnx"),
    "llama2c": _checkpoint("model.bin"),
    "config": _model_folder("config.json"),
    "card": _model_folder("README.md"),
    "params": _meta_params,
    "tokenizer-json": _tokenizer("tokenizer.json"),
    "vocab-json": _tokenizer("vocab.json", ("merges.txt", b"#version: 0.2\na b\n")),
    "merges": _tokenizer("merges.txt", ("vocab.json", b'{"a": 0, "b": 1, "ab": 2}')),
    "vocab-txt": _tokenizer("vocab.txt"),
    "sentencepiece": _tokenizer("tokenizer.model"),
    "tiktoken": _tokenizer("cl100k.tiktoken"),
    "llama2c-tokenizer": _tokenizer("tokenizer.bin"),
    "model-code": _model_folder("modeling_x.py", {"auto_map": {"AutoModelForCausalLM": "modeling_x.X"}}),
    "library-import": _library_import,
    "library-file": _library_file,
    "web": _web,
}


def run_one(target: str, data: bytes, workspace: Workspace) -> None:
    """Feed one input to one target; any exception but an unshell error's is a crash."""
    TARGETS[target](data, workspace.fresh())


# -- commands -------------------------------------------------------------------------------------


def _seeds(target: str) -> list[Path]:
    return sorted((CORPUS / target).iterdir()) if (CORPUS / target).is_dir() else []


def command_list() -> int:
    for target in TARGETS:
        print(f"{target:18} {len(_seeds(target)):3} seeds  tools/fuzz-corpus/{target}/")
    return 0


def command_replay(args: list[str]) -> int:
    """Run seeds (of the named targets, default all) or given files once; report every failure."""
    targets = [a for a in args if a in TARGETS] or list(TARGETS)
    files = [Path(a) for a in args if a not in TARGETS]
    jobs = [(t, f) for t in targets for f in (files or _seeds(t))]
    workspace = Workspace()
    failures = 0
    for target, path in jobs:
        try:
            run_one(target, path.read_bytes(), workspace)
        except Exception as error:
            failures += 1
            where = traceback.extract_tb(error.__traceback__)[-1]
            print(
                f"FAIL {target} {path.name}: {type(error).__name__}: {str(error)[:200]} ({Path(where.filename).name}:{where.lineno})"
            )
    shutil.rmtree(workspace.root, ignore_errors=True)
    print(f"{len(jobs) - failures} of {len(jobs)} inputs passed")
    return 1 if failures else 0


def _copy_seeds(target: str, corpus: Path) -> None:
    """Seed the work corpus with the seeds that replay cleanly: libFuzzer stops at the first
    crash, so a reproduction of a finding that is not fixed yet would end every run at once."""
    workspace = Workspace()
    for seed in _seeds(target):
        if (corpus / seed.name).exists():
            continue
        try:
            run_one(target, seed.read_bytes(), workspace)
        except Exception as error:
            print(
                f"seed {target}/{seed.name} still crashes ({type(error).__name__}); left out", file=sys.stderr
            )
            continue
        shutil.copy(seed, corpus / seed.name)
    shutil.rmtree(workspace.root, ignore_errors=True)


def command_run(target: str, libfuzzer_args: list[str]) -> int:
    try:
        import atheris
    except ImportError:
        print(
            "atheris is not installed: pip install -e '.[fuzz]' (or run the hypothesis fuzz tests "
            "longer: UNSHELL_FUZZ_PROFILE=dev pytest tests/test_fuzz_*.py)",
            file=sys.stderr,
        )
        return 2
    work = Path(os.environ.get("UNSHELL_FUZZ_DIR", Path.home() / ".cache" / "unshell-fuzz")) / target
    corpus, crashes = work / "corpus", work / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    corpus.mkdir(parents=True, exist_ok=True)
    with atheris.instrument_imports(include=["unshell"]):
        _import_unshell()
    import fuzz_support  # noqa: F401  (imported before fuzzing starts: not instrumented, not timed)

    _copy_seeds(target, corpus)  # after instrumenting: it imports unshell

    workspace = Workspace()

    def test_one_input(data: bytes) -> None:
        run_one(target, data, workspace)

    argv = [
        sys.argv[0],
        *DEFAULT_LIBFUZZER_ARGS,
        f"-artifact_prefix={crashes}/",
        *libfuzzer_args,
        str(corpus),
    ]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] == "list":
        return command_list()
    if argv[0] == "replay":
        return command_replay(argv[1:])
    if argv[0] == "run" and len(argv) >= 2 and argv[1] in TARGETS:
        rest = argv[2:]
        return command_run(argv[1], rest[1:] if rest[:1] == ["--"] else rest)
    print(
        f"usage: python tools/fuzz.py list | replay [TARGET|FILE ...] | run TARGET [-- LIBFUZZER_ARGS]\n"
        f"targets: {', '.join(TARGETS)}",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
