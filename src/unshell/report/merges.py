"""Text rendering of `compare --against` (`lineage.merges.MergeResult.to_dict`): the merge test,
the parents' weights per layer, and the pairwise comparison with each parent."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from .text import columns, key_value_table, p_text


def _short(path: str) -> str:
    return PurePath(path).name or path


def _weights(weights: list[float], parents: list[str]) -> str:
    return ", ".join(f"{_short(p)} {w:.3f}" for p, w in zip(parents, weights, strict=True))


def render_merge(doc: dict[str, Any]) -> str:
    merge = doc["merge"]
    parents = doc["parents"]
    rows: list[tuple[str, str]] = [("b", doc["b"])]
    rows.extend((f"parent {i + 1}", path) for i, path in enumerate(parents))
    verdict = "MERGED" if merge["merged"] else "NOT MERGED"
    rows.append(("merge", f"{verdict}: {merge['reason']}"))
    rows.append(
        (
            "p-value",
            f"{p_text(merge['p_value'], merge.get('log10_p_value'))} for H0 'given its best single parent, "
            "B owes nothing to the other parents'",
        )
    )
    if merge["weights"]:
        method = f"{merge['method']}; " if merge["method"] else ""
        rows.append(
            (
                "weights" if merge["merged"] else "best fit",
                f"{method}median over tensors: {_weights(merge['weights'], parents)}; the merge explains "
                f"{merge['explained']:.1%} of what the best single parent leaves",
            )
        )
    for note in merge["notes"]:
        rows.append(("note", note))
    text = key_value_table(rows)
    if merge["merged"] and merge["layers"]:
        table = [
            (
                "-" if row["layer"] is None else row["layer"],
                _weights(row["weights"], parents),
                "" if row["slerp_t"] is None else f"{row['slerp_t']:.3f}",
                row["method"],
                "" if row["explained"] is None else f"{row['explained']:.3f}",
            )
            for row in merge["layers"]
        ]
        text += "\nWeights per layer (mean over the layer's tensors; - : outside the layers):\n"
        text += columns(["LAYER", "WEIGHTS", "SLERP T", "METHOD", "EXPLAINED"], table) + "\n"
    pairwise = [
        (
            _short(parents[i]),
            result["verdict"],
            p_text(result["p_value"], result.get("log10_p_value")),
            ", ".join(result["how"]) or "-",
            "" if result["score"] is None else f"{result['score']:.3f}",
        )
        for i, result in enumerate(doc["pairwise"])
    ]
    text += "\nB against each parent (as `unshell compare PARENT B`; --format json for everything):\n"
    text += columns(["PARENT", "VERDICT", "P-VALUE", "HOW", "SIMILARITY"], pairwise) + "\n"
    return text
