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
    library = unshell.Library("fleet.sqlite")          # fingerprints of known models
    library.add(unshell.fingerprint("base"))
    unshell.search("suspect", library).matches         # which of them the suspect came from
    unshell.scan(["/models"], output="scan.jsonl")     # every checkpoint under some folders
"""

from __future__ import annotations

from .audit import AuditResult, audit
from .convert import ConversionResult, convert
from .errors import UnshellError
from .formats import open_checkpoint
from .inspection import InspectResult, inspect
from .library import Library, SearchResult, search
from .lineage.compare import CompareResult, compare
from .lineage.fingerprint import Fingerprint, fingerprint
from .scan import ScanSummary, scan

__version__ = "0.1.0"

__all__ = [
    "AuditResult",
    "CompareResult",
    "ConversionResult",
    "Fingerprint",
    "InspectResult",
    "Library",
    "ScanSummary",
    "SearchResult",
    "UnshellError",
    "__version__",
    "audit",
    "compare",
    "convert",
    "fingerprint",
    "inspect",
    "open_checkpoint",
    "scan",
    "search",
]
