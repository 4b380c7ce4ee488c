"""`Model`: every fact of an opened checkpoint is computed once, whichever verb or layer asks.

Issue 11 found `audit --against` parsing the suspect's vocabulary four times and its card twice.
These tests count the parses on a real model pair: all-MiniLM-L6-v2 (a card added) against an
fp16 copy of itself, both carrying their real tokenizer.json.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import unshell
from artifacts import fetch
from foreign_layouts import read_safetensors_dir
from unshell import declared, inspection
from unshell.formats import facts, open_checkpoint
from unshell.model import Model
from unshell.tokenizers import describe, vocab


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, counts: Counter[str]) -> None:
    original: Callable[..., Any] = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        first = args[0] if args else None
        where = Path(str(getattr(first, "path", first)))
        # A checkpoint counts under its folder's name; a card (README.md) under its folder's too.
        counts[f"{name}:{where.parent.name if where.name == 'README.md' else where.name}"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


PARSES = [
    (vocab, "_vocabulary_of"),
    (describe, "_describe_tokenizer"),
    (declared, "_read_card"),
    (declared, "_read_declared"),
    (facts, "_facts_of"),
    (inspection, "_inspect"),
]


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    from safetensors.numpy import save_file

    base = tmp_path / "minilm"
    shutil.copytree(fetch("minilm_gt_dir"), base)
    suspect = tmp_path / "suspect"
    shutil.copytree(base, suspect)
    tensors = {
        k: v.astype(np.float16) if v.dtype.kind == "f" else v for k, v in read_safetensors_dir(base).items()
    }
    save_file(tensors, str(suspect / "model.safetensors"))
    (suspect / "README.md").write_text("---\nlicense: apache-2.0\n---\n# suspect\n")
    return base, suspect


def test_audit_against_parses_each_vocabulary_and_card_once(
    pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, suspect = pair
    counts: Counter[str] = Counter()
    for module, name in PARSES:
        _counting(monkeypatch, module, name, counts)

    result = unshell.audit(suspect, against=base)

    assert result.detected["weights"]["verdict"] == "derived"
    assert result.detected["tokenizer"] is not None  # the vocabulary was read, and matched
    for _module, name in PARSES:
        for side in (base, suspect):
            assert counts[f"{name}:{side.name}"] == 1, (name, side.name, counts)


def test_model_facts_are_one_object_per_checkpoint(fixtures_dir: Path) -> None:
    with open_checkpoint(fixtures_dir / "stories260K.bin") as checkpoint:
        model = Model.of(checkpoint)
        assert Model.of(checkpoint) is model
        assert model.inspection is unshell.inspection.inspect_checkpoint(checkpoint)
        assert model.family == "llama"
        assert model.facts.can_declare is False and model.facts.names_from == "format"
        assert model.declared.to_dict() == {
            "notes": ["llama2.c: none declared (the format has no metadata fields)"]
        }
    with Model.open(fixtures_dir / "llama-2-tiny-random.gguf") as gguf:
        assert gguf.vocabulary is not None and len(gguf.vocabulary) == 32000
        assert gguf.tokenizer_families and gguf.tokenizer_families[0].name.startswith("Llama")
        assert gguf.declared.model_type is not None
        assert gguf.declared.model_type.source == "GGUF general.architecture"


def test_a_folder_whose_only_tokenizer_is_vocab_txt_has_one_for_every_verb(tmp_path: Path) -> None:
    """Issue 11: `inspect` said "no tokenizer" where `compare` read vocab.txt (two sidecar tables
    that had drifted). The MiniLM folder, with its tokenizer.json turned into BERT's vocab.txt."""
    import json

    folder = tmp_path / "minilm-vocab-txt"
    shutil.copytree(fetch("minilm_gt_dir"), folder)
    pieces = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").write_text(
        "".join(f"{p}\n" for p, _ in sorted(pieces.items(), key=lambda kv: kv[1]))
    )

    result = unshell.inspect(folder)
    assert result.tokenizer is not None, result.notes
    assert result.tokenizer["vocab_size"] == len(pieces) == 30522
    with Model.open(folder) as model:
        assert model.vocabulary is not None and len(model.vocabulary) == len(pieces)
        assert model.tokenizer is not None and model.tokenizer.source == "vocab.txt"


def test_one_failure_mapping_for_cli_web_and_scan() -> None:
    """Issue 11: the exit-code mapping was written three times with different results."""
    from unshell.errors import CorruptCheckpointError, failure

    cases = {
        CorruptCheckpointError("model.gguf: truncated\nmore"): (14, "model.gguf: truncated"),
        MemoryError(): (21, "out of memory while reading the input"),
        OSError(28, "No space left on device", "out/model.safetensors"): (
            19,
            "I/O error: No space left on device: out/model.safetensors",
        ),
        KeyboardInterrupt(): (130, "aborted"),
        ValueError("boom"): (70, "internal error: ValueError: boom"),
    }
    for exc, expected in cases.items():
        shown = failure(exc)
        assert (shown.exit_code, shown.message) == expected
    from unshell.scanning import engine
    from unshell.web import jobs

    assert engine.failure is failure and jobs.failure is failure


def test_hashes_of_a_dequantized_onnx_weight_are_of_its_values() -> None:
    """Issue 11: a weight folded from an int8 initializer and its DequantizeLinear scale was
    hashed as its stored int8 codes. The real int8 MiniLM export holds such weights."""
    import hashlib

    from unshell.lineage.hashes import _bf16_bits, hash_tensor

    with open_checkpoint(fetch("minilm_int8_onnx")) as checkpoint:
        folded = [n for n, info in checkpoint.tensors.items() if info.extra.get("dequantize")]
        assert folded, "the export's int8 weights are read as dequantized tensors"
        name = folded[0]
        values = np.asarray(checkpoint.read(name), dtype=np.float32).ravel()
        assert not np.array_equal(values, np.round(values))  # scaled, not integer codes
        expected = hashlib.sha256(_bf16_bits(values).tobytes()).hexdigest()
        assert hash_tensor(checkpoint, name).rounded == expected
        assert checkpoint.raw_is_value(checkpoint.info(name)) is False


def test_a_fleet_audit_reads_each_fact_of_a_model_once(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11, every verb takes a `Model`: a fleet scan's worker fingerprints a checkpoint, then
    searches the library and audits it. The fingerprint, the search's suspect and the audit are
    one `Model`, so each tensor is hashed once (the search hashed the whole model again before),
    and the recognition, the canonical index and the vocabulary are made once."""
    from unshell.lineage import canonical, hashes
    from unshell.lineage import compare as compare_module
    from unshell.lineage import fingerprint as fingerprint_module
    from unshell.lineage.compare import hashable_names
    from unshell.scanning.fleet import analyze_search, library_key

    with unshell.Library(tmp_path / "library.sqlite") as library:
        library.add(unshell.fingerprint(fixtures_dir / "llama2xs.model.bin"), name="llama2xs")
        key = library_key(library)
    counts: Counter[str] = Counter()
    for module, name in [*PARSES, (canonical, "canonical_model")]:
        _counting(monkeypatch, module, name, counts)
    hashed: Counter[str] = Counter()
    counting_hash = hashes.hash_tensor

    def hash_tensor(checkpoint: Any, name: str, **options: Any) -> Any:
        hashed[name] += 1
        return counting_hash(checkpoint, name, **options)

    monkeypatch.setattr(hashes, "hash_tensor", hash_tensor)
    # Also where a module imported it by name (as the fingerprint and compare modules once did).
    for module in (fingerprint_module, compare_module):
        monkeypatch.setattr(module, "hash_tensor", hash_tensor, raising=False)
        monkeypatch.setattr(module, "canonical_model", canonical.canonical_model, raising=False)

    path = fixtures_dir / "stories260K.bin"
    with open_checkpoint(path) as checkpoint:
        analysis = analyze_search(
            checkpoint,
            str(path),
            "stories260K",
            library_path=str(tmp_path / "library.sqlite"),
            key=key,
            keep_fingerprint=False,
        )
        weights = len(hashable_names(checkpoint))

    assert analysis.fields["audit_level"] is not None and analysis.fields["candidates"]
    assert hashed and len(hashed) == weights and set(hashed.values()) == {1}, hashed
    for name in ("_inspect", "_facts_of", "_vocabulary_of", "canonical_model"):
        assert counts[f"{name}:{path.name}"] == 1, (name, counts)
