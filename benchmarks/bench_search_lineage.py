"""Benchmark: `search`'s lineage stage for a Llama-2-7B-shaped suspect against several candidates.

    python benchmarks/make_7b_pair.py DIR --layers 4
    python benchmarks/bench_search_lineage.py DIR [--candidates 4]

The library holds ``--candidates`` fingerprints of DIR/base under different names (each is then a
full candidate: the cheap stage keeps them all). The suspect is DIR/noisy (a fine-tune stand-in).
Reported: the time to fingerprint the base once, and the time of one `search`, split into the
candidate stage and the lineage stage, plus the peak RSS of the process. Each `search` reads the
suspect from disk (the page cache is dropped before it) and hashes it once, however many
candidates it tests.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from bench_compare import drop_cache


def _evict(folder: Path) -> None:
    drop_cache([path for path in folder.rglob("*") if path.is_file()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="search's threads (default: its own)")
    args = parser.parse_args()

    from unshell.library import Library, search
    from unshell.lineage.fingerprint import fingerprint

    base, suspect = args.directory / "base", args.directory / "noisy"
    _evict(base)
    start = time.perf_counter()
    fp = fingerprint(base, name="base")
    fingerprint_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as work:
        library = Library(Path(work) / "library.sqlite")
        for i in range(args.candidates):
            library.add(fp, name=f"base-copy-{i}")
        _evict(suspect)
        start = time.perf_counter()
        result = search(suspect, library, top=args.candidates, workers=args.workers)
        total_s = time.perf_counter() - start
        library.close()
    verdicts = sorted({(c.verdict, c.p_adjusted) for c in result.candidates}, key=str)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fingerprint of the base: {fingerprint_s:.1f} s, {len(fp.to_bytes()):,} bytes")
    print(
        f"search: {total_s:.1f} s in all; candidate stage {result.candidate_seconds * 1000:.2f} ms, "
        f"lineage stage {result.lineage_seconds:.1f} s for {result.tested} candidates "
        f"({result.lineage_seconds / max(result.tested, 1):.1f} s each)"
    )
    print(f"verdicts: {verdicts}")
    print(f"peak RSS: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
