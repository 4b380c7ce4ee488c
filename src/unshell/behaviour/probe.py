"""`unshell probe`: black-box provenance from responses alone (endpoint or local GGUF).

The suspect, every candidate and every control answer the same seeded prompts with greedy
continuations. For each candidate, a randomization test against the controls gives a p-value for
H0 "the suspect is unrelated to the candidate" (see `unshell.behaviour.statistics`); p-values are Holm-adjusted
across candidates, and the verdict says what the evidence supports:

- ``same-model``: H0 rejected, and the continuations are near-identical (and, where both gave
  log-probs, so are the first-token profiles): the same weights up to quantization or settings.
- ``derived``: H0 rejected, but the behaviour differs more than one model under two encodings.
- ``not-derived``: H0 kept, and the upper confidence bound on the candidate's excess agreement
  is below the smallest effect the probe claims to detect (an equivalence statement, not just
  an absence of evidence).
- ``inconclusive``: neither (too few prompts, or a noisy excess).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BudgetExhaustedError, EndpointError, UsageError
from .backends import (
    CHAT,
    COMPLETION,
    DEFAULT_API_KEY_ENV,
    DEFAULT_TIMEOUT_S,
    Backend,
    ModeUnavailableError,
    Reply,
    open_backend,
)
from .cache import ResponseCache, default_cache_dir, response_key
from .prompts import DEFAULT_PROMPT_SET, load_prompts
from .statistics import (
    exact_match,
    excess_upper_bound,
    exchangeable_p,
    first_token_distance,
    holm,
    text_agreement,
)

SCHEMA_VERSION = 1
DEFAULT_ALPHA = 0.01
DEFAULT_BUDGET = 400
DEFAULT_PROMPTS = 48
DEFAULT_MAX_TOKENS = 16
MIN_PROMPTS = 8
# The smallest mean excess agreement (fraction of the continuation shared beyond the controls)
# that `not-derived` rules out; derivatives seen so far exceed it several times over.
NOT_DERIVED_MARGIN = 0.15
# One model under two quantizations gives the same greedy text on most prompts (more than this
# share); a fine-tune does not. Both bounds must hold for `same-model`. SmolLM2-135M's Q4_1 and
# Q8_0 files served by llama.cpp at 24 prompts of 8 tokens: 58 % identical on an AVX-512 build,
# more on the AVX2 build measured before (benchmarks/RESULTS.md); its real fine-tunes 17 to 33 %.
# The share depends on the server's arithmetic (near-ties in greedy decoding), which a prober
# does not control, so the bound is "most", not a figure fitted to one build.
SAME_MODEL_EXACT = 0.5
SAME_MODEL_LOGPROB_NATS = 0.5

VERDICTS = ("same-model", "derived", "not-derived", "inconclusive")


@dataclass
class Spending:
    requests: int = 0
    cached: int = 0
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "cached": self.cached, "tokens": self.tokens}


@dataclass(frozen=True)
class CandidateVerdict:
    candidate: str
    verdict: str
    p_value: float  # Holm-adjusted across candidates
    p_raw: float
    agreement: float  # mean text agreement with the suspect
    control_agreement: float  # mean over the controls
    excess_upper: float
    exact_match: float
    logprob_distance: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "verdict": self.verdict,
            "p_value": self.p_value,
            "p_value_raw": self.p_raw,
            "agreement": self.agreement,
            "control_agreement": self.control_agreement,
            "excess_upper_bound": self.excess_upper,
            "exact_match": self.exact_match,
            "first_token_logprob_distance": self.logprob_distance,
            "reason": self.reason,
        }


@dataclass
class ProbeResult:
    suspect: str
    candidates: list[CandidateVerdict]
    controls: list[str]
    control_agreements: dict[str, float]
    prompt_set: str
    seed: int
    prompts_used: int
    prompts_planned: int
    max_tokens: int
    mode: str
    alpha: float
    spending: Spending
    budget: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": f"unshell.probe/{SCHEMA_VERSION}",
            "suspect": self.suspect,
            "candidates": [c.to_dict() for c in self.candidates],
            "controls": [
                {"model": name, "agreement": self.control_agreements[name]} for name in self.controls
            ],
            "prompts": {
                "set": self.prompt_set,
                "seed": self.seed,
                "used": self.prompts_used,
                "planned": self.prompts_planned,
                "max_tokens": self.max_tokens,
                "mode": self.mode,
            },
            "alpha": self.alpha,
            "spent": {**self.spending.to_dict(), "budget": self.budget, "seconds": round(self.seconds, 3)},
            "notes": list(self.notes),
        }


Progress = Callable[[int, int], None]


class Asker:
    """Answers (backend, prompt) from the cache, or by a request the budget allows."""

    def __init__(self, cache: ResponseCache, budget: int, max_tokens: int, spending: Spending) -> None:
        self.cache = cache
        self.budget = budget
        self.max_tokens = max_tokens
        self.spending = spending

    def ask(self, backend: Backend, prompt: str, mode: str) -> Reply | None:
        if getattr(backend, "offline", False):  # a recorded profile: no request, nothing to cache
            return backend.complete(prompt, self.max_tokens, mode)
        settings = {"max_tokens": self.max_tokens, "temperature": 0.0, "top_logprobs": 5}
        key = response_key(backend.identity, mode, prompt, settings)
        hit = self.cache.get(key)
        if hit is not None:
            self.spending.cached += 1
            return Reply.from_dict(hit)
        if self.spending.requests >= self.budget:
            return None
        self.spending.requests += 1
        reply = backend.complete(prompt, self.max_tokens, mode)
        self.spending.tokens += reply.tokens
        self.cache.put(key, reply.to_dict())
        return reply


def probe(
    suspect: str,
    against: Sequence[str],
    controls: Sequence[str],
    *,
    model: str | None = None,
    prompts: int = DEFAULT_PROMPTS,
    prompt_set: str = DEFAULT_PROMPT_SET,
    seed: int = 0,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    budget: int = DEFAULT_BUDGET,
    alpha: float = DEFAULT_ALPHA,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    api_key_env: str = DEFAULT_API_KEY_ENV,
    rate_per_s: float | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    library: str | Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProbeResult:
    """Test whether SUSPECT (a GGUF path, or an endpoint ``URL`` with ``model``, or ``URL#MODEL``)
    came from each of ``against``, calibrated against the unrelated ``controls``. Candidates and
    controls may also be ``library:NAME``: a profile recorded in the fingerprint library
    (``library``, default the default one)."""
    if not against:
        raise UsageError("probe needs at least one candidate (--against)")
    if not controls:
        raise UsageError(
            "probe needs at least one unrelated control model (--controls) to calibrate its test"
        )
    if not 0 < alpha < 1:
        raise UsageError("alpha must be between 0 and 1")
    if budget < 1 or max_tokens < 1:
        raise UsageError("the budget and max_tokens must be positive")
    started = time.monotonic()
    prompt_list = load_prompts(prompt_set, prompts, seed).prompts
    cache = ResponseCache((cache_dir or default_cache_dir()) if use_cache else None)
    spending = Spending()
    asker = Asker(cache, budget, max_tokens, spending)
    backends: list[Backend] = []
    try:
        for index, spec in enumerate([suspect, *against, *controls]):
            backends.append(
                open_backend(
                    spec,
                    model=model if index == 0 else None,
                    api_key_env=api_key_env,
                    rate_per_s=rate_per_s,
                    threads=threads,
                    library=library,
                    prompt_set=prompt_set,
                    timeout_s=timeout_s,
                )
            )
        replies, mode, stopped = collect_answers(backends, prompt_list, asker, progress)
    finally:
        for backend in backends:
            backend.close()
    answered = len(replies)
    if answered < MIN_PROMPTS:
        raise BudgetExhaustedError(
            f"the budget of {budget} requests was spent after {answered} of {len(prompt_list)} prompts "
            f"(at least {MIN_PROMPTS} are needed); the answers are cached: rerun with a larger --budget"
        )
    notes: list[str] = []
    if stopped:
        notes.append(f"budget spent: decided on {answered} of {len(prompt_list)} prompts")
    if mode == CHAT:
        notes.append("the endpoint has no /v1/completions: every model was asked in chat mode, text only")
    labels = [b.label for b in backends]
    result = _decide(replies, labels, len(against), alpha, seed)
    return ProbeResult(
        suspect=labels[0],
        candidates=result[0],
        controls=labels[1 + len(against) :],
        control_agreements=result[1],
        prompt_set=prompt_set,
        seed=seed,
        prompts_used=answered,
        prompts_planned=len(prompt_list),
        max_tokens=max_tokens,
        mode=mode,
        alpha=alpha,
        spending=spending,
        budget=budget,
        seconds=time.monotonic() - started,
        notes=notes,
    )


def collect_answers(
    backends: list[Backend], prompts: Sequence[str], asker: Asker, progress: Progress | None
) -> tuple[list[list[Reply]], str, bool]:
    """Ask every model prompt by prompt (so a spent budget leaves whole prompts answered), in
    completion mode, or in chat mode for all when the first endpoint asked has no completions
    (or a recorded profile holds chat answers only)."""
    if not all(backend.supports(COMPLETION) for backend in backends):
        return _ask_all(backends, prompts, asker, progress, CHAT)
    try:
        return _ask_all(backends, prompts, asker, progress, COMPLETION)
    except ModeUnavailableError:
        return _ask_all(backends, prompts, asker, progress, CHAT)


def _ask_all(
    backends: list[Backend], prompts: Sequence[str], asker: Asker, progress: Progress | None, mode: str
) -> tuple[list[list[Reply]], str, bool]:
    replies: list[list[Reply]] = []
    for number, prompt in enumerate(prompts):
        row: list[Reply] = []
        for backend in backends:
            try:
                reply = asker.ask(backend, prompt, mode)
            except ModeUnavailableError:
                if replies or row:
                    # Another model lacks /v1/completions: mixed modes would not compare.
                    raise EndpointError(
                        f"{backend.label} serves no /v1/completions while other models answered completions"
                    ) from None
                raise
            if reply is None:
                return replies, mode, True
            row.append(reply)
        replies.append(row)
        if progress is not None:
            progress(number + 1, len(prompts))
    return replies, mode, False


def _decide(
    replies: list[list[Reply]], labels: list[str], candidates: int, alpha: float, seed: int
) -> tuple[list[CandidateVerdict], dict[str, float]]:
    suspect = [row[0] for row in replies]
    columns = [[row[j] for row in replies] for j in range(len(labels))]

    def agreement(j: int) -> np.ndarray:
        return np.array([text_agreement(s.text, r.text) for s, r in zip(suspect, columns[j], strict=True)])

    control_columns = list(range(1 + candidates, len(labels)))
    control_scores = np.stack([agreement(j) for j in control_columns], axis=1)
    control_agreements = {
        labels[j]: float(control_scores[:, k].mean()) for k, j in enumerate(control_columns)
    }
    raw: list[float] = []
    parts: list[tuple[np.ndarray, float, float | None]] = []
    for j in range(1, 1 + candidates):
        scores = np.column_stack([agreement(j), control_scores])
        raw.append(exchangeable_p(scores, seed=seed + j))
        exact = float(
            np.mean([exact_match(s.text, r.text) for s, r in zip(suspect, columns[j], strict=True)])
        )
        distances = [
            d
            for s, r in zip(suspect, columns[j], strict=True)
            if (d := first_token_distance(s.first_top_logprobs, r.first_top_logprobs)) is not None
        ]
        parts.append((scores, exact, float(np.median(distances)) if distances else None))
    adjusted = holm(raw)
    verdicts: list[CandidateVerdict] = []
    for k, (scores, exact, distance) in enumerate(parts):
        upper = excess_upper_bound(scores, alpha)
        related = adjusted[k] < alpha
        if related and exact > SAME_MODEL_EXACT and (distance is None or distance <= SAME_MODEL_LOGPROB_NATS):
            verdict = "same-model"
            reason = f"{exact:.0%} of continuations identical" + (
                f", first-token log-probs {distance:.2f} nats apart" if distance is not None else ""
            )
        elif related:
            verdict = "derived"
            reason = (
                f"agrees with the suspect beyond the controls (p {adjusted[k]:.2g}) but is not the same model"
            )
        elif upper < NOT_DERIVED_MARGIN:
            verdict = "not-derived"
            reason = (
                f"no more agreement than unrelated controls (excess at most {upper:.2f} at {1 - alpha:.0%})"
            )
        else:
            verdict = "inconclusive"
            reason = f"p {adjusted[k]:.2g} but an excess of up to {upper:.2f} cannot be ruled out: ask more prompts"
        verdicts.append(
            CandidateVerdict(
                candidate=labels[1 + k],
                verdict=verdict,
                p_value=adjusted[k],
                p_raw=raw[k],
                agreement=float(scores[:, 0].mean()),
                control_agreement=float(scores[:, 1:].mean()),
                excess_upper=upper,
                exact_match=exact,
                logprob_distance=distance,
                reason=reason,
            )
        )
    return verdicts, control_agreements
