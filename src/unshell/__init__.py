"""unshell: is this model a shell of another one?

Every CLI command is one call here::

    import unshell
    result = unshell.inspect("path/to/model")      # headers only
    result.family, result.to_dict()["renamed"]
    verdict = unshell.compare("base", "suspect")     # weight lineage
    verdict.verdict, verdict.p_value, verdict.how
    merge = unshell.compare_merge("suspect", ["parent1", "parent2"])   # is it a merge of them?
    merge.merged, merge.fit.weights
    unshell.convert("yi-model", to="llama", output="yi-llama")   # reference names back, verified
    report = unshell.audit("suspect", against="base")   # disclosure: detected vs declared
    report.level, [f.message for f in report.findings]
    library = unshell.Library("fleet.sqlite")          # fingerprints of known models
    library.add(unshell.fingerprint("base"))
    unshell.search("suspect", library).matches         # which of them the suspect came from
    unshell.scan(["/models"], output="scan.jsonl")     # every checkpoint under some folders
    unshell.probe("http://host/v1#name", against=["base.gguf"], controls=["other.gguf"])  # black-box
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .auditing import AuditResult, audit
from .conversion import ConversionResult, convert
from .errors import UnshellError
from .formats import open_checkpoint
from .inspection import InspectResult, inspect
from .lineage.compare import CompareResult, compare
from .scanning import ScanSummary, scan

if TYPE_CHECKING:
    from .behaviour import ProbeResult, probe
    from .library import Library, SearchResult, search
    from .lineage.fingerprint import Fingerprint, fingerprint
    from .lineage.merges import MergeResult, compare_merge

__version__ = "0.1.0"

# The library and fingerprint modules load on first use: every CLI command imports this package,
# and most never need them (about 12 ms of start-up).
_LAZY = {
    "Library": "library",
    "SearchResult": "library",
    "search": "library",
    "Fingerprint": "lineage.fingerprint",
    "fingerprint": "lineage.fingerprint",
    "ProbeResult": "behaviour",
    "probe": "behaviour",
    "MergeResult": "lineage.merges",
    "compare_merge": "lineage.merges",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AuditResult",
    "CompareResult",
    "ConversionResult",
    "Fingerprint",
    "InspectResult",
    "Library",
    "MergeResult",
    "ProbeResult",
    "ScanSummary",
    "SearchResult",
    "UnshellError",
    "__version__",
    "audit",
    "compare",
    "compare_merge",
    "convert",
    "fingerprint",
    "inspect",
    "open_checkpoint",
    "probe",
    "scan",
    "search",
]
