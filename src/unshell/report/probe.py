"""`unshell probe`'s report as one self-contained HTML page (the shared templates and styles)."""

from __future__ import annotations

from typing import Any

PROBE_VERDICT_MEANING = {
    "same-model": "the suspect behaves as the candidate does on nearly every prompt: the same weights, "
    "up to quantization or sampling settings",
    "derived": "the suspect agrees with the candidate far beyond what unrelated models do, but is not "
    "the same model: a fine-tune or other derivative (or a distillation: see below)",
    "inconclusive": "the answers neither show nor exclude it: ask more prompts",
    "not-derived": "no more agreement than unrelated models show, and a derivative's excess is ruled out",
}

_HOW_TO_READ_PROBE = (
    "Every model answered the same seeded prompts from a versioned prompt set with its greedy "
    "continuation. Agreement on a prompt is the share of the longer answer that both answers begin "
    "with (1: the same text; near 0: they diverge at once).",
    "The controls are models known to be unrelated to the suspect. The p-value is for H0 'the suspect is "
    "unrelated to the candidate': under H0 the candidate is one more control, so on each prompt its "
    "agreement is exchangeable with theirs (a randomization test). p-values are Holm-adjusted across "
    "candidates.",
    "'not-derived' is an equivalence statement: the upper confidence bound of the candidate's excess "
    "agreement over the controls is below the smallest effect the probe claims to detect.",
    "What a black-box test cannot see: a model distilled from the candidate can behave like it without "
    "sharing a weight; a system prompt or sampling settings move behaviour; an API may route between "
    "models. Behaviour is evidence about the service, not proof about its weights.",
)


def _headline(candidate: dict[str, Any]) -> tuple[str, str]:
    name = candidate["candidate"]
    verdict = candidate["verdict"]
    agreement = (
        f"Mean agreement {candidate['agreement']:.2f} against {candidate['control_agreement']:.2f} for the "
        f"controls; {candidate['exact_match']:.0%} of the answers identical."
    )
    if verdict == "same-model":
        return f"The suspect is {name}, up to quantization or sampling settings.", agreement
    if verdict == "derived":
        return f"The suspect was derived from {name} (a fine-tune or other derivative).", agreement
    if verdict == "not-derived":
        return f"The suspect does not come from {name}.", agreement
    return f"Neither shown nor excluded that the suspect comes from {name}.", agreement


def probe_html(doc: dict[str, Any]) -> str:
    """The report of `unshell.probe` (`ProbeResult.to_dict`) as one self-contained HTML page."""
    from .. import __version__
    from .markup import render

    sections = [
        ("result", "Result"),
        ("candidates", "Candidates"),
        ("controls", "Controls"),
        ("asked", "What was asked"),
    ]
    if doc["notes"]:
        sections.append(("notes", "Notes"))
    sections.append(("how-to-read", "How to read this"))
    boxes = [(c, *_headline(c)) for c in doc["candidates"]]
    return render(
        "probe.html",
        title="unshell probe: " + ", ".join(c["verdict"] for c in doc["candidates"]),
        toc=sections,
        version=__version__,
        doc=doc,
        boxes=boxes,
        how_to_read=_HOW_TO_READ_PROBE,
        verdict_meaning=PROBE_VERDICT_MEANING,
    )
