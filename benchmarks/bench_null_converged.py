"""Benchmark: is the p-value of `compare` uniform on independent models? (issue 19)

For every null population (the zoo's 210 briefly trained pairs, and the converged population of
``tools/null_population.py``: one shape, a second size, a second data set, another recipe, and
pairs across data and recipe), each pair goes through full `compare`, `compare --quick` and the
fingerprint comparison behind `search` (A as a fingerprint, through bytes, against B's
checkpoint). Prints a QQ summary per population and mode: the fraction of p-values below 0.01,
0.05, 0.1, 0.2 and 0.5, the smallest p, and how many pairs are not `independent`. A population is
calibrated when every fraction is at most alpha + 2 binomial standard errors (marked ``*`` when not).

    python benchmarks/bench_null_converged.py [--workers 2] [--json out.json] [--only docs-h32,brief]
    python benchmarks/bench_null_converged.py --only none --extra llama2c-h64 --search

``--extra`` adds groups of ``tools/null_extra_groups.py`` (too costly for CI: the issue's
llama2.c-shaped models, flat-loss variants), built or found in their cache. ``--search`` adds,
for every group, a leave-one-out `search`: each model against a library of the group's other
models (all independent of it), with the library's Holm correction; it prints how many suspects
got a candidate that is not `independent`, and the smallest Holm-adjusted p.

Another version of unshell (a "before" table): put its ``src`` first on ``PYTHONPATH``; the
populations come from this checkout's ``tests/`` and ``tools/`` either way.

``--row-sample-per-dim N`` (a stress test of row sampling, not a setting of unshell): sketch every
matrix from at most N x r of its vectors instead of `sketch.ROW_SAMPLE_PER_DIM` x r, so that the
populations' small matrices (which the default never samples) are sampled too.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))

ALPHAS = (0.01, 0.05, 0.1, 0.2, 0.5)
MODES = ("full", "quick", "fingerprint")


def _set_row_sample(per_dim: int | None) -> None:
    """Worker initializer: `--row-sample-per-dim` (None: unshell's own)."""
    if per_dim is not None:
        import unshell.lineage.sketch as sketch

        sketch.ROW_SAMPLE_PER_DIM = per_dim  # read at every call of `sketch.row_sample_size`


def _one(job: tuple[str, str, str]) -> tuple[float, str]:
    a, b, mode = job
    import unshell
    from unshell.lineage.fingerprint import Fingerprint, compare_with_fingerprint, fingerprint

    if mode == "fingerprint":
        result = compare_with_fingerprint(Fingerprint.from_bytes(fingerprint(a).to_bytes()), b)
    else:
        result = unshell.compare(a, b, quick=mode == "quick")
    return (1.0 if result.p_value is None else float(result.p_value)), result.verdict


def _leave_one_out(job: tuple[str, tuple[str, ...], str]) -> tuple[float, str, int]:
    """`search` for ``suspect`` in a fresh library of ``others``: the smallest Holm-adjusted p,
    the top candidate's verdict, and how many candidates are not `independent`."""
    suspect, others, folder = job
    import tempfile

    from unshell.library import Library, search
    from unshell.lineage.fingerprint import fingerprint

    with tempfile.TemporaryDirectory(dir=folder) as temp, Library(Path(temp) / "library.db") as library:
        for other in others:
            library.add(fingerprint(other), name=Path(other).name)
        result = search(suspect, library, top=len(others), workers=1)
    adjusted = [c.p_adjusted for c in result.candidates if c.p_adjusted is not None]
    flagged = sum(c.verdict != "independent" for c in result.candidates)
    top = result.candidates[0].verdict if result.candidates else "none"
    return (min(adjusted) if adjusted else 1.0), top, flagged


def populations(
    only: set[str] | None, extra: list[str], brief: int = 210
) -> dict[str, list[tuple[str, str]]]:
    import null_extra_groups
    import null_population

    from zoo_fixture import zoo

    out: dict[str, list[tuple[str, str]]] = {}
    if not only or "brief" in only:
        out["brief (zoo, 40 steps, H 128)"] = [(str(p.a), str(p.b)) for p in zoo().null_pairs(brief)]
    if not only or (only - {"brief"}):
        population = null_population.load_or_build(log=print)
        for group in population.manifest["groups"]:
            if not only or group in only:
                out[f"converged {group}"] = [(str(p.a), str(p.b)) for p in population.pairs(group)]
        if not only or "cross" in only:
            out["converged, other data or recipe"] = [(str(p.a), str(p.b)) for p in population.cross_pairs()]
    for name in extra:
        group = null_extra_groups.load_or_build(name, log=print)
        out[f"extra {name}"] = [(str(p.a), str(p.b)) for p in group.pairs(name)]
    return out


def models_of(pairs: list[tuple[str, str]]) -> list[str]:
    """The models of a group, from its pairs (every pair within the group)."""
    return sorted({path for pair in pairs for path in pair})


def qq_row(p_values: list[float]) -> tuple[list[float], bool]:
    n = len(p_values)
    fractions = [sum(p < alpha for p in p_values) / n for alpha in ALPHAS]
    calibrated = all(
        f <= alpha + 2 * math.sqrt(alpha * (1 - alpha) / n)
        for f, alpha in zip(fractions, ALPHAS, strict=True)
    )
    return fractions, calibrated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every p-value and verdict here")
    parser.add_argument("--only", help="comma-separated: brief, cross, or group names")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated; 'none' for no pairs")
    parser.add_argument("--extra", default="", help="comma-separated groups of tools/null_extra_groups.py")
    parser.add_argument("--brief-pairs", type=int, default=210, help="the first N of the zoo's null pairs")
    parser.add_argument("--search", action="store_true", help="leave-one-out search in every group")
    parser.add_argument(
        "--row-sample-per-dim",
        type=int,
        help="stress test: vectors kept per sketch dimension (default unshell's)",
    )
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    only = set(args.only.split(",")) if args.only else None
    modes = [] if args.modes == "none" else args.modes.split(",")
    sets = populations(only, [name for name in args.extra.split(",") if name], args.brief_pairs)
    jobs = [(a, b, mode) for pairs in sets.values() for (a, b) in pairs for mode in modes]
    started = time.monotonic()
    with concurrent.futures.ProcessPoolExecutor(
        args.workers, initializer=_set_row_sample, initargs=(args.row_sample_per_dim,)
    ) as pool:
        results = dict(zip(jobs, pool.map(_one, jobs, chunksize=4), strict=True))
    seconds = time.monotonic() - started
    header = "| population | mode | pairs | " + " | ".join(f"p < {a:g}" for a in ALPHAS)
    print(header + " | smallest p | not `independent` |")
    print("|---|---|---:|" + "---:|" * len(ALPHAS) + "---:|---|")
    record: dict[str, dict[str, list[tuple[float, str]]]] = {}
    for name, pairs in sets.items():
        for mode in modes:
            got = [results[(a, b, mode)] for a, b in pairs]
            record.setdefault(name, {})[mode] = got
            p_values = [p for p, _ in got]
            fractions, calibrated = qq_row(p_values)
            verdicts: dict[str, int] = {}
            for _, verdict in got:
                if verdict != "independent":
                    verdicts[verdict] = verdicts.get(verdict, 0) + 1
            shown = ", ".join(f"{count} {verdict}" for verdict, count in sorted(verdicts.items())) or "none"
            cells = " | ".join(f"{f:.3f}" for f in fractions)
            mark = "" if calibrated else " *"
            print(f"| {name} | {mode} | {len(pairs)} | {cells} | {min(p_values):.2g}{mark} | {shown} |")
    print(f"\n{len(jobs)} comparisons in {seconds:.0f} s on {args.workers} workers")
    if args.search:
        groups = {
            name: models_of(pairs)
            for name, pairs in sets.items()
            if not name.startswith(("brief", "converged,"))
        }
        searches = [
            (model, tuple(m for m in models if m != model), str(Path(os.environ.get("TMPDIR", "/tmp"))))
            for models in groups.values()
            for model in models
        ]
        started = time.monotonic()
        with concurrent.futures.ProcessPoolExecutor(
            args.workers, initializer=_set_row_sample, initargs=(args.row_sample_per_dim,)
        ) as pool:
            found = dict(zip([s[0] for s in searches], pool.map(_leave_one_out, searches), strict=True))
        print(
            "\n| population | suspects (library of the others) | suspects with a candidate not `independent` "
            "| top candidates' verdicts | smallest Holm p |"
        )
        print("|---|---:|---:|---|---:|")
        for name, models in groups.items():
            rows = [found[m] for m in models]
            tops: dict[str, int] = {}
            for _, top, _ in rows:
                tops[top] = tops.get(top, 0) + 1
            shown = ", ".join(f"{count} {verdict}" for verdict, count in sorted(tops.items()))
            flagged = sum(1 for _, _, count in rows if count)
            print(
                f"| {name} | {len(models)} ({len(models) - 1}) | {flagged} | {shown} | {min(r[0] for r in rows):.2g} |"
            )
            record.setdefault(name, {})["search"] = [(p, top) for p, top, _ in rows]
        print(f"\n{len(searches)} searches in {time.monotonic() - started:.0f} s on {args.workers} workers")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
