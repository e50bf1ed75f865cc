"""Load test of `rankstack serve` on loopback: 1, 8 and 32 concurrent clients, BM25 and a neural pipeline.

    python benchmarks/serve_load.py [--data DIR] [--output FILE] [--requests N] [--seconds S] [--workers W]

Starts the server as a separate process on 127.0.0.1 (a free port) over the SciFact index (built or
reused from rankstack's cache, with dense vectors), with its default worker count unless ``--workers``
says otherwise, sends a bounded number of requests per setting (stopping early at a time cap), and
records requests/s, p50 and p99 latency, the error count and the load average around each setting.

The client must not be what limits the figures: on a small machine it shares the cores with the server.
So each simulated client is one keep-alive HTTP/1.1 connection driven by asyncio streams (uvloop's loop
when installed) sending prepared ``POST /v1/search`` requests and reading each answer by its
Content-Length; every answer is checked (status 200, a JSON body with the hits) and anything else is
counted as an error. Latency is measured per request, from writing it to having read its whole answer.

Targets: BM25 at least 400 requests/s at 8 clients, BM25 p99 under 50 ms at 1 client, the neural
pipeline at least twice its 1-client throughput at 32 clients (micro-batching), and no failed request.
Results go to results/serve_load_<cpu class>.json (variant ``default``; see ``_common.write_result``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import require_data, result_machine, write_result

from rankstack.index.cache import open_or_build
from rankstack.io import BeirDataset
from rankstack.serve.workers import resolve_workers
from rankstack.stages import parse_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
PIPELINES = {"bm25": "bm25", "neural": "dense"}
CONCURRENCY = (1, 8, 32)
TARGET_BM25_RPS_AT_8 = 400.0
TARGET_BM25_P99_MS_AT_1 = 50.0
TARGET_NEURAL_SCALING = 2.0  # requests/s at 32 clients over 1 client, neural pipeline


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(index_dir: Path, port: int, workers: str, log: Any) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "rankstack.cli", "serve", str(index_dir), "--port", str(port),
               "-p", "bm25", "-p", "dense", "--workers", workers]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise SystemExit(f"the server exited: {log.read().decode(errors='replace')}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not become healthy within 300 s")


class Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared requests and reads answers by Content-Length."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = head.lower()
        marker = headers.find(b"\r\ncontent-length:")
        if marker < 0:
            raise ConnectionError("an answer without Content-Length")
        length = int(headers[marker + 17:headers.index(b"\r\n", marker + 2)])
        body = await self.reader.readexactly(length)
        if b"\r\nconnection: close" in headers:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.reader = self.writer = None


def prepared_requests(port: int, pipeline: str, queries: list[str]) -> list[bytes]:
    """The raw bytes of one ``POST /v1/search`` per query, built before the clock starts."""
    requests = []
    for query in queries:
        body = json.dumps({"query": query, "k": 10, "pipeline": pipeline}).encode()
        requests.append(b"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (port, len(body), body))
    return requests


async def load(port: int, requests: list[bytes], clients: int, total: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    batch_sizes: list[int] = []
    errors = 0
    sent = 0
    stop_at = time.monotonic() + seconds

    async def client() -> None:
        nonlocal errors, sent
        connection = Connection(port)
        try:
            while sent < total and time.monotonic() < stop_at:
                raw = requests[sent % len(requests)]
                sent += 1
                started = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(connection.request(raw), 60)
                    answer = json.loads(body) if status == 200 else None
                    if answer is None or not isinstance(answer.get("hits"), list):
                        errors += 1
                    else:
                        batch_sizes.append(answer["batch_size"])
                except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError):
                    errors += 1
                    await connection.close()
                latencies.append((time.perf_counter() - started) * 1000)
        finally:
            await connection.close()

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"clients": clients, "requests": len(latencies), "errors": errors, "seconds": elapsed,
            "requests_per_s": len(latencies) / elapsed, "p50_ms": statistics.median(ordered),
            "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "mean_batch_size": statistics.fmean(batch_sizes) if batch_sizes else 0.0,
            "load_average_1min_before_after": [load_before, os.getloadavg()[0]]}


def run_loop(coroutine: Any) -> Any:
    """Run on uvloop's event loop when it is installed (a cheaper client), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def measure(port: int, queries: list[str], args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    for name, pipeline in PIPELINES.items():
        requests = prepared_requests(port, pipeline, queries)
        run_loop(load(port, requests, 8, 200, 60))  # warm-up: models loaded, every worker reached
        results[name] = []
        for clients in CONCURRENCY:
            row = run_loop(load(port, requests, clients, args.requests, args.seconds))
            results[name].append(row)
            print(f"{name:6s} {clients:2d} clients: {row['requests_per_s']:7.1f} req/s  p50 {row['p50_ms']:7.1f} ms"
                  f"  p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}  mean batch {row['mean_batch_size']:.1f}"
                  f"  load {row['load_average_1min_before_after'][1]:.2f}", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=None, help="default: results/serve_load_<cpu class>.json")
    parser.add_argument("--requests", type=int, default=3000, help="requests per setting (upper bound)")
    parser.add_argument("--seconds", type=float, default=20.0, help="time cap per setting")
    parser.add_argument("--workers", default="auto", help="the server's --workers (default: its own, auto)")
    args = parser.parse_args()
    require_data(args.data)
    dataset = BeirDataset.open(args.data)
    index, _ = open_or_build(dataset.root)
    parse_pipeline("dense", index).prepare(None)  # vectors for the neural pipeline, built once
    queries = [q.text for q in dataset.queries({q.query_id for q in dataset.qrels("test")})]
    port = free_port()
    with tempfile.TemporaryFile() as log:
        server = start_server(index.path, port, args.workers, log)
        try:
            results = measure(port, queries, args)
        finally:
            server.terminate()
            server.wait(timeout=60)
    report(results, args)


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    bm25 = {row["clients"]: row for row in results["bm25"]}
    neural = {row["clients"]: row["requests_per_s"] for row in results["neural"]}
    scaling = neural[32] / neural[1]
    total_errors = sum(row["errors"] for rows in results.values() for row in rows)
    names = {"rps": f"bm25_rps_at_8_clients_at_least_{TARGET_BM25_RPS_AT_8:g}",
             "p99": f"bm25_p99_ms_at_1_client_at_most_{TARGET_BM25_P99_MS_AT_1:g}",
             "scaling": f"neural_scaling_at_least_{TARGET_NEURAL_SCALING:g}x"}
    output = write_result(
        "serve_load",
        settings={"requests_per_setting": args.requests, "seconds_cap": args.seconds, "k": 10,
                  "target": "loopback only (127.0.0.1)", "dataset": "scifact", "pipelines": PIPELINES,
                  "workers": args.workers, "workers_resolved": resolve_workers(args.workers, writes_enabled=False),
                  "client": "asyncio streams, one keep-alive HTTP/1.1 connection per client"},
        systems=results,
        ratios={"neural_rps_32_over_1": scaling},
        targets={"zero_errors": "no failed request in any setting", names["rps"]: TARGET_BM25_RPS_AT_8,
                 names["p99"]: TARGET_BM25_P99_MS_AT_1, names["scaling"]: TARGET_NEURAL_SCALING},
        targets_met={"zero_errors": total_errors == 0,
                     names["rps"]: bm25[8]["requests_per_s"] >= TARGET_BM25_RPS_AT_8,
                     names["p99"]: bm25[1]["p99_ms"] < TARGET_BM25_P99_MS_AT_1,
                     names["scaling"]: scaling >= TARGET_NEURAL_SCALING},
        machine=result_machine(("fastapi", "uvicorn", "uvloop", "httptools", "orjson")), output=args.output)
    print(f"bm25 req/s at 8 clients: {bm25[8]['requests_per_s']:.1f} (target >= {TARGET_BM25_RPS_AT_8:g}); "
          f"bm25 p99 at 1 client: {bm25[1]['p99_ms']:.1f} ms (target < {TARGET_BM25_P99_MS_AT_1:g}); "
          f"neural 32/1: {scaling:.2f} (target >= {TARGET_NEURAL_SCALING:g}); errors: {total_errors}",
          file=sys.stderr)
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
