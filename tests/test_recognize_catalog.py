"""Every catalog family is recognized from a generated checkpoint, and still after renames,
shuffling and resharding.

The checkpoints use the probe tensor lists recorded from transformers' own modeling code (names
and shapes of a tiny config, in `arch/catalog/<family>.json`; hand-written for remote-code
families) with random values. Truth for each tensor is the role of the template its original name
matches; after a rename the test checks the reported role, or the reported candidates when the
output declares the tensor ambiguous.
"""

from __future__ import annotations

import json
import random
import re
import struct
from pathlib import Path

import numpy as np
import pytest

import unshell
from unshell.arch.catalog import Family, load_catalog, normalize_name
from unshell.formats.safetensors import write_safetensors, write_sharded_safetensors

FAMILIES = load_catalog()
# Yi's rename touched the pre-attention and pre-MLP norms; families without them cannot be renamed so.
PRE_NORMED = [f for f in FAMILIES if {"attn_norm.weight", "ffn_norm.weight"} & {t.role for t in f.layer}]
# Dense-then-sparse families (DeepSeek-V2/V3, MLA) are fitted only with layer indices in the names or a
# declared config naming them (`arch.recognize`: their free MLA ranks make a bag of shapes too costly).
SINGLE_SIGNATURE = [f for f in FAMILIES if not any(t.layers for t in f.templates)]


def _true_roles(family: Family) -> dict[str, str]:
    """Probe tensor name -> role, by matching each name against the family's templates."""
    patterns = []
    for template in family.templates:
        regex = re.escape(template.name).replace(re.escape("{i}"), r"\d+").replace(re.escape("{e}"), r"\d+")
        patterns.append((re.compile(f"^{regex}$"), template.role))
    roles = {}
    for name, _shape in family.facts_probe():
        matches = [role for pattern, role in patterns if pattern.match(name)]
        assert matches, f"{family.family}: probe tensor {name} matches no template"
        roles[name] = matches[0]
    return roles


def _probe(family: Family) -> tuple[dict[str, np.ndarray], dict]:
    rng = np.random.default_rng(0)
    tensors = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in family.facts_probe()}
    return tensors, dict(family.probe_config())


def _write(directory: Path, tensors: dict[str, np.ndarray], config: dict | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / "model.safetensors", tensors)
    if config is not None:
        (directory / "config.json").write_text(json.dumps(config))
    return directory


def _write_in_order(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file whose data regions follow the dict's order (the writer sorts by name)."""
    header, position, blobs = {}, 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [position, position + len(data)],
        }
        position += len(data)
        blobs.append(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def _check(
    result: unshell.InspectResult, family: Family, truth: dict[str, str], *, renamed_from: dict[str, str]
) -> None:
    """``renamed_from``: new name -> original probe name."""
    structural = {result.recognition.matched_family, *result.recognition.compatible_with}
    assert family.family in structural, (
        family.family,
        result.recognition.matched_family,
        result.recognition.compatible_with,
    )
    assert result.recognition.confidence in ("high", "medium")
    assert not result.recognition.unexplained
    by_name = {a.name: a for a in result.recognition.assignments}
    for new_name, original in renamed_from.items():
        if original not in truth:  # a buffer
            continue
        assignment = by_name[new_name]
        role = truth[original]
        if assignment.role is None:
            assert role in assignment.candidates, (new_name, role, assignment.candidates)
            assert len(assignment.candidates) >= 2
        else:
            assert assignment.role == role, (new_name, original, assignment.role, role)
        _, layer, _ = normalize_name(original)
        if result.recognition.layered and layer is not None:
            assert assignment.layer == layer


def _config_numbers(family: Family, result: unshell.InspectResult) -> None:
    config = result.recognition.config
    values = family.symbols_from_config(family.probe_config())
    assert config["hidden_size"] == values["H"]
    assert config["num_hidden_layers"] == values["L"]
    if "V" in values:
        assert config["vocab_size"] == values["V"]


@pytest.mark.parametrize("family", FAMILIES, ids=[f.family for f in FAMILIES])
def test_generated_checkpoint_is_recognized(family: Family, tmp_path: Path) -> None:
    tensors, config = _probe(family)
    truth = _true_roles(family)
    result = unshell.inspect(_write(tmp_path / "plain", tensors, config))
    assert (
        family.family == result.recognition.matched_family
        or family.family in result.recognition.compatible_with
    )
    assert result.recognition.confidence == "high"
    _check(result, family, truth, renamed_from={n: n for n in tensors})
    _config_numbers(family, result)
    assert not [a for a in result.recognition.assignments if a.role is None], (
        "canonical names must resolve every role"
    )


@pytest.mark.parametrize("family", PRE_NORMED, ids=[f.family for f in PRE_NORMED])
def test_yi_style_norm_renames(family: Family, tmp_path: Path) -> None:
    tensors, config = _probe(family)
    truth = _true_roles(family)
    norm_roles = ("attn_norm.weight", "ffn_norm.weight")
    renames = {}
    for name in tensors:
        role = truth.get(name)
        if role in norm_roles:
            module_path, suffix = name.rsplit(".", 1)
            renames[name] = (
                f"{module_path.rsplit('.', 1)[0]}.{'ln1' if role == norm_roles[0] else 'ln2'}.{suffix}"
            )
    assert renames, f"{family.family} has no pre-attention/pre-MLP norm tensors to rename"
    renamed = {renames.get(n, n): v for n, v in tensors.items()}
    result = unshell.inspect(_write(tmp_path / "yi", renamed, config))
    _check(result, family, truth, renamed_from={renames.get(n, n): n for n in tensors})
    reported = {entry.name for entry in result.renamed}
    assert set(renames.values()) <= reported
    both_norms = {t.role for t in family.layer} >= set(norm_roles)
    for assignment in result.recognition.assignments:
        if both_norms and assignment.name in renames.values():
            assert assignment.role is not None, f"ln1/ln2 are a known alias: {assignment.name}"


@pytest.mark.parametrize("family", FAMILIES, ids=[f.family for f in FAMILIES])
@pytest.mark.parametrize("keep_config", [True, False], ids=["numbers-only-config", "no-config"])
def test_random_rename_of_every_tensor(family: Family, keep_config: bool, tmp_path: Path) -> None:
    tensors, config = _probe(family)
    truth = _true_roles(family)
    rng = random.Random(f"{family.family}-{keep_config}")
    tokens: dict[str, str] = {}

    def scramble(name: str) -> str:
        return ".".join(
            p if p.isdigit() else tokens.setdefault(p, f"z{rng.getrandbits(32):08x}") for p in name.split(".")
        )

    mapping = {scramble(n): n for n in tensors}
    renamed = {new: tensors[old] for new, old in mapping.items()}
    # The config keeps only numbers: no model_type, architectures or auto_map to give the family away.
    stripped = {
        k: v
        for k, v in config.items()
        if k not in ("model_type", "architectures", "auto_map", "_name_or_path")
    }
    result = unshell.inspect(_write(tmp_path / "scrambled", renamed, stripped if keep_config else None))
    _check(result, family, truth, renamed_from=mapping)
    # Nothing that carries a random name may be resolved from its name.
    assert all(
        a.resolved_by in ("structure", "elimination", "ambiguous") for a in result.recognition.assignments
    )


@pytest.mark.parametrize("family", SINGLE_SIGNATURE, ids=[f.family for f in SINGLE_SIGNATURE])
def test_fully_random_names_without_layer_indices(family: Family, tmp_path: Path) -> None:
    tensors, _ = _probe(family)
    truth = _true_roles(family)
    rng = random.Random(family.family)
    mapping = {f"t{rng.getrandbits(48):012x}": n for n in tensors}
    result = unshell.inspect(
        _write(tmp_path / "opaque", {new: tensors[old] for new, old in mapping.items()}, None)
    )
    _check(result, family, truth, renamed_from=mapping)
    assert result.recognition.config["hidden_size"] == family.symbols_from_config(family.probe_config())["H"]


@pytest.mark.parametrize("family", FAMILIES, ids=[f.family for f in FAMILIES])
def test_shuffled_order_and_resharding(family: Family, tmp_path: Path) -> None:
    tensors, config = _probe(family)
    truth = _true_roles(family)
    names = list(tensors)
    random.Random(1).shuffle(names)
    shuffled = {n: tensors[n] for n in names}
    directory = tmp_path / "shuffled"
    directory.mkdir()
    _write_in_order(directory / "model.safetensors", shuffled)
    (directory / "config.json").write_text(json.dumps(config))
    result = unshell.inspect(directory)
    _check(result, family, truth, renamed_from={n: n for n in tensors})
    assert result.recognition.confidence == "high"

    sharded = tmp_path / "sharded"
    index = write_sharded_safetensors(sharded, shuffled, shards=min(3, len(names)))
    (sharded / "config.json").write_text(json.dumps(config))
    for target in (sharded, index):
        result = unshell.inspect(target)
        assert result.layout in ("sharded", "hf-directory")
        assert len(result.files) == min(3, len(names))
        _check(result, family, truth, renamed_from={n: n for n in tensors})
