"""unshell: is this model a shell of another one?

Every CLI command is one call here::

    import unshell
    result = unshell.inspect("path/to/model")      # headers only
    result.family, result.to_dict()["renamed"]
    verdict = unshell.compare("base", "suspect")     # weight lineage
    verdict.verdict, verdict.p_value, verdict.how
    unshell.convert("yi-model", to="llama", output="yi-llama")   # reference names back, verified
    report = unshell.audit("suspect", against="base")   # disclosure: detected vs declared
    report.level, [f.message for f in report.findings]
"""

from __future__ import annotations

from .audit import AuditResult, audit
from .convert import ConversionResult, convert
from .errors import UnshellError
from .formats import open_checkpoint
from .inspection import InspectResult, inspect
from .lineage.compare import CompareResult, compare

__version__ = "0.1.0"

__all__ = [
    "AuditResult",
    "CompareResult",
    "ConversionResult",
    "InspectResult",
    "UnshellError",
    "__version__",
    "audit",
    "compare",
    "convert",
    "inspect",
    "open_checkpoint",
]
