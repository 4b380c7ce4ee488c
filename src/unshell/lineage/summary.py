"""What a lineage comparison reports about each side: a `ModelSummary`.

A comparison against a fingerprint has no checkpoint for A, only what the fingerprint recorded;
both a full inspection (`ModelSummary.of`) and a fingerprint provide this summary, so
`CompareResult` never needs a stand-in inspection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..inspection import InspectResult

__all__ = ["ModelSummary"]


@dataclass(frozen=True)
class ModelSummary:
    """One side of a comparison: where it came from, its architecture and storage, as reports show them."""

    path: str
    format: str
    family: str | None
    confidence: str  # the recognition's confidence, or "fingerprint" when A is a fingerprint
    config: dict[str, Any] = field(default_factory=dict)
    parameters: int = 0
    dtypes: dict[str, dict[str, int]] = field(default_factory=dict)
    # Tensors not under their reference names (`InspectResult.to_dict()["renamed"]` entries);
    # None when unknown (a fingerprint does not record them).
    renamed: list[dict[str, Any]] | None = None

    @classmethod
    def of(cls, result: InspectResult, path: str = "") -> ModelSummary:
        """The summary of a full inspection."""
        return cls(
            path=path or result.path,
            format=result.format,
            family=result.recognition.family,
            confidence=result.recognition.confidence,
            config=dict(result.recognition.config),
            parameters=result.parameters,
            dtypes=dict(result.dtypes),
            renamed=result.to_dict()["renamed"],
        )

    @property
    def renamed_count(self) -> int | None:
        return None if self.renamed is None else len(self.renamed)
