"""unshell: is this model a shell of another one?

Every CLI command is one call here::

    import unshell
    result = unshell.inspect("path/to/model")      # headers only
    result.family, result.to_dict()["renamed"]
"""

from __future__ import annotations

from .errors import UnshellError
from .formats import open_checkpoint
from .inspection import InspectResult, inspect

__version__ = "0.1.0"

__all__ = ["InspectResult", "UnshellError", "__version__", "inspect", "open_checkpoint"]
