"""Importing optional dependencies with an error that names the extra to install.

Used by every layer (the index for FAISS, evaluation for plots, the service for FastAPI), so it sits
at the bottom, next to the error tree.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from rankstack.errors import MissingExtraError


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import an optional dependency, or raise an error naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(feature, extra, module.split(".")[0]) from None
