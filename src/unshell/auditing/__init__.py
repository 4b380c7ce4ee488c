"""Disclosure audits: detected lineage (weights, architecture, tokenizer, code) against declared.

``unshell.audit(path)`` is the function (`report.audit`); this package is ``unshell.auditing``.
"""

from __future__ import annotations

from .code import (
    CodeFingerprint,
    CodeMatch,
    ReferenceIndex,
    code_provenance,
    code_similarity,
    find_model_code,
)
from .report import LEVELS, AuditResult, Finding, audit, audit_checkpoint

__all__ = [
    "LEVELS",
    "AuditResult",
    "CodeFingerprint",
    "CodeMatch",
    "Finding",
    "ReferenceIndex",
    "audit",
    "audit_checkpoint",
    "code_provenance",
    "code_similarity",
    "find_model_code",
]
