"""`unshell probe`'s null over real models: the p-value of every ordered pair of unrelated models.

Given named endpoints (``name=URL``, OpenAI-compatible, the name being the served model) and
families (models of one family are related; of different families, unrelated), probes every
ordered pair (suspect, candidate) of models from different families, the controls being one
model of every other family, and prints the Holm-adjusted p (one candidate: unadjusted) and the
verdict. Related pairs (same family, different models) are printed too, as the positives.

Answers come from ``--cache`` when it holds them (for instance the response cache of
``tests/test_probe_real.py``, whose servers may be gone by then: nothing is sent for a cached
answer), else from the endpoints.

    python benchmarks/probe_null_pairs.py --cache DIR --prompts 24 --max-tokens 8 \\
        --model smollm2=URL --model smollm2-ft=URL --model qwen=URL --model gemma=URL \\
        --family smollm2,smollm2-ft,smollm2-q8
"""

from __future__ import annotations

import argparse
import sys
from itertools import permutations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import unshell  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="append", required=True, help="NAME=URL (repeatable)")
    parser.add_argument("--family", action="append", default=[], help="comma-separated related models")
    parser.add_argument("--cache", required=True)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args()
    urls = dict(item.split("=", 1) for item in args.model)
    family = {name: name for name in urls}
    for group in args.family:
        members = [m for m in group.split(",") if m in urls]
        for member in members:
            family[member] = members[0]
    spec = {name: f"{url}#{name}" for name, url in urls.items()}
    print(f"{args.prompts} prompts of general-v1 (seed 0), {args.max_tokens} new tokens\n")
    print(
        "| pair | suspect | candidate | controls | verdict | p | agreement | controls' agreement | requests |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    p_values: list[float] = []
    for suspect, candidate in permutations(urls, 2):
        related = family[suspect] == family[candidate]
        if related and suspect != family[suspect] and candidate != family[candidate]:
            continue  # two derivatives of one root: not a pair the acceptance asks about
        taken = {family[suspect], family[candidate]}
        controls = []
        for name in urls:
            if family[name] not in taken and name == family[name]:
                controls.append(name)
                taken.add(family[name])
        if not controls:
            continue
        result = unshell.probe(
            spec[suspect],
            against=[spec[candidate]],
            controls=[spec[c] for c in controls],
            prompts=args.prompts,
            max_tokens=args.max_tokens,
            cache_dir=args.cache,
        )
        (verdict,) = result.candidates
        if not related:
            p_values.append(verdict.p_value)
        print(
            f"| {'related' if related else 'unrelated'} | {suspect} | {candidate} | {', '.join(controls)} | "
            f"{verdict.verdict} | {verdict.p_value:.2g} | {verdict.agreement:.3f} | "
            f"{verdict.control_agreement:.3f} | {result.spending.requests} |"
        )
    ordered = ", ".join(f"{p:.2g}" for p in sorted(p_values))
    print(f"\nunrelated pairs: {len(p_values)}; p sorted: {ordered}")


if __name__ == "__main__":
    main()
