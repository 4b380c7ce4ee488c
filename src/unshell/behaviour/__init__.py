"""Black-box provenance: is the model behind this endpoint (or this GGUF) someone else's?

Core needs numpy and the standard library; local GGUF files need llama-cpp-python (the `probe`
extra).
"""

from __future__ import annotations

from .probe import VERDICTS, CandidateVerdict, ProbeResult, probe
from .prompts import DEFAULT_PROMPT_SET, available_prompt_sets, load_prompts

__all__ = [
    "DEFAULT_PROMPT_SET",
    "VERDICTS",
    "CandidateVerdict",
    "ProbeResult",
    "available_prompt_sets",
    "load_prompts",
    "probe",
]
