"""The settings of ``rankstack adapt`` and what reads them: the time budget, the hybrid first stage."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from rankstack.errors import RankstackError
from rankstack.models.loading import canonical_model_id
from rankstack.train.pseudo_queries import DEFAULT_SOURCE

MIN_DOCUMENTS = 200
MAX_AUTO_QUERIES = 1000  # queries=None sizes the count to the budget, up to this many
MIN_AUTO_QUERIES = 50  # fewer than this would not be worth training on: the budget is refused instead
HYBRIDS = ("rrf", "zscore")


class AdaptError(RankstackError):
    """Adaptation cannot run as asked (a budget too short, no teacher available)."""


@dataclass(frozen=True, kw_only=True)
class AdaptSettings:
    """Arguments of :func:`adapt`; the CLI's defaults."""

    teacher: str | None = None
    """A cross-encoder (local directory or Hugging Face id); None: the best cached one (TEACHER_CANDIDATES)."""
    labels: str = "auto"
    """What labels the candidates (``labellers.LABELS``): the teacher, the hybrid first stage (no teacher
    needed), or ``auto``: the teacher when there is one, else the hybrid."""
    base: str = "default"
    """The bi-encoder adapted (and the dense half of the hybrid)."""
    source: str = DEFAULT_SOURCE
    generator: str | None = None
    generator_model: str = "default"
    queries: int | None = None
    heldout: float = 0.1
    depth: int = 16
    negatives: int = 4
    hybrid: str = "rrf"
    """Data: what of a document is its query (or a generator's query), how many documents give one (None: as
    many as the budget allows, measured on this machine, up to MAX_AUTO_QUERIES), the share held out for
    the self-check, candidates per query, candidates trained on per query, the hybrid."""
    budget_seconds: float = 1800.0
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-5
    max_length: int = 256
    save_steps: int = 50
    seed: int = 42
    reranker: bool = False
    min_gain: float = 0.0
    """Optimisation: the whole command's time budget; the reranker's window; ``min_gain``: how much the
    adapted model must agree better with the teacher than the unadapted one to be recommended."""

    def data_fingerprint(self) -> str:
        keys = ("teacher", "labels", "base", "source", "generator", "generator_model", "queries", "heldout", "depth",
                "hybrid", "seed", "max_length")
        return hashlib.sha1(json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True).encode()).hexdigest()[:16]


def parse_budget(text: str) -> float:
    """Seconds in ``30m``, ``90s``, ``1h30m``, ``1.5h`` or a plain number of seconds."""
    cleaned = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise RankstackError(f"cannot read the budget {text!r}; write it like 30m, 90s, 1h30m or 1.5h")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def hybrid_pipeline(hybrid: str, base: str) -> str:
    dense = "dense" if canonical_model_id(base) == canonical_model_id("default") else f"dense(model={base})"
    if hybrid == "rrf":
        return f"rrf(bm25,{dense})"
    if hybrid == "zscore":
        return f"linear(bm25,{dense},norm=zscore)"
    raise RankstackError(f"unknown hybrid {hybrid!r}; pass --hybrid {' or '.join(HYBRIDS)}")
