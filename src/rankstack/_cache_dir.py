"""Where rankstack keeps what it can rebuild: indexes built on demand, the demo, exported models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$RANKSTACK_CACHE``, else ``$XDG_CACHE_HOME/rankstack``, else ``~/.cache/rankstack``."""
    configured = os.environ.get("RANKSTACK_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rankstack"
