"""The probe's statistics (numpy only). docs/probe.md states them and why.

Per prompt, two models' greedy continuations are scored by ``text_agreement``: the length of
their common prefix over the longer one's length (after collapsing whitespace), so two models
that say the same thing score 1 and two that diverge at the first word score near 0. Text, not
token ids: unrelated models rarely share a tokenizer.

H0 "the suspect is unrelated to the candidate" is made testable by the control models, which are
unrelated to the suspect by choice: under H0 the candidate is one more such model, so on each
prompt its agreement with the suspect is exchangeable with the controls'. ``exchangeable_p``
is the resulting randomization test: the statistic is the candidate's summed excess agreement
over the prompt's mean, and its null distribution comes from relabelling, on each prompt
independently, which of the m + 1 models is "the candidate".
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

NULL_DRAWS = 20_000
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def text_agreement(first: str, second: str) -> float:
    """Common-prefix length over the longer text's length, in [0, 1]; 1 when both are empty."""
    a, b = normalise(first), normalise(second)
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    shared = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        shared += 1
    return shared / longest


def exact_match(first: str, second: str) -> bool:
    return normalise(first) == normalise(second)


def first_token_distance(suspect: dict[str, float], candidate: dict[str, float]) -> float | None:
    """How far apart two first-token log-prob profiles are (nats): the mean absolute difference
    over the suspect's top tokens, a token missing from the candidate's top list counting at the
    candidate's lowest listed log-prob (a bound, so the distance is a lower bound). None when
    either profile is missing."""
    if not suspect or not candidate:
        return None
    floor = min(candidate.values())
    gaps = [abs(logprob - candidate.get(token, floor)) for token, logprob in suspect.items()]
    return float(np.mean(gaps))


def exchangeable_p(scores: np.ndarray, seed: int = 0, draws: int = NULL_DRAWS) -> float:
    """One-sided randomization p-value that column 0 (the candidate) agrees with the suspect more
    than the other columns (the controls) do. ``scores`` is prompts x (1 + controls)."""
    prompts, models = scores.shape
    if prompts == 0 or models < 2:
        return 1.0
    centred = scores - scores.mean(axis=1, keepdims=True)
    observed = float(centred[:, 0].sum())
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, models, size=(draws, prompts))
    null = centred[np.arange(prompts)[None, :], picks].sum(axis=1)
    # A tolerance so that ties (identical scores) count as "at least as extreme".
    exceed = int(np.count_nonzero(null >= observed - 1e-12))
    return (1 + exceed) / (1 + draws)


def excess_upper_bound(scores: np.ndarray, alpha: float) -> float:
    """One-sided (1 - alpha) upper confidence bound on the mean per-prompt excess of the
    candidate's agreement over the controls' mean (normal approximation)."""
    excess = scores[:, 0] - scores[:, 1:].mean(axis=1)
    count = len(excess)
    if count < 2:
        return math.inf
    spread = float(excess.std(ddof=1)) / math.sqrt(count)
    return float(excess.mean()) + NormalDist().inv_cdf(1 - alpha) * spread


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted
