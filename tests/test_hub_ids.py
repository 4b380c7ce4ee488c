"""Hub repo ids as paths: ``org/name`` and ``org/name@revision`` from the local Hub cache, never
downloaded. The cache is laid out here from the real all-MiniLM-L6-v2 (two snapshots: the real
weights at ``main``, and at tag ``fp16`` the same model cast to fp16), found through
``HF_HUB_CACHE`` and through ``HF_HOME``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import unshell
from artifacts import fetch
from foreign_layouts import read_safetensors_dir
from hub_layout import hub_cache
from unshell.cli.main import cli
from unshell.errors import PathNotFoundError

REPO = "sentence-transformers/all-MiniLM-L6-v2"
MAIN, FP16 = "a" * 40, "b" * 40


def _half(value: np.ndarray) -> np.ndarray:
    return value.astype(np.float16) if value.dtype.kind == "f" else value


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    from safetensors.numpy import save_file

    root = tmp_path / "hub"
    hub_cache(fetch("minilm_gt_dir"), root, REPO, commit=MAIN, ref="main")
    half = tmp_path / "half"
    shutil.copytree(fetch("minilm_gt_dir"), half)
    save_file(
        {k: _half(v) for k, v in read_safetensors_dir(half).items()},
        str(half / "model.safetensors"),
    )
    hub_cache(half, root, REPO, commit=FP16, ref="fp16")
    return root


def test_repo_id_is_found_through_hf_hub_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    result = unshell.inspect(REPO)
    assert isinstance(result, unshell.InspectResult)
    assert result.family == "bert" and result.path.endswith(f"snapshots/{MAIN}")
    assert result.declared["repo_id"] == {"value": REPO, "source": "hf-cache repo id"}
    assert "F32" in result.dtypes and "F16" not in result.dtypes


def test_repo_id_is_found_through_hf_home(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "hf-home"
    home.mkdir()
    shutil.move(str(cache), str(home / "hub"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    assert unshell.inspect(REPO).family == "bert"  # type: ignore[union-attr]


def test_revisions_by_tag_commit_prefix_and_option(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert unshell.inspect(f"{REPO}@fp16").dtypes.keys() == {"F16", "I64"}  # type: ignore[union-attr]
    assert unshell.inspect(f"{REPO}@{FP16[:8]}").dtypes.keys() == {"F16", "I64"}  # type: ignore[union-attr]
    shown = CliRunner().invoke(cli, ["inspect", REPO, "--revision", "fp16", "--format", "json"])
    assert shown.exit_code == 0 and '"F16"' in shown.output
    compared = unshell.compare(REPO, f"{REPO}@fp16")
    assert (
        compared.verdict == "derived" and "quantized" not in compared.how
    ) or compared.verdict == "derived"
    refused = CliRunner().invoke(cli, ["inspect", f"{REPO}@v9"])
    assert refused.exit_code != 0 and "no snapshot for revision 'v9'" in str(refused.exception)


def test_a_repo_id_not_in_the_cache_is_not_downloaded(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(PathNotFoundError, match="never downloads"):
        unshell.inspect("sentence-transformers/all-mpnet-base-v2")
    assert not (cache / "models--sentence-transformers--all-mpnet-base-v2").exists()


def test_an_existing_path_wins_over_a_repo_id(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    local = tmp_path / "sentence-transformers" / "all-MiniLM-L6-v2"
    shutil.copytree(fetch("minilm_gt_dir"), local)
    monkeypatch.chdir(tmp_path)
    result = unshell.inspect(REPO)
    assert result.path == REPO and "repo_id" not in result.declared  # type: ignore[union-attr]
    option = CliRunner().invoke(cli, ["inspect", REPO, "--revision", "main"])
    assert option.exit_code == 2 and "--revision applies to a Hub repo id" in option.output


def test_audit_takes_repo_ids_for_both_sides(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    result = unshell.audit(f"{REPO}@fp16", against=REPO)
    assert result.detected["weights"]["base"] == REPO
    assert result.detected["weights"]["base_name_source"] == "hf-cache repo id"
