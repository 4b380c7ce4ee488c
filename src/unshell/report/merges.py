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


_HOW_TO_READ_MERGE = [
    "Each of B's tensors is fitted on the same tensor of every candidate parent (least squares, free "
    "weights): a linear merge gives weights that sum to 1, a SLERP between distant parents weights "
    "that sum to more, following the angle between the parents.",
    "The p-value counts the tensors whose merge fit predicts held-out rows better than the best single "
    "parent does; a fit to unrelated parents can only lose there, so chance gives at most half.",
    "A significant p alone is not a merge: a fine-tune resembles a sibling fine-tune too. 'Merged' also "
    "needs the merge fit to explain most of what the best single parent leaves.",
    "'sparse': B keeps many of one parent's values exactly, as TIES and DARE leave their base's.",
]


def merge_html(doc: dict[str, Any]) -> str:
    """The report of `compare --against` (`MergeResult.to_dict`) as one self-contained HTML page."""
    from .. import __version__
    from .markup import render

    sections = [("merge", "Merge test"), ("layers", "Weights per layer"), ("pairwise", "Pairwise")]
    if doc["merge"]["notes"]:
        sections.append(("notes", "Notes"))
    sections.append(("how-to-read", "How to read this"))
    return render(
        "merge.html",
        title="unshell compare --against: " + ("merged" if doc["merge"]["merged"] else "not merged"),
        toc=sections,
        version=__version__,
        doc=doc,
        merge=doc["merge"],
        how_to_read=_HOW_TO_READ_MERGE,
    )
