"""Record a model's behavioural profile (its answers to a fixed prompt set) in the library.

The answers are asked exactly as `probe` asks them (greedy, the same settings, completion mode
with log-probs, else chat), through the same resumable response cache and budget, so a profile
read back by ``--against library:NAME`` gives the probe what the live model would have.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BudgetExhaustedError, UsageError
from ..library import Library, existing_library
from ..library.profiles import BehaviourProfile, profiles_of, save_profile
from .backends import DEFAULT_API_KEY_ENV, DEFAULT_TIMEOUT_S, LIBRARY_PREFIX, open_backend
from .cache import ResponseCache, default_cache_dir
from .probe import (
    DEFAULT_BUDGET,
    DEFAULT_MAX_TOKENS,
    DEFAULT_PROMPTS,
    Asker,
    ProbeResult,
    Progress,
    Spending,
    collect_answers,
    probe,
)
from .prompts import DEFAULT_PROMPT_SET, load_prompts


@dataclass(frozen=True)
class ProfileRecorded:
    library: str
    profile: BehaviourProfile
    seed: int
    spending: Spending
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "library": self.library,
            "profile": {**self.profile.to_dict(), "seed": self.seed},
            "spent": {**self.spending.to_dict(), "seconds": round(self.seconds, 3)},
        }


def record_profile(
    source: str,
    name: str,
    library: Library,
    *,
    model: str | None = None,
    prompts: int = DEFAULT_PROMPTS,
    prompt_set: str = DEFAULT_PROMPT_SET,
    seed: int = 0,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    budget: int = DEFAULT_BUDGET,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    api_key_env: str = DEFAULT_API_KEY_ENV,
    rate_per_s: float | None = None,
    threads: int | None = None,
    replace: bool = False,
    progress: Progress | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProfileRecorded:
    """Ask ``source`` (a GGUF path, or an endpoint ``URL#MODEL`` / URL with ``model``) the
    ``prompts`` prompts ``probe`` would ask with ``seed``, and store the answers as ``name``'s
    profile in ``library``."""
    if source.startswith(LIBRARY_PREFIX):
        raise UsageError("a profile is recorded from a model (GGUF file or endpoint), not from the library")
    if budget < 1 or max_tokens < 1:
        raise UsageError("the budget and max_tokens must be positive")
    started = time.monotonic()
    prompt_list = load_prompts(prompt_set, prompts, seed).prompts
    cache = ResponseCache((cache_dir or default_cache_dir()) if use_cache else None)
    spending = Spending()
    asker = Asker(cache, budget, max_tokens, spending)
    backend = open_backend(
        source, model=model, api_key_env=api_key_env, rate_per_s=rate_per_s, threads=threads
    )
    try:
        replies, mode, stopped = collect_answers([backend], prompt_list, asker, progress)
    finally:
        backend.close()
    if stopped:
        raise BudgetExhaustedError(
            f"the budget of {budget} requests was spent after {len(replies)} of {len(prompt_list)} prompts; "
            "the answers are cached: rerun with a larger --budget"
        )
    answers = {prompt: row[0].to_dict() for prompt, row in zip(prompt_list, replies, strict=True)}
    profile = save_profile(
        library, BehaviourProfile(name, prompt_set, max_tokens, mode, backend.label, answers), replace=replace
    )
    return ProfileRecorded(str(library.path), profile, seed, spending, time.monotonic() - started)


def search_profiles(
    suspect: str,
    controls: Sequence[str],
    *,
    library: str | Path | None = None,
    prompt_set: str = DEFAULT_PROMPT_SET,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    **options: Any,
) -> ProbeResult:
    """`probe` SUSPECT against every model whose profile the library holds for ``prompt_set`` at
    ``max_tokens`` (the controls excepted), Holm-adjusted across them: `search` for a suspect
    known only by its behaviour (an endpoint). ``options`` are `probe`'s."""
    with existing_library(library) as opened:
        names = sorted(
            {p.name for p in profiles_of(opened) if p.prompt_set == prompt_set and p.max_tokens == max_tokens}
        )
        where = str(opened.path)
    excluded = {c.removeprefix(LIBRARY_PREFIX) for c in controls if c.startswith(LIBRARY_PREFIX)}
    candidates = [LIBRARY_PREFIX + name for name in names if name not in excluded]
    if not candidates:
        raise UsageError(
            f"the library {where} holds no {prompt_set} profiles at {max_tokens} tokens besides the controls: "
            "record some with `unshell library profile NAME MODEL`"
        )
    return probe(
        suspect,
        candidates,
        controls,
        library=library,
        prompt_set=prompt_set,
        max_tokens=max_tokens,
        **options,
    )
