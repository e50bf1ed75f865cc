"""RM3 and Rocchio equal to Pyserini 0.21 (Anserini's Rm3Reranker / RocchioReranker) on real collections.

The reference figures were printed by ``benchmarks/prf_parity.py`` (Pyserini 0.21.0, Lucene index with stored
document vectors, k1=0.9, b=0.4, Anserini's default feedback settings, top 1,000), scored by rankstack's
evaluator, as here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared_collection

pytestmark = pytest.mark.regression

RM3 = "bm25>>rm3(fb_docs=10,fb_terms=10,original_weight=0.5)>>bm25"
ROCCHIO = "bm25>>rocchio(fb_docs=10,fb_terms=10,alpha=1.0,beta=0.75)>>bm25"
# (nDCG@10, AP, R@100) of Pyserini's run on the judged test queries
PYSERINI = {
    ("scifact", RM3): (0.6457, 0.5923, 0.9147), ("scifact", ROCCHIO): (0.6278, 0.5755, 0.9187),
    ("cranfield", RM3): (0.3688, 0.3199, 0.7351), ("cranfield", ROCCHIO): (0.3725, 0.3194, 0.7456),
    ("cisi", RM3): (0.3909, 0.2314, 0.4457), ("cisi", ROCCHIO): (0.4050, 0.2393, 0.4635),
    ("medline", RM3): (0.6956, 0.5936, 0.8578), ("medline", ROCCHIO): (0.7081, 0.6010, 0.8649),
}
TOLERANCE = 0.0005  # measured: equal to four decimals on all eight (the issue asked for 0.005)
MEASURES = ("nDCG@10", "AP", "R@100")


@pytest.mark.parametrize("name", ["scifact", "cranfield", "cisi", "medline"])
def test_feedback_matches_pyserini(name: str, tmp_path: Path) -> None:
    from rankstack.evaluate import evaluate
    from rankstack.index import Index, build_index
    from rankstack.io import BeirDataset, read_corpus
    from rankstack.stages import SearchContext, parse_pipeline

    dataset = BeirDataset.open(shared_collection(name))
    qrels = dataset.qrels("test")
    queries = dataset.queries({q.query_id for q in qrels})
    index = Index.open(build_index(read_corpus(dataset.root), tmp_path / "index"))
    context = SearchContext(top_k=1000, ignore_identical_ids=index.ignore_identical_ids)
    for pipeline in (RM3, ROCCHIO):
        run = parse_pipeline(pipeline, index).transform(queries, context=context)
        measured = evaluate(run, qrels, list(MEASURES)).aggregate
        expected = dict(zip(MEASURES, PYSERINI[(name, pipeline)], strict=True))
        print(f"\n{name} {pipeline.split('>>')[1]}: {measured} Pyserini {expected}")
        for measure in MEASURES:
            assert abs(measured[measure] - expected[measure]) <= TOLERANCE, (name, pipeline, measure, measured)
