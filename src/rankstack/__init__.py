"""rankstack: multi-stage text ranking with pretrained transformers.

The core (BM25, pipelines, evaluation) is light: importing rankstack never imports torch.
"""

from __future__ import annotations

__version__ = "0.1.0"

from rankstack.errors import RankstackError  # noqa: E402
from rankstack.types import Doc, Qrel, Query, Run, ScoredDoc  # noqa: E402

__all__ = ["__version__", "Doc", "Query", "ScoredDoc", "Qrel", "Run", "RankstackError"]
