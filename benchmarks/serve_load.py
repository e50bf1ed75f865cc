"""Load test of `rankstack serve` on loopback: 1, 8 and 32 concurrent clients, BM25 and a neural pipeline.

    python benchmarks/serve_load.py [--data DIR] [--output FILE] [--requests N] [--seconds S]

Starts the server as a separate process on 127.0.0.1 (a free port) over the SciFact index (built or
reused from rankstack's cache, with dense vectors), sends a bounded number of requests per setting
(stopping early at a time cap), and records requests/s, p50 and p99 latency and the error count.
Micro-batching should make the neural pipeline's throughput grow with concurrency. Results go to
results/serve_load_<cpu class>.json (variant ``default``; see ``_common.write_result``).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from _common import require_data, result_machine, write_result

from rankstack.index.cache import open_or_build
from rankstack.io import BeirDataset
from rankstack.stages import parse_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
PIPELINES = {"bm25": "bm25", "neural": "dense"}
CONCURRENCY = (1, 8, 32)
TARGET_NEURAL_SCALING = 1.5  # requests/s at 32 clients over 1 client, neural pipeline


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(index_dir: Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "rankstack.cli", "serve", str(index_dir), "--port", str(port),
               "-p", "bm25", "-p", "dense"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read().decode() if server.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not become healthy within 180 s")


async def load(base: str, pipeline: str, queries: list[str], clients: int, total: int, seconds: float
               ) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    sent = 0
    stop_at = time.monotonic() + seconds
    batch_sizes: list[int] = []

    async def client(session: httpx.AsyncClient, worker: int) -> None:
        nonlocal errors, sent
        while sent < total and time.monotonic() < stop_at:
            query = queries[sent % len(queries)]
            sent += 1
            started = time.perf_counter()
            try:
                response = await session.post("/v1/search", json={"query": query, "k": 10, "pipeline": pipeline})
                if response.status_code != 200:
                    errors += 1
                else:
                    batch_sizes.append(response.json()["batch_size"])
            except httpx.HTTPError:
                errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session, i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"clients": clients, "requests": len(latencies), "errors": errors, "seconds": elapsed,
            "requests_per_s": len(latencies) / elapsed, "p50_ms": statistics.median(ordered),
            "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "mean_batch_size": statistics.fmean(batch_sizes) if batch_sizes else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=None, help="default: results/serve_load_<cpu class>.json")
    parser.add_argument("--requests", type=int, default=600, help="requests per setting (upper bound)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time cap per setting")
    args = parser.parse_args()
    require_data(args.data)
    dataset = BeirDataset.open(args.data)
    index, _ = open_or_build(dataset.root)
    parse_pipeline("dense", index).prepare(None)  # vectors for the neural pipeline, built once
    queries = [q.text for q in dataset.queries({q.query_id for q in dataset.qrels("test")})]
    port = free_port()
    server = start_server(index.path, port)
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        base = f"http://127.0.0.1:{port}"
        for name, pipeline in PIPELINES.items():
            asyncio.run(load(base, pipeline, queries, 4, 40, 30))  # warm-up
            results[name] = []
            for clients in CONCURRENCY:
                row = asyncio.run(load(base, pipeline, queries, clients, args.requests, args.seconds))
                results[name].append(row)
                print(f"{name:6s} {clients:2d} clients: {row['requests_per_s']:7.1f} req/s  p50 {row['p50_ms']:7.1f} ms"
                      f"  p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}  mean batch {row['mean_batch_size']:.1f}",
                      file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=30)
    neural = {row["clients"]: row["requests_per_s"] for row in results["neural"]}
    scaling = neural[32] / neural[1]
    total_errors = sum(row["errors"] for rows in results.values() for row in rows)
    output = write_result(
        "serve_load",
        settings={"requests_per_setting": args.requests, "seconds_cap": args.seconds, "k": 10,
                  "target": "loopback only (127.0.0.1)", "dataset": "scifact", "pipelines": PIPELINES},
        systems=results,
        ratios={"neural_rps_32_over_1": scaling},
        targets={"zero_errors": "no failed request in any setting",
                 f"neural_scaling_at_least_{TARGET_NEURAL_SCALING:g}x": TARGET_NEURAL_SCALING},
        targets_met={"zero_errors": total_errors == 0,
                     f"neural_scaling_at_least_{TARGET_NEURAL_SCALING:g}x": scaling >= TARGET_NEURAL_SCALING},
        machine=result_machine(("fastapi", "uvicorn", "httpx")), output=args.output)
    print(f"neural req/s at 32 clients / at 1 client: {scaling:.2f} (target >= {TARGET_NEURAL_SCALING:g}); "
          f"errors: {total_errors}", file=sys.stderr)
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
