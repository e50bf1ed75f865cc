"""The HTTP API over a tiny BM25 index, with FastAPI's TestClient: every route and documented error."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from rankstack.index import Index  # noqa: E402
from rankstack.serve.app import create_app  # noqa: E402
from rankstack.serve.service import SearchService  # noqa: E402


@pytest.fixture
def client(tiny_index: Index):
    with TestClient(create_app(SearchService.open(tiny_index))) as test_client:
        yield test_client


def test_health_and_pipelines(client: TestClient) -> None:
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["documents"] == 6
    listing = client.get("/v1/pipelines").json()
    assert listing["default"] == "bm25(k1=0.9,b=0.4)"
    assert {"bm25", "dense", "rrf", "linear", "run"} <= set(listing["stages"])


def test_search_get_and_post_agree(client: TestClient) -> None:
    got = client.get("/v1/search", params={"q": "parrot feathers", "k": 2}).json()
    posted = client.post("/v1/search", json={"query": "parrot feathers", "k": 2}).json()
    assert [h["doc_id"] for h in got["hits"]] == [h["doc_id"] for h in posted["hits"]]
    top = got["hits"][0]
    assert top["doc_id"] == "d5" and top["rank"] == 1 and top["title"] == "Birds"
    assert "<mark>feathers</mark>" in top["snippet_html"]
    assert list(got["timings_ms"]) == ["bm25(k1=0.9,b=0.4)"]
    assert got["pipeline"] == "bm25(k1=0.9,b=0.4)"


def test_search_with_a_pipeline_string(client: TestClient) -> None:
    body = client.post("/v1/search", json={"query": "cats", "k": 3, "pipeline": "bm25(k1=1.2,b=0.75)%2"}).json()
    assert body["pipeline"] == "bm25(k1=1.2,b=0.75)%2" and len(body["hits"]) <= 2


def test_document_route(client: TestClient) -> None:
    assert client.get("/v1/docs/d2").json() == {"doc_id": "d2", "title": "Dogs",
                                                "text": "A dog is a loyal companion; dogs bark at cats."}


@pytest.mark.parametrize(
    ("method", "url", "payload", "status", "message"),
    [
        ("post", "/v1/search", {"query": "", "k": 3}, 422, "the query is empty"),
        ("post", "/v1/search", {"query": "   ", "k": 3}, 422, "the query is empty"),
        ("post", "/v1/search", {"query": "x" * 100_000}, 422, "at most 1000 characters"),
        ("post", "/v1/search", {"query": "cats", "k": 0}, 422, "greater than or equal to 1"),
        ("post", "/v1/search", {"query": "cats", "k": 100_000}, 422, "less than or equal to 1000"),
        ("post", "/v1/search", {"query": "cats", "pipeline": "bm25 >> nosuchstage"}, 400, "unknown stage"),
        ("post", "/v1/search", {"query": "cats", "pipeline": "bm25(("}, 400, "expected"),
        ("post", "/v1/search", {"query": "cats", "colour": "red"}, 422, "Extra inputs are not permitted"),
        ("get", "/v1/search?q=&k=3", None, 422, "the query is empty"),
        ("get", "/v1/search?q=cats&k=abc", None, 422, "valid integer"),
        ("get", "/v1/docs/missing", None, 404, "no document with id 'missing'"),
        ("get", "/v1/docs/../../etc/passwd", None, 404, ""),
        ("get", "/v1/docs/..%2F..%2Fetc%2Fpasswd", None, 404, "no document with id '../../etc/passwd'"),
        ("get", "/v1/nothing-here", None, 404, "Not Found"),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(client: TestClient, method, url, payload, status,
                                                                  message) -> None:
    response = client.post(url, json=payload) if method == "post" else client.get(url)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
    assert client.get("/v1/search", params={"q": "cats"}).status_code == 200


def test_malformed_json_body(client: TestClient) -> None:
    response = client.post("/v1/search", content=b'{"query": "cats",', headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["type"] == "ValidationError"


def test_openapi_schema_lists_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/search", "/v1/docs/{doc_id}", "/v1/pipelines", "/v1/health"} <= set(paths)


def test_web_page_renders_highlighted_results_and_documents(client: TestClient) -> None:
    page = client.get("/", params={"q": "loyal dogs"})
    assert page.status_code == 200
    assert "<mark>loyal</mark>" in page.text and 'href="/doc?id=d2&amp;q=loyal%20dogs"' in page.text
    document = client.get("/doc/d2", params={"q": "loyal dogs"})
    assert document.status_code == 200 and "<mark>dogs</mark>" in document.text
    assert client.get("/", params={"q": "cats", "pipeline": "bm25>>"}).status_code == 400
    assert client.get("/doc/nope").status_code == 404
    assert "http://" not in client.get("/").text.replace("http://www.w3.org", "")  # no CDN: works offline


def test_concurrent_requests_are_micro_batched(tiny_index: Index) -> None:
    import asyncio

    service = SearchService.open(tiny_index)

    async def many() -> list:
        return await asyncio.gather(*(service.search(q, 3) for q in ["cats", "dogs", "parrot", "fish"] * 8))

    results = asyncio.run(many())
    assert [r.hits[0]["doc_id"] for r in results[:4]] == ["d1", "d2", "d5", "d4"]
    sizes = next(iter(service._batchers.values())).batch_sizes
    assert sum(sizes) == 32 and max(sizes) > 1


@pytest.fixture
def writable(tiny_index: Index):
    with TestClient(create_app(SearchService.open(tiny_index, api_key="s3cret"))) as test_client:
        yield test_client


def test_writes_need_the_api_key_and_change_nothing_without_it(writable: TestClient, client: TestClient) -> None:
    body = {"title": "Hamsters", "text": "hamsters run on wheels"}
    assert writable.put("/v1/docs/n1", json=body).status_code == 401
    assert writable.put("/v1/docs/n1", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert writable.delete("/v1/docs/d1").status_code == 401
    assert client.put("/v1/docs/n1", json=body, headers={"X-API-Key": "s3cret"}).status_code == 403  # read-only
    assert writable.get("/v1/search", params={"q": "hamsters"}).json()["hits"] == []
    assert writable.get("/v1/docs/d1").status_code == 200


def test_put_and_delete_documents(writable: TestClient) -> None:
    auth = {"Authorization": "Bearer s3cret"}
    created = writable.put("/v1/docs/n1", json={"title": "Hamsters", "text": "hamsters run on wheels"}, headers=auth)
    assert created.status_code == 200 and created.json() == {"doc_id": "n1", "status": "created"}
    assert writable.get("/v1/search", params={"q": "hamsters"}).json()["hits"][0]["doc_id"] == "n1"
    updated = writable.put("/v1/docs/n1", json={"text": "gerbils instead"}, headers=auth).json()
    assert updated["status"] == "updated"
    assert writable.get("/v1/search", params={"q": "hamsters"}).json()["hits"] == []
    assert writable.delete("/v1/docs/n1", headers=auth).json() == {"doc_id": "n1", "status": "deleted"}
    assert writable.get("/v1/docs/n1").status_code == 404
    missing = writable.delete("/v1/docs/n1", headers=auth)
    assert missing.status_code == 404 and "nothing was deleted" in missing.json()["error"]["message"]
    bad = writable.put("/v1/docs/n2", json={"text": "x", "colour": "red"}, headers=auth)
    assert bad.status_code == 422
