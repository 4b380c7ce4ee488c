"""Every environment variable unshell reads, in one place (the tests isolate each of them)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "CACHE_DIR_ENV",
    "DEBUG_ENV",
    "HF_HOME_ENV",
    "HF_HUB_CACHE_ENV",
    "HOME_ENV",
    "XDG_CACHE_ENV",
    "cache_dir",
    "debug",
    "unshell_home",
]

HOME_ENV = "UNSHELL_HOME"
"""Where the default fingerprint library lives (``$UNSHELL_HOME/library.sqlite``); default ``~/.cache/unshell``."""

CACHE_DIR_ENV = "UNSHELL_CACHE_DIR"
"""Where derived caches go (the model-code reference index); default ``$XDG_CACHE_HOME/unshell``."""

XDG_CACHE_ENV = "XDG_CACHE_HOME"

HF_HUB_CACHE_ENV = "HF_HUB_CACHE"
"""The Hugging Face cache that repo ids are looked up in (unshell never downloads)."""

HF_HOME_ENV = "HF_HOME"
"""``$HF_HOME/hub`` when ``HF_HUB_CACHE`` is unset; default ``~/.cache/huggingface``."""

DEBUG_ENV = "UNSHELL_DEBUG"
"""Set to show the traceback of an internal error (exit 70) instead of one line."""


def unshell_home() -> Path:
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser() if home else Path.home() / ".cache" / "unshell"


def cache_dir() -> Path:
    base = os.environ.get(CACHE_DIR_ENV)
    if base:
        return Path(base)
    xdg = os.environ.get(XDG_CACHE_ENV)
    return (Path(xdg) if xdg else Path.home() / ".cache") / "unshell"


def debug() -> bool:
    return bool(os.environ.get(DEBUG_ENV))
