"""Benchmark: the candidate stage of `unshell search` on a library of 1,000,000 fingerprints.

The rows are synthetic: the cheap-signal columns only, drawn from a mix shaped like the Hub
(Llama-family checkpoints dominate, most of them sharing a handful of configurations: every
Llama-2-7B fine-tune has one signature), 3 content hashes each, and a 16-byte dummy blob. The
candidate query (`cheap_candidates`, top 32) is timed for several suspects, from the most common
signature (hundreds of thousands of rows match its family) to one that shares nothing, on a warm
page cache, as the median of repeated queries.

    python benchmarks/bench_search.py [--rows 1000000] [--directory DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from unshell.library.search import cheap_candidates
from unshell.library.store import COLUMNS, Library

# (family, weight, [(hidden, layers, vocab, tokenizer family, weight)])
MIX = [
    (
        "llama",
        45,
        [
            (4096, 32, 32000, "Llama 2", 30),
            (5120, 40, 32000, "Llama 2", 6),
            (8192, 80, 32000, "Llama 2", 3),
            (4096, 32, 128256, "Llama 3", 25),
            (8192, 80, 128256, "Llama 3", 6),
            (2048, 16, 128256, "Llama 3", 8),
            (3072, 28, 128256, "Llama 3", 8),
            (2048, 22, 32000, "Llama 2", 8),
            (4096, 32, 64000, None, 6),
        ],
    ),
    (
        "qwen2",
        20,
        [
            (3584, 28, 152064, "Qwen", 30),
            (1536, 28, 151936, "Qwen", 25),
            (896, 24, 151936, "Qwen", 20),
            (5120, 48, 152064, "Qwen", 15),
            (8192, 80, 152064, "Qwen", 10),
        ],
    ),
    (
        "mistral",
        12,
        [
            (4096, 32, 32000, "Mistral v1", 60),
            (4096, 32, 32768, "Mistral v1", 30),
            (5120, 40, 131072, None, 10),
        ],
    ),
    (
        "gemma2",
        5,
        [
            (2304, 26, 256000, "Gemma 3", 40),
            (3584, 42, 256000, "Gemma 3", 40),
            (4608, 46, 256000, "Gemma 3", 20),
        ],
    ),
    ("phi3", 5, [(3072, 32, 32064, "Phi-3", 70), (5120, 40, 32064, "Phi-3", 30)]),
    (
        "gpt2",
        4,
        [(768, 12, 50257, "GPT-2", 60), (1024, 24, 50257, "GPT-2", 25), (1600, 48, 50257, "GPT-2", 15)],
    ),
    ("bert", 4, [(768, 12, 30522, "BERT uncased", 70), (1024, 24, 30522, "BERT uncased", 30)]),
    ("gpt_neox", 3, [(2048, 16, 50304, "GPT-NeoX", 50), (4096, 32, 50432, "GPT-NeoX", 50)]),
    ("falcon", 2, [(4544, 32, 65024, "Falcon", 100)]),
]


def synthetic_rows(count: int, seed: int = 0):
    rng = random.Random(seed)
    families = [f for f, _, _ in MIX]
    family_weights = [w for _, w, _ in MIX]
    configs = {f: c for f, _, c in MIX}
    for i in range(count):
        family = rng.choices(families, family_weights)[0]
        hidden, layers, vocab, tokenizer, _ = rng.choices(configs[family], [c[4] for c in configs[family]])[0]
        if rng.random() < 0.05:  # pruned, upscaled, vocab-extended or odd configurations
            layers += rng.choice((-8, -4, 4, 8, 16))
            vocab += rng.choice((0, 0, 256, 1024, 7))
        signature = f"{family}|h{hidden}|l{layers}|v{vocab}"
        if rng.random() < 0.1:
            tokenizer = None
        yield {
            "name": f"synthetic/{i:07d}",
            "family": family,
            "signature": signature,
            "hidden": hidden,
            "layers": layers,
            "vocab_size": vocab,
            "parameters": hidden * hidden * layers * 12 + vocab * hidden * 2,
            "tokenizer_family": tokenizer,
            "format": "safetensors",
            "source": "",
            "fingerprint_version": 1,
        }


def fill(library: Library, count: int) -> float:
    start = time.perf_counter()
    db = library.db
    db.execute("BEGIN IMMEDIATE")
    blob = b"\0" * 16
    sha = hashlib.sha256(blob).hexdigest()
    batch: list[dict] = []

    def flush() -> None:
        cursor = db.execute("SELECT coalesce(max(id), 0) FROM fingerprints")
        first = cursor.fetchone()[0] + 1
        db.executemany(
            f"INSERT INTO fingerprints (id, name, added, {', '.join(COLUMNS)}) "
            f"VALUES (?, ?, ?, {', '.join('?' * len(COLUMNS))})",
            [(first + k, r["name"], 0.0, *(r[c] for c in COLUMNS)) for k, r in enumerate(batch)],
        )
        db.executemany(
            "INSERT INTO blobs (fingerprint_id, size, sha256, blob) VALUES (?, 16, ?, ?)",
            [(first + k, sha, blob) for k in range(len(batch))],
        )
        db.executemany(
            "INSERT INTO content_hashes (hash, fingerprint_id) VALUES (?, ?)",
            [
                (hashlib.sha256(f"{r['name']}/{j}".encode()).hexdigest(), first + k)
                for k, r in enumerate(batch)
                for j in range(3)
            ],
        )
        batch.clear()

    for row in synthetic_rows(count):
        batch.append(row)
        if len(batch) == 50_000:
            flush()
    if batch:
        flush()
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - start


SUSPECTS = {
    "Llama-2-7B fine-tune (most common signature)": {
        "family": "llama",
        "signature": "llama|h4096|l32|v32000",
        "hidden": 4096,
        "vocab_size": 32000,
        "tokenizer_family": "Llama 2",
    },
    "Qwen2-0.5B copy, one content hash shared": {
        "family": "qwen2",
        "signature": "qwen2|h896|l24|v151936",
        "hidden": 896,
        "vocab_size": 151936,
        "tokenizer_family": "Qwen",
        "hash_of": "synthetic/0000123",
    },
    "Yi-style: llama family, new vocabulary": {
        "family": "llama",
        "signature": "llama|h7168|l60|v64000",
        "hidden": 7168,
        "vocab_size": 64000,
        "tokenizer_family": None,
    },
    "unknown architecture, nothing shared": {
        "family": None,
        "signature": "x|h123",
        "hidden": 123,
        "vocab_size": 777,
        "tokenizer_family": None,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--directory", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.directory) as temporary:
        path = Path(temporary) / "library.sqlite"
        library = Library(path)
        seconds = fill(library, args.rows)
        size = sum(p.stat().st_size for p in Path(temporary).iterdir())
        print(f"rows: {len(library):,}  build: {seconds:.1f} s  file: {size / 1e6:.0f} MB")
        print("| suspect | candidates | first | median ms | max ms | fresh connection ms |")
        print("|---|---:|---|---:|---:|---:|")
        for label, suspect in SUSPECTS.items():
            hashes = []
            if "hash_of" in suspect:
                hashes = [
                    hashlib.sha256(f"{suspect['hash_of']}/0".encode()).hexdigest(),
                    "ab" * 32,
                    "cd" * 32,
                ]
            times = []
            found = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                found = cheap_candidates(library, suspect, hashes)
                times.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            with Library(path) as fresh:
                cheap_candidates(fresh, suspect, hashes)
            cold = (time.perf_counter() - start) * 1000
            first = found[0].name if found else "-"
            print(
                f"| {label} | {len(found)} | {first} | {statistics.median(times):.2f} | {max(times):.2f} | {cold:.1f} |"
            )
        # For scale: the same ranking as one scoring query over every row (no tiers).
        suspect = SUSPECTS["Llama-2-7B fine-tune (most common signature)"]
        start = time.perf_counter()
        library.db.execute(
            "SELECT name, (signature = ?) * 16 + (family = ?) * 4 + (hidden = ?) * 4 + "
            "coalesce(tokenizer_family = ?, 0) * 2 + (vocab_size = ?) AS score FROM fingerprints "
            "ORDER BY score DESC LIMIT 32",
            [suspect[k] for k in ("signature", "family", "hidden", "tokenizer_family", "vocab_size")],
        ).fetchall()
        print(f"one scoring query over every row, for scale: {(time.perf_counter() - start) * 1000:.0f} ms")
        library.close()


if __name__ == "__main__":
    main()
