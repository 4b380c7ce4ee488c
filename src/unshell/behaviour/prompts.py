"""Versioned prompt sets: package data files that never change once published.

A probe's answers are only comparable when every model saw the same prompts, so a prompt set is
named and versioned (``general-v1``), and the prompts a probe uses are drawn from it by a seeded
shuffle: the same set, seed and count give the same prompts on every machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..errors import UsageError

DEFAULT_PROMPT_SET = "general-v1"


@dataclass(frozen=True)
class PromptSet:
    name: str  # e.g. "general-v1"
    seed: int
    prompts: tuple[str, ...]


def available_prompt_sets() -> list[str]:
    folder = resources.files(__package__).joinpath("prompts")
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def load_prompts(name: str = DEFAULT_PROMPT_SET, count: int | None = None, seed: int = 0) -> PromptSet:
    """``count`` prompts of set ``name`` in a seeded order (all of them when ``count`` is None)."""
    if name not in available_prompt_sets():
        raise UsageError(f"no prompt set {name!r} (available: {', '.join(available_prompt_sets())})")
    document = json.loads(resources.files(__package__).joinpath("prompts", f"{name}.json").read_text("utf-8"))
    prompts: list[str] = document["prompts"]
    if count is not None and not 1 <= count <= len(prompts):
        raise UsageError(f"prompt set {name} holds {len(prompts)} prompts: ask for 1 to {len(prompts)}")
    order = np.random.default_rng(seed).permutation(len(prompts))
    chosen = [prompts[i] for i in order[: count if count is not None else len(prompts)]]
    return PromptSet(name, seed, tuple(chosen))
