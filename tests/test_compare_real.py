"""`unshell compare` on real artifacts made by other people, with known ground truth
(`tests/data/fixtures/README.md` and `tests/artifacts.py` say where each comes from)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import unshell
from artifacts import fetch


def test_two_packagings_of_all_minilm_are_identical() -> None:
    result = unshell.compare(fetch("minilm_gt_dir"), fetch("minilm_zip_dir"))
    assert result.verdict == "identical"
    assert result.hashes is not None and result.hashes.exact == 1.0


def test_pt_checkpoint_and_its_llama2c_export_are_identical(fixtures_dir: Path) -> None:
    result = unshell.compare(fixtures_dir / "llama2xs.ckpt.pt", fixtures_dir / "llama2xs.model.bin")
    assert result.verdict == "identical"


def test_int8_onnx_export_is_a_quantized_derivative() -> None:
    result = unshell.compare(fetch("minilm_gt_dir"), fetch("minilm_int8_onnx"))
    assert result.verdict == "derived"
    assert result.p_value is not None and result.p_value < 1e-6
    assert "quantized" in result.how
    assert result.score is not None and result.score > 0.9


def test_paraphrase_minilm_l3_shares_an_ancestor() -> None:
    # paraphrase-MiniLM-L3-v2 and all-MiniLM-L6-v2 both descend from MiniLM-L12-H384, fine-tuned
    # differently and cut to different depths; the ONNX file's MatMul weights are anonymous and
    # stored transposed.
    result = unshell.compare(fetch("minilm_gt_dir"), fetch("paraphrase_minilm_onnx"))
    assert result.verdict == "derived"
    assert result.p_value is not None and result.p_value < 1e-6


@pytest.mark.parametrize("first", ["all-MiniLM-L6", "paraphrase-MiniLM-L3"])
def test_quick_finds_the_minilm_siblings_in_either_order(first: str) -> None:
    # The ONNX file's anonymous MatMul weights are stored [in, out]: --quick, which sketches only
    # the matrices that read the residual stream, once took their rows (the wrong side) and skipped
    # all-MiniLM-L6's writers, so it said "independent" with MiniLM-L6 as A and "derived" the
    # other way. A derivative is never called independent, whichever side is A.
    pair = [fetch("minilm_gt_dir"), fetch("paraphrase_minilm_onnx")]
    a, b = pair if first == "all-MiniLM-L6" else pair[::-1]
    result = unshell.compare(a, b, quick=True)
    assert result.verdict == "derived", (result.verdict, result.reason)
    assert result.p_value is not None and result.p_value < 1e-6
    assert result.quick


def test_stories260k_and_llama2xs_are_independent(fixtures_dir: Path) -> None:
    # Same architecture, same kind of shapes, trained separately: architecture reuse only.
    result = unshell.compare(fixtures_dir / "stories260K.bin", fixtures_dir / "llama2xs.model.bin")
    assert result.verdict == "independent"
    document = result.to_dict()
    assert document["architecture"]["same_family"] is True
    assert result.p_value is not None and result.p_value > 0.05


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_cli_compare(fixtures_dir: Path, fmt: str) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "unshell",
            "compare",
            str(fixtures_dir / "stories260K.bin"),
            str(fixtures_dir / "llama2xs.model.bin"),
            "--format",
            fmt,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    if fmt == "json":
        document = json.loads(completed.stdout)
        assert document["schema_version"] == 1 and document["verdict"] == "independent"
        for key in ("architecture", "verdict", "how", "p_value", "score", "layers", "evidence"):
            assert key in document
        assert {"hashes", "alignment", "std_profile_correlation"} <= set(document["evidence"])
    else:
        assert "INDEPENDENT" in completed.stdout and "P-VALUE" in completed.stdout
