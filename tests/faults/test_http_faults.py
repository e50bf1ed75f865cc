"""Hostile HTTP clients: generated pipelines and ids thrown at the service.

Every answer must be a JSON error with a 4xx status or a correct success; a 5xx, a leaked file, a model
loaded on a client's word, or a write under an id that breaks the id rule is a failure. Each request is
one case of the fault tally.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from rankstack.ids import id_problem  # noqa: E402
from rankstack.index import Index, build_index  # noqa: E402
from rankstack.serve.app import create_app  # noqa: E402
from rankstack.serve.service import SearchService  # noqa: E402
from rankstack.types import Doc  # noqa: E402
from tests.faults._tally import CaseResult, FaultTally  # noqa: E402

SEED = 4242
SECRET = "s3cret-file-content-7f1c"
KEY = {"Authorization": "Bearer k"}
STAGES = ["bm25", "bm25(k1=2)", "dense", "run(path={secret})", "run(path=/dev/zero)", "run(path=/proc/self/environ)",
          "cross_encoder(model={secret_dir})", "mono_t5(model=t5-small)", "dense(model=../../etc)",
          "rrf({a},{b})", "linear({a},{b},alpha=nan)", "passages({a})", "bm25(k1=1e308)", "bm25(b=-0)",
          "bm25(k1=99999999999999999999999)", "nosuchstage", "bm25(zz=1)", "({a})", "{a}%{n}", "{a}>>{b}"]


def _pipeline(rng: random.Random, depth: int, secret: Path) -> str:
    template = rng.choice(STAGES if depth < 6 else STAGES[:3])
    return template.format(secret=secret, secret_dir=secret.parent, n=rng.choice([0, 1, 10, 1000, 10**9, -5]),
                           a=_pipeline(rng, depth + 1, secret) if "{a}" in template else "",
                           b=_pipeline(rng, depth + 1, secret) if "{b}" in template else "")


def hostile_pipelines(secret: Path) -> Iterator[str]:
    rng = random.Random(SEED)
    yield "(" * 700 + "bm25" + ")" * 700
    yield "bm25" + "%5" * 900
    yield "rrf(" + ",".join(["bm25"] * 400) + ")"
    yield "bm25(k1='" + "x" * 1500 + "')"
    yield "bm25\x00"
    yield "bm25(k1=\u0661)"  # an Arabic-Indic digit one
    for _ in range(150):
        yield _pipeline(rng, 0, secret)


def hostile_ids() -> Iterator[str]:
    yield from [" 1", "1 ", "a b", "a\tb", "a\nb", "\x00", "a\x7fb", ".", "..", "x" * 1001, "\u00a0lead",
                "\u2028", "%00", "a/../b", "../../etc/passwd", "é", "💥", "a#b", "a?b", "a%2Fb", "q1", "CON", "d1"]


@pytest.fixture(scope="module")
def service_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    root = tmp_path_factory.mktemp("http")
    secret = root / "secret.txt"
    secret.write_text(SECRET, encoding="utf-8")
    path = build_index([Doc("d1", "cats and dogs", "Pets"), Doc("d2", "fish in water")], root / "idx")
    service = SearchService.open(Index.open(path), api_key="k")
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        yield client, secret


def _judge(case: CaseResult, answer, allowed_success: bool) -> None:  # noqa: ANN001 - an httpx response
    if answer.status_code >= 500:
        case.unclear(f"status {answer.status_code}: {answer.text[:200]}")
    elif answer.status_code >= 400 and answer.headers.get("content-type", "").startswith("text/html"):
        pass  # the web page shows its errors in place
    elif answer.status_code >= 400:
        body = answer.json()
        if "error" not in body or not body["error"].get("message"):
            case.unclear(f"a {answer.status_code} without a JSON error message: {answer.text[:200]}")
    elif not allowed_success:
        case.wrong(f"accepted ({answer.status_code}): {answer.text[:200]}")
    if SECRET in answer.text:
        case.wrong("the answer leaks the content of a server file")


def test_hostile_pipelines(service_setup, fault_tally: FaultTally) -> None:
    client, secret = service_setup
    failures = []
    for pipeline in hostile_pipelines(secret):
        case = CaseResult(f"pipeline {pipeline[:80]!r}")
        answer = client.get("/v1/search", params={"q": "cats", "k": 5, "pipeline": pipeline})
        # Only the preset's shape (bm25 with tuned k1/b and cut-offs) may succeed.
        _judge(case, answer, allowed_success=pipeline.startswith("bm25") and "run(" not in pipeline)
        fault_tally.record(case)
        if not case.ok:
            failures.append(case.report())
    assert not failures, "\n".join(failures[:10])


def test_hostile_ids(service_setup, fault_tally: FaultTally) -> None:
    client, _ = service_setup
    failures = []
    for doc_id in hostile_ids():
        case = CaseResult(f"id {doc_id[:40]!r}")
        quoted = "".join(c if c.isalnum() else "%" + "%".join(f"{b:02X}" for b in c.encode()) for c in doc_id)
        before = client.get("/v1/docs/d1").json()
        put = client.put(f"/v1/docs/{quoted}", json={"text": "hostile write"}, headers=KEY)
        valid = id_problem(doc_id) is None
        _judge(case, put, allowed_success=valid)
        if put.status_code == 200 and put.json().get("doc_id") != doc_id:
            case.wrong(f"written under {put.json().get('doc_id')!r}, not byte for byte")
        if put.status_code == 200:
            got = client.get(f"/v1/docs/{quoted}")
            if got.status_code != 200 or got.json()["doc_id"] != doc_id:
                case.wrong(f"written, but GET answers {got.status_code} {got.text[:100]}")
            _judge(case, client.delete(f"/v1/docs/{quoted}", headers=KEY), allowed_success=True)
        if doc_id != "d1" and client.get("/v1/docs/d1").json() != before:
            case.wrong("another document changed")
        _judge(case, client.get(f"/v1/docs/{quoted}"), allowed_success=valid)
        fault_tally.record(case)
        if not case.ok:
            failures.append(case.report())
    assert not failures, "\n".join(failures[:10])


def test_raw_paths_that_decode_to_no_text(service_setup, fault_tally: FaultTally) -> None:
    client, _ = service_setup
    for raw in ("/v1/docs/%FF", "/v1/docs/%C3", "/v1/docs/%C3%28", "/v1/docs/a%ED%A0%80", "/doc/%FF"):
        case = CaseResult(f"raw path {raw!r}")
        _judge(case, client.get(raw), allowed_success=False)
        if raw.startswith("/v1/"):
            _judge(case, client.put(raw, json={"text": "x"}, headers=KEY), allowed_success=False)
        fault_tally.record(case)
        assert case.ok, case.report()
