"""The label-free self-check of ``rankstack adapt``: agreement with the teacher on held-out pseudo-queries
(nDCG@10 against the teacher's ranking as graded labels), the decision drawn from it, the suggested pipeline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankstack.evaluate import evaluate
from rankstack.train.adapt_lists import LabelledList
from rankstack.train.adapt_settings import AdaptSettings, hybrid_pipeline
from rankstack.train.teachers import score_pairs
from rankstack.types import Qrel, Run

SELF_CHECK = "nDCG@10 against the teacher's ranking as graded labels (teacher rank 1: 3, 2-3: 2, 4-10: 1)"


def teacher_grades(scores: Sequence[float]) -> list[int]:
    """Grades from the teacher's ranking of one list: rank 1 -> 3, ranks 2-3 -> 2, ranks 4-10 -> 1, else 0."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    grades = [0] * len(scores)
    for rank, i in enumerate(order):
        grades[i] = 3 if rank == 0 else 2 if rank < 3 else 1 if rank < 10 else 0
    return grades


def source_ranks(scores: Sequence[Sequence[float]]) -> list[int]:
    """The rank of each list's first candidate (a pseudo-query's source document) by its scores: 1 + how many
    others score higher (a tie goes to the source)."""
    return [1 + sum(1 for s in row[1:] if s > row[0]) for row in scores]


def agreement(lists: Sequence[LabelledList], predicted: Sequence[Sequence[float]]) -> float:
    """Mean nDCG@10 of the predicted orderings against the teacher's grades."""
    run = Run.from_scores({x.query.query_id: dict(zip(x.doc_ids, map(float, p), strict=True))
                           for x, p in zip(lists, predicted, strict=True)})
    qrels = [Qrel(x.query.query_id, d, g) for x in lists for d, g in zip(x.doc_ids, teacher_grades(x.scores),
                                                                          strict=True) if g > 0]
    return float(evaluate(run, qrels, ["nDCG@10"]).aggregate["nDCG@10"])


def teacher_agreement(model: Any, kind: str, lists: Sequence[LabelledList]) -> float:
    """The self-check estimate of a bi-encoder (``kind`` "bi-encoder") or cross-encoder on held-out lists."""
    if not lists:
        return float("nan")
    if kind == "bi-encoder":
        queries = model.encode([x.query.text for x in lists], normalize_embeddings=True, convert_to_numpy=True,
                               show_progress_bar=False)
        predicted = []
        for x, vector in zip(lists, queries, strict=True):
            docs = model.encode(x.texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            predicted.append((docs @ vector).tolist())
    else:
        predicted = [score_pairs(model, [(x.query.text, t) for t in x.texts]).tolist() for x in lists]
    return agreement(lists, predicted)


def self_check(base: Any, student: Any, reranker: Any | None, heldout: Sequence[LabelledList],
               settings: AdaptSettings) -> dict[str, Any]:
    """The label-free estimates and the decision drawn from them (see the module's docstring)."""
    base_score = teacher_agreement(base, "bi-encoder", heldout)
    adapted = teacher_agreement(student, "bi-encoder", heldout)
    check: dict[str, Any] = {"measure": SELF_CHECK, "heldout_queries": len(heldout),
                             "base": round(base_score, 4), "adapted": round(adapted, 4)}
    if not heldout or math.isnan(base_score) or math.isnan(adapted):
        check.update(recommend_bi_encoder=False, reason="no held-out pseudo-queries to check the adapted model on; "
                     "the unadapted model is suggested")
    elif adapted >= base_score + settings.min_gain:
        check.update(recommend_bi_encoder=True, reason=f"the adapted bi-encoder agrees with the teacher at least as "
                     f"well as the unadapted one ({adapted:.4f} >= {base_score:.4f} + {settings.min_gain})")
    else:
        check.update(recommend_bi_encoder=False, reason=f"the adapted bi-encoder agrees with the teacher less than "
                     f"the unadapted one ({adapted:.4f} < {base_score:.4f} + {settings.min_gain}); it is saved but "
                     "not recommended, and the suggested pipeline keeps the unadapted model")
    if reranker is not None:
        reranked = teacher_agreement(reranker, "cross-encoder", heldout)
        first = adapted if check["recommend_bi_encoder"] else base_score
        check["reranker"] = round(reranked, 4)
        check["recommend_reranker"] = bool(heldout) and not math.isnan(reranked) and reranked > first
        check["reranker_reason"] = (f"the reranker agrees with the teacher better than the first stage's model "
                                    f"({reranked:.4f} > {first:.4f})" if check["recommend_reranker"] else
                                    f"the reranker does not agree with the teacher better than the first stage's "
                                    f"model ({reranked:.4f} <= {first:.4f}); it is saved but not in the pipeline")
    return check


def suggested_pipeline(check: dict[str, Any], settings: AdaptSettings, output: Path) -> str:
    model = str(output / "bi-encoder") if check["recommend_bi_encoder"] else settings.base
    pipeline = hybrid_pipeline(settings.hybrid, model)
    if check.get("recommend_reranker"):
        pipeline = f"{pipeline}%100>>cross_encoder(model={output / 'reranker'})"
    return pipeline
