"""Fingerprints (`unshell.lineage.fingerprint`): compact, strict bytes, and `compare`'s verdicts
without the base's weights, on the lineage zoo (tools/zoo.py), its null pairs and real artifacts."""

from __future__ import annotations

import functools
import json
import struct
from pathlib import Path

import numpy as np
import pytest

import unshell
from artifacts import fetch
from unshell.errors import CorruptCheckpointError, StaleFingerprintError
from unshell.lineage.fingerprint import (
    FINGERPRINT_DIM,
    FINGERPRINT_VERSION,
    MAGIC,
    Fingerprint,
    compare_with_fingerprint,
    fingerprint,
    fingerprint_checkpoint,
    header_hash,
)
from zoo_fixture import zoo

VALUE_PRESERVING = {"rename", "permute-mlp", "permute-heads"}


@functools.cache
def _print(path: Path) -> Fingerprint:
    """Every fingerprint used goes through bytes, as a library would store it."""
    return Fingerprint.from_bytes(fingerprint(path).to_bytes())


def _base() -> Path:
    return zoo().bases["base-s0"]


# --- the object and its bytes -------------------------------------------------------------------


def test_fields_and_signature() -> None:
    print_ = fingerprint(_base())
    assert print_.version == FINGERPRINT_VERSION
    assert print_.name == _base().name and print_.format == "safetensors" and print_.family == "llama"
    assert print_.signature == "llama|h128|l4|q4|kv2|ffn256|v512"
    assert (print_.hidden, print_.layers, print_.vocab_size) == (128, 4, 512)
    inspected = unshell.inspect(_base())
    assert isinstance(inspected, unshell.InspectResult) and print_.parameters == inspected.parameters
    # Sketches at compare's width: min(H, 256) dimensions, so 128 here.
    assert FINGERPRINT_DIM == 256 and print_.sketch_dim == 128
    assert len(print_.units) == 28 and print_.sketches.shape == (28, 128 * 129 // 2)
    assert print_.anchors.shape == (1, 512, 128)  # the whole 512-token vocabulary anchors
    # Each anchor row's token string, hashed (for renumbered vocabularies); most are ordinary tokens.
    assert print_.anchor_tokens.shape == (512, 8) and np.count_nonzero(print_.anchor_tokens.any(axis=1)) > 400
    # A's layer moments for the alignment read off the layer matrices: 4 layers x 7 roles.
    assert len(print_.gram_keys) == 28 and print_.grams.shape == (28, 128 * 129 // 2)
    assert (
        len(print_.content_hashes) == 2 * len(print_.tensor_numels)
        and sum(print_.tensor_numels) == print_.parameters
    )
    assert all(len(h) == 64 for h in print_.content_hashes)
    assert print_.tokenizer is not None and "sample" in print_.tokenizer
    with unshell.open_checkpoint(_base()) as checkpoint:
        assert print_.header_hash == header_hash(checkpoint)
        again = fingerprint_checkpoint(checkpoint, name="renamed")
    assert again.name == "renamed" and again.to_bytes() != print_.to_bytes()
    assert again.content_hashes == print_.content_hashes


def test_round_trip() -> None:
    print_ = fingerprint(_base())
    data = print_.to_bytes()
    assert data.startswith(MAGIC)
    back = Fingerprint.from_bytes(data)
    assert back.to_bytes() == data
    for key in ("name", "source", "format", "family", "signature", "hidden", "layers", "vocab_size"):
        assert getattr(back, key) == getattr(print_, key)
    assert back.content_hashes == print_.content_hashes and back.multiset_hashes == print_.multiset_hashes
    assert back.units == print_.units and back.tokenizer == print_.tokenizer
    assert np.array_equal(back.sketches, print_.sketches) and np.array_equal(back.anchors, print_.anchors)
    # the stored half of each symmetric sketch rebuilds the unit-norm sketch
    assert np.array_equal(back.anchor_tokens, print_.anchor_tokens) and back.gram_keys == print_.gram_keys
    grams = back.layer_grams()
    assert grams is not None and len(grams) == 28
    gram = next(iter(grams.values()))
    assert np.allclose(gram, gram.T) and abs(float(np.linalg.norm(gram)) - 1) < 1e-2
    unit = back.unit_list()[0].sketch.reshape(128, 128)
    assert np.allclose(unit, unit.T) and abs(float(np.linalg.norm(unit)) - 1) < 1e-5


def _header(data: bytes) -> tuple[dict, int]:
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    return json.loads(data[start : start + length]), start + length


def _with_header(data: bytes, header: dict) -> bytes:
    _, end = _header(data)
    text = json.dumps(header).encode("ascii")
    return MAGIC + struct.pack("<I", len(text)) + text + data[end:]


def test_bad_bytes_are_refused() -> None:
    data = fingerprint(_base()).to_bytes()
    header, end = _header(data)
    bad: dict[str, bytes] = {
        "empty": b"",
        "magic": b"X" + data[1:],
        "truncated header": data[: len(MAGIC) + 10],
        "truncated payload": data[:-1],
        "truncated in the middle": data[: len(data) // 2],
        "trailing byte": data + b"\0",
        "flipped payload byte": data[:end] + bytes([data[end] ^ 1]) + data[end + 1 :],
        "header not json": data[: len(MAGIC) + 4] + b"{" * 8 + data[len(MAGIC) + 12 :],
        "pickle": b"\x80\x04\x95" + data,
    }
    for key, value in {
        "version": 99,
        "sketch_dim": 63,
        "anchor_stride": 7,
        "units": header["units"][:-1],
        "tensor_numels": header["tensor_numels"] + [5],
        "header_hash": "zz",
        "name": 5,
        "payload_bytes": header["payload_bytes"] + 1,
    }.items():
        bad[f"header {key}"] = _with_header(data, {**header, key: value})
    arrays = json.loads(json.dumps(header["arrays"]))
    arrays["sketches"]["dtype"] = "<f8"
    bad["array dtype"] = _with_header(data, {**header, "arrays": arrays})
    arrays = json.loads(json.dumps(header["arrays"]))
    arrays["anchors"]["shape"] = [1, 512, 65]
    bad["array shape"] = _with_header(data, {**header, "arrays": arrays})
    bad["gram key"] = _with_header(data, {**header, "gram_keys": [[0, "attn.x"], *header["gram_keys"][1:]]})
    bad["gram count"] = _with_header(data, {**header, "gram_keys": header["gram_keys"][1:]})
    for why, blob in bad.items():
        with pytest.raises(CorruptCheckpointError):
            Fingerprint.from_bytes(blob)
        assert why


# --- verdicts ------------------------------------------------------------------------------------


def test_an_older_format_is_refused_with_its_own_error() -> None:
    """Version 1 (64-dimension sketches) cannot reach compare's verdicts: refused, not used, with
    `StaleFingerprintError`'s exit code and one line saying what to do."""
    data = fingerprint(_base()).to_bytes()
    header, _ = _header(data)
    with pytest.raises(StaleFingerprintError, match="format version 1 is no longer read") as raised:
        Fingerprint.from_bytes(_with_header(data, {**header, "version": 1}))
    assert raised.value.exit_code == 23 and "re-fingerprint" in str(raised.value)
    assert "\n" not in str(raised.value)


def _obfuscations(note: str) -> set[str] | None:
    prefix = "obfuscation of "
    if not note.startswith(prefix) or ": " not in note:
        return None
    return {step.strip() for step in note.split(": ", 1)[1].split(",")}


def test_every_derived_pair_gets_compares_verdict() -> None:
    failures = []
    for pair in zoo().derived:
        full = unshell.compare(pair.a, pair.b)
        assert isinstance(full, unshell.CompareResult)
        result = compare_with_fingerprint(_print(pair.a), pair.b)
        steps = _obfuscations(pair.note)
        expected = "identical" if steps is not None and steps <= VALUE_PRESERVING else "derived"
        if not (result.verdict == full.verdict == expected):
            failures.append(f"{pair.name}: fingerprint {result.verdict}, full {full.verdict}")
        if result.verdict == "derived" and not (result.p_value is not None and result.p_value < 1e-6):
            failures.append(f"{pair.name}: p = {result.p_value}")
        if any("fingerprint comparison" in note for note in result.notes) is False:
            failures.append(f"{pair.name}: no fingerprint note")
        structural = {"quantized", "pruned", "upscaled", "vocab-extended"} & set(full.how)
        if result.verdict == "derived" and not structural <= set(result.how):
            failures.append(f"{pair.name}: how {result.how} misses {structural - set(result.how)}")
        if (
            steps
            and steps & {"rotate-residual", "signed-permute-residual"}
            and "obfuscated" not in result.how
        ):
            failures.append(f"{pair.name}: rotated residual not reported")
    assert not failures, failures


def test_value_preserving_copies_are_identical() -> None:
    for pair in zoo().identical:
        result = compare_with_fingerprint(_print(pair.a), pair.b)
        assert result.verdict == "identical", (pair.name, result.verdict)
        # both compressed: the hashes alone decide
        assert compare_with_fingerprint(_print(pair.a), _print(pair.b)).verdict == "identical"


def test_no_independent_pair_is_accused() -> None:
    accused = []
    for pair in zoo().independent:
        result = compare_with_fingerprint(_print(pair.a), pair.b)
        if result.verdict in ("derived", "identical"):
            accused.append(f"{pair.name}: {result.verdict} p={result.p_value}")
        both = compare_with_fingerprint(_print(pair.a), _print(pair.b))
        if both.verdict in ("derived", "identical"):
            accused.append(f"{pair.name} (fingerprint vs fingerprint): {both.verdict} p={both.p_value}")
    assert not accused, accused


def test_null_calibration() -> None:
    """At r = min(H, 256), over 210 independent pairs the fraction with p < alpha is at most alpha (plus two
    binomial standard errors), in both modes."""
    pairs = zoo().null_pairs(210)
    assert len(pairs) >= 200
    against_checkpoint = np.array(
        [compare_with_fingerprint(_print(p.a), p.b).p_value for p in pairs], dtype=float
    )
    both_printed = np.array(
        [compare_with_fingerprint(_print(p.a), _print(p.b)).p_value for p in pairs], dtype=float
    )
    for p_values in (against_checkpoint, both_printed):
        assert not np.isnan(p_values).any()
        for alpha in (0.01, 0.05, 0.2):
            bound = alpha + 2 * np.sqrt(alpha * (1 - alpha) / len(p_values))
            assert (p_values < alpha).mean() <= bound, (alpha, (p_values < alpha).mean())
        assert p_values.min() > 1e-3  # measured: 0.24 against checkpoints (benchmarks/RESULTS.md)


def test_fingerprint_against_fingerprint_what_holds() -> None:
    """Both compressed: fine-tunes, merges, quantized copies, depth changes and vocabulary
    extension are still `derived` (same hidden size, residual stream not rotated)."""
    names = {
        "base-s0->finetune",
        "base-s0->lora-merged",
        "base-s0->merged",
        "base-s0->q4_0",
        "base-s0->pruned-depth",
        "base-s0->upscaled",
        "base-s0->vocab-extended",
        "stories260K->stories260K-finetune",
    }
    pairs = [p for p in zoo().derived if p.name in names]
    assert len(pairs) == len(names)
    for pair in pairs:
        result = compare_with_fingerprint(_print(pair.a), _print(pair.b))
        assert result.verdict == "derived", (pair.name, result.verdict, result.p_value)
        assert any("fingerprint against fingerprint" in note for note in result.notes)


# --- real artifacts ----------------------------------------------------------------------------


def test_real_minilm_packagings_identical_and_int8_derived() -> None:
    base = _print(Path(fetch("minilm_gt_dir")))
    assert base.family == "bert"
    identical = compare_with_fingerprint(base, fetch("minilm_zip_dir"))
    assert identical.verdict == "identical"
    assert identical.hashes is not None and identical.hashes.exact == 1.0
    quantized = compare_with_fingerprint(base, fetch("minilm_int8_onnx"))
    assert quantized.verdict == "derived", (quantized.verdict, quantized.p_value)
    assert quantized.p_value is not None and quantized.p_value < 1e-6
    assert "quantized" in quantized.how


def test_real_stories260k_and_llama2xs_not_derived(fixtures_dir: Path) -> None:
    base = _print(fixtures_dir / "stories260K.bin")
    result = compare_with_fingerprint(base, str(fixtures_dir / "llama2xs.model.bin"))
    assert result.verdict == "independent", (result.verdict, result.p_value)
    both = compare_with_fingerprint(base, _print(fixtures_dir / "llama2xs.model.bin"))
    assert both.verdict not in ("derived", "identical")
    document = result.to_dict()  # the usual JSON document, A described from the fingerprint
    assert document["architecture"]["family_a"] == "llama" and document["a"]["format"] == "llama2c"


def test_tokenizer_note_says_how_the_vocabularies_relate(fixtures_dir: Path) -> None:
    from unshell.lineage.fingerprint import compare_with_fingerprint, fingerprint

    gguf = fixtures_dir / "llama-2-tiny-random.gguf"  # Meta's 32,000-token Llama-2 vocabulary
    notes = compare_with_fingerprint(fingerprint(gguf), gguf).notes
    tokenizer = [n for n in notes if n.startswith("tokenizer")]
    assert len(tokenizer) == 1 and "B's vocabulary is identical to A's" in tokenizer[0]
