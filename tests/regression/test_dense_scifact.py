"""Dense and hybrid effectiveness on SciFact (slow: encodes 5,183 documents; run with -m slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared_collection
from tests.regression.test_bm25_lucene_parity import _eval_json

pytest.importorskip("sentence_transformers", reason="the dense extra is not installed")
pytestmark = [pytest.mark.regression, pytest.mark.slow]


def test_dense_and_hybrid_on_scifact(tmp_path: Path, monkeypatch, capsys) -> None:
    dataset = shared_collection("scifact")
    pipelines = ["dense(precision=fp32)", "rrf(bm25,dense(precision=fp32))",
                 "linear(bm25,dense(precision=fp32),alpha=0.5)"]
    args = [str(dataset), "--metrics", "nDCG@10", "--index", str(tmp_path / "index")]
    for pipeline in pipelines:
        args += ["--pipeline", pipeline]
    systems = _eval_json(args, monkeypatch, capsys)["systems"]
    dense, rrf, linear = (s["metrics"]["nDCG@10"] for s in systems)
    assert abs(dense - 0.645) <= 0.005, f"dense nDCG@10 {dense:.4f}, MTEB 0.645"
    assert rrf >= 0.71, f"rrf nDCG@10 {rrf:.4f}"
    assert linear >= 0.72, f"linear nDCG@10 {linear:.4f}"
