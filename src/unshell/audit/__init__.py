"""Disclosure audits: detected lineage (weights, architecture, tokenizer, code) against declared.

Like ``unshell.convert``, the package's entry point shares its name: ``unshell.audit(path)`` is
the function (`report.audit`). Import submodules with ``from unshell.audit.code import ...``.
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
