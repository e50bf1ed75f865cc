"""What HTTP clients may run: presets with tuned parameters by default, nothing from the server's disk."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from rankstack.index import Index  # noqa: E402
from rankstack.io import write_run  # noqa: E402
from rankstack.serve.app import create_app  # noqa: E402
from rankstack.serve.service import MAX_CACHED_PIPELINES, SearchService  # noqa: E402
from rankstack.types import Run  # noqa: E402


def _client(index: Index, **options) -> TestClient:
    return TestClient(create_app(SearchService.open(index, **options)))


def _search(client: TestClient, pipeline: str):  # noqa: ANN202
    return client.get("/v1/search", params={"q": "cats", "k": 3, "pipeline": pipeline})


@pytest.mark.parametrize("pipeline", ["bm25", "bm25(k1=1.2,b=0.75)", "bm25%2", "bm25(b=0.1)%50%3", "bm25>>rm3>>bm25",
                                      "bm25>>rm3(fb_docs=3,original_weight=0.5)>>bm25%5"])
def test_presets_with_tuned_parameters_are_allowed(tiny_index: Index, pipeline: str) -> None:
    with _client(tiny_index) as client:
        assert _search(client, pipeline).status_code == 200


@pytest.mark.parametrize("pipeline", [
    "run(path=/etc/passwd)", "run(path=/etc/no-such-file)", "run(path=/dev/zero)",
    "dense(model=/tmp)", "bm25%100>>cross_encoder(model=/tmp)", "bm25%100>>mono_t5(model=t5-small)",
    "rrf(bm25,bm25)", "bm25%5000", "bm25>>bm25", "bm25>>rm3(filter_terms=false)>>bm25",
])
def test_other_pipelines_are_refused_without_touching_anything(tiny_index: Index, pipeline: str) -> None:
    with _client(tiny_index) as client:
        answer = _search(client, pipeline)
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert "root:" not in message and "No such file" not in message  # no contents, no existence
    assert "configured pipelines only" in message or "deeper than this server allows" in message


def test_allow_any_pipeline_keeps_files_and_models_within_the_roots(tiny_index: Index, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    write_run(Run.from_scores({"0": {"d1": 2.0, "d2": 1.0}}), root / "mine.run")
    with _client(tiny_index, allow_any_pipeline=True, data_root=root) as client:
        assert _search(client, f"run(path={root / 'mine.run'})").status_code == 200
        assert _search(client, "rrf(bm25,bm25(k1=2))").status_code == 200
        outside = _search(client, "run(path=/etc/passwd)")
        assert outside.status_code == 400 and "data root" in outside.json()["error"]["message"]
        sneaky = _search(client, f"run(path={root}/../../../etc/passwd)")
        assert sneaky.status_code == 400
        model = _search(client, "bm25%10>>cross_encoder(model=/tmp)")
        assert model.status_code == 400 and "not one this server was configured with" in model.text


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_a_thousand_pipeline_variants_leave_memory_bounded(tiny_index: Index) -> None:
    # Each variant builds a pipeline, a micro-batcher and a BM25 score matrix; all three caches are
    # bounded, so after the first few dozen variants memory stops growing.
    service = SearchService.open(tiny_index)
    with TestClient(create_app(service)) as client:
        for i in range(100):
            assert _search(client, f"bm25(k1={0.5 + i / 1000})").status_code == 200
        warm = _rss_mb()
        for i in range(100, 1100):
            assert _search(client, f"bm25(k1={0.5 + i / 1000})").status_code == 200
        grown = _rss_mb() - warm
    assert len(service._pipelines) <= MAX_CACHED_PIPELINES and len(service._batchers) <= MAX_CACHED_PIPELINES
    assert len(tiny_index.segment._retrievers) <= 8
    print(f"\nRSS growth over 1,000 pipeline variants after 100 to warm up: {grown:.1f} MB")
    assert grown < 20, f"RSS grew {grown:.1f} MB over 1,000 variants (bound: 20 MB)"
