"""rankstack: multi-stage text ranking with pretrained transformers.

The core (BM25, pipelines, evaluation) is light: importing rankstack never imports torch.
"""

from __future__ import annotations

from rankstack._version import __version__
from rankstack.errors import RankstackError
from rankstack.types import Doc, Qrel, Query, Run, ScoredDoc

__all__ = ["__version__", "Doc", "Query", "ScoredDoc", "Qrel", "Run", "RankstackError"]
