"""Soak test of `rankstack serve`: concurrent searches, writes and compactions, then a check that no write was lost.

    python benchmarks/soak.py [--data DIR] [--minutes 10] [--search-clients 16] [--compact-every 60] [--output FILE]

Builds a fresh SciFact index in a temporary directory, serves it on 127.0.0.1 (a free port, a random API key)
and, until the deadline, runs search clients, one writer (PUT/DELETE) and a `rankstack compact` every
--compact-every seconds, sampling the server's RSS each second. Only writes the server acknowledged (2xx) are
applied to the expected state, which the final corpus must then equal. Run by hand; not part of the test suite.
Results go to results/soak_<cpu class>.json (variant ``default``; see ``_common.write_result``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from _common import require_data, result_machine, write_result

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
RANKSTACK = str(Path(sys.executable).parent / "rankstack")  # the console script; `python -m rankstack.cli` is not
KINDS = ("search", "put", "delete")
BUSY = (409, 503)  # documented "index busy" answers (compaction / another writer): retry after Retry-After
ORIGINAL = ("<original>",)  # expected state of an original corpus document the writer has not changed
KEPT_MESSAGES = 5
SOAK_STARTED: list[float] = []  # perf_counter when the load started, to place compactions on the RSS series


class Stats:
    """Tallies shared by all client threads (behind one lock: the GIL alone does not make += atomic)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
        self.errors: Counter[str] = Counter()
        self.messages: list[str] = []
        self.retried = 0  # only the writer thread counts these

    def record(self, kind: str, ms: float, error: str | None = None, message: str = "") -> None:
        with self.lock:
            self.latencies[kind].append(ms)
            if error is not None:
                self.errors[error] += 1
                if len(self.messages) < KEPT_MESSAGES:
                    self.messages.append(f"{kind} {error}: {message[:300]}")


def load_texts(data: Path) -> tuple[list[str], list[str], list[str]]:
    """Query texts, original document ids and a vocabulary (words of the first documents) for written texts."""
    with open(data / "queries.jsonl", encoding="utf-8") as lines:
        queries = [json.loads(line)["text"] for line in lines if line.strip()]
    doc_ids, words = [], set()
    with gzip.open(data / "corpus.jsonl.gz", "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            doc = json.loads(line)
            doc_ids.append(str(doc["_id"]))
            if number < 2000:
                words.update(w for w in doc.get("text", "").split() if w.isalpha() and len(w) > 2)
    return queries, doc_ids, sorted(words)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(index: Path, port: int, key: str, log: Path) -> subprocess.Popen[bytes]:
    # stderr goes to a file, not a pipe: a pipe nobody reads would block the server once full of tracebacks
    with open(log, "wb") as sink:
        server = subprocess.Popen([RANKSTACK, "serve", str(index), "--port", str(port), "--api-key", key],
                                  stdout=subprocess.DEVNULL, stderr=sink)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(server)
    raise SystemExit("the server did not become healthy within 180 s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:  # SIGTERM ignored or shutdown stuck: do not leave it behind
        server.kill()
        server.wait()


def sample_rss(pid: int, started: float, stop: threading.Event, series: list[tuple[float, float]]) -> None:
    """VmRSS of the server (not its children) once a second, as (seconds since the load began, MB)."""
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    series.append((time.monotonic() - started, int(line.split()[1]) / 1024))
        except OSError:
            return  # the process is gone
        stop.wait(1.0)


def search_client(base: str, queries: list[str], offset: int, deadline: float, stats: Stats) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        number = offset
        while time.monotonic() < deadline:
            query, number = queries[number % len(queries)], number + 1
            started = time.perf_counter()
            try:
                response = client.get("/v1/search", params={"q": query, "k": 10})
            except httpx.HTTPError as error:
                stats.record("search", (time.perf_counter() - started) * 1000, "transport", repr(error))
                continue
            failed = str(response.status_code) if response.status_code != 200 else None
            stats.record("search", (time.perf_counter() - started) * 1000, failed, response.text)


class Writer:
    """The one writing client. `expected` is the acknowledged state: id -> (title, text), None (deleted) or
    ORIGINAL; `possible` holds ids whose last write had no clear answer (timeout, 5xx) with the outcomes allowed."""

    def __init__(self, base: str, key: str, doc_ids: list[str], words: list[str], stats: Stats) -> None:
        self.base, self.headers, self.stats = base, {"Authorization": f"Bearer {key}"}, stats
        self.originals, self.original_set, self.words = list(doc_ids), set(doc_ids), words
        self.random = random.Random(42)
        self.expected: dict[str, Any] = {}
        self.possible: dict[str, set[Any]] = {}
        self.alive: list[str] = []  # soak ids whose acknowledged state is "present", to update or delete
        self.created = 0

    def choose(self) -> tuple[str, str, dict[str, str] | None]:
        draw = self.random.random()
        if draw < 0.02:  # occasionally an original document, so compaction must drop base documents too
            doc_id = self.random.choice(self.originals)
            if doc_id not in self.expected and doc_id not in self.possible:
                return "DELETE", doc_id, None
        if self.alive and draw < 0.25:
            return "DELETE", self.random.choice(self.alive), None
        if self.alive and draw < 0.50:
            doc_id = self.random.choice(self.alive)
        else:
            self.created += 1
            doc_id = f"soak-{self.created}"
        words = self.random.choices(self.words, k=self.random.randint(20, 80))
        title = f"{doc_id} v{self.random.randrange(10**9)} {' '.join(words[:3])}"
        return "PUT", doc_id, {"title": title, "text": " ".join(words)}

    def apply(self, doc_id: str, state: Any) -> None:
        self.possible.pop(doc_id, None)
        self.expected[doc_id] = state
        if doc_id.startswith("soak-") and (state is not None) != (doc_id in self.alive):
            (self.alive.append if state is not None else self.alive.remove)(doc_id)

    def unclear(self, doc_id: str, state: Any) -> None:
        """A write whose effect is unknown: either outcome is allowed at the end; the id is not written again."""
        before = self.expected.get(doc_id, ORIGINAL if doc_id in self.original_set else None)
        self.possible.setdefault(doc_id, {before}).add(state)
        self.expected.pop(doc_id, None)
        if doc_id in self.alive:
            self.alive.remove(doc_id)

    def send(self, client: httpx.Client, method: str, doc_id: str, body: dict[str, str] | None,
             deadline: float) -> None:
        kind, path = method.lower(), f"/v1/docs/{quote(doc_id, safe='')}"
        state = (body["title"], body["text"]) if body is not None else None
        while True:
            started = time.perf_counter()
            try:
                response = client.request(method, path, json=body, headers=self.headers)
            except httpx.HTTPError as error:
                self.stats.record(kind, (time.perf_counter() - started) * 1000, "transport", repr(error))
                return self.unclear(doc_id, state)
            code, ms = response.status_code, (time.perf_counter() - started) * 1000
            self.stats.record(kind, ms, None if 200 <= code < 300 or code in BUSY else str(code), response.text)
            if 200 <= code < 300:
                return self.apply(doc_id, state)
            if code not in BUSY:
                return self.unclear(doc_id, state)  # a 4xx most likely changed nothing, but a 500 may have
            self.stats.retried += 1  # refused before any change: the state stays as it was
            if time.monotonic() >= deadline:
                return None
            wait = response.headers.get("Retry-After", "1")
            time.sleep(min(float(wait), 10.0) if wait.replace(".", "", 1).isdigit() else 1.0)

    def run(self, deadline: float) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while time.monotonic() < deadline:
                self.send(client, *self.choose(), deadline)


def compact(index: Path) -> dict[str, Any]:
    started = time.perf_counter()
    at = round(time.monotonic() - SOAK_STARTED[0], 1) if SOAK_STARTED else None
    done = subprocess.run([RANKSTACK, "compact", str(index)], capture_output=True, text=True, timeout=600)
    stderr = " ".join(done.stderr.split())  # rich wraps lines; join them before looking for the message
    outcome = "ok" if done.returncode == 0 else "refused_busy" if "another writer" in stderr else "failed"
    row = {"seconds": round(time.perf_counter() - started, 3), "exit_code": done.returncode, "outcome": outcome,
           "started_at_s": at}
    return row if outcome == "ok" else {**row, "stderr": stderr[-500:]}


def compactor(index: Path, every: float, deadline: float, stop: threading.Event, rows: list[dict[str, Any]]) -> None:
    next_at = time.monotonic() + every
    while not stop.wait(max(0.0, min(next_at, deadline) - time.monotonic())) and time.monotonic() < deadline:
        rows.append(compact(index))
        next_at += every


def verify(base: str, writer: Writer, original_count: int) -> dict[str, Any]:
    """The final corpus must equal the acknowledged writes, for each touched id and in the document count."""
    lost, mismatches, expected_count = 0, [], original_count
    with httpx.Client(base_url=base, timeout=30) as client:
        touched = [(doc_id, {want}) for doc_id, want in writer.expected.items()] + list(writer.possible.items())
        for doc_id, allowed in touched:
            response = client.get(f"/v1/docs/{quote(doc_id, safe='')}")
            body = response.json() if response.status_code == 200 else {}
            got = (body.get("title"), body.get("text")) if response.status_code == 200 else None
            if response.status_code not in (200, 404) or not (got in allowed or (ORIGINAL in allowed and got)):
                lost += 1
                if len(mismatches) < KEPT_MESSAGES:
                    mismatches.append(f"{doc_id}: status {response.status_code}, got {str(got)[:120]}, "
                                      f"expected one of {[str(a)[:120] for a in allowed]}")
            # count the observed state (just checked against the expected one) to predict /v1/health's figure
            expected_count += (got is not None) - (doc_id in writer.original_set)
        documents = int(client.get("/v1/health").json()["documents"])
    return {"docs_checked": len(touched), "unclear_writes": len(writer.possible), "lost_acknowledged_writes": lost,
            "unexpected_documents": documents - expected_count, "documents": documents,
            "expected_documents": expected_count, "mismatches": mismatches}


def percentiles(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    pick = (lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)) if ordered else (lambda q: None)
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": pick(1.0)}


def rss_figures(series: list[tuple[float, float]], seconds: float) -> dict[str, float | None]:
    """Growth is measured from the 20 % mark: the first minutes fill caches and pools, which is not a leak."""
    if not series:
        return {"start": None, "after_warmup": None, "peak": None, "end": None, "growth_after_warmup_pct": None}
    warm = next((mb for t, mb in series if t >= 0.2 * seconds), series[-1][1])
    peak_after = max((mb for t, mb in series if t >= 0.2 * seconds), default=warm)
    peak = max(mb for _, mb in series)
    every_10s = [(round(t), round(mb, 1)) for i, (t, mb) in enumerate(series) if i % 10 == 0]
    return {"start": round(series[0][1], 1), "after_warmup": round(warm, 1), "peak": round(peak, 1),
            "end": round(series[-1][1], 1), "growth_after_warmup_pct": round((peak_after - warm) / warm * 100, 2),
            "samples": len(series), "series_seconds_mb_every_10": every_10s}


def run_soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    queries, doc_ids, words = load_texts(args.data)
    started = time.perf_counter()
    built = subprocess.run([RANKSTACK, "index", str(args.data), "-o", str(work / "index")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if built.returncode != 0:
        raise SystemExit(f"rankstack index failed ({built.returncode}): {built.stderr[-2000:]}")
    print(f"built the index in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    port, key, stats = free_port(), secrets.token_urlsafe(24), Stats()
    base, log = f"http://127.0.0.1:{port}", work / "server.log"
    server = start_server(work / "index", port, key, log)
    try:
        original_count = int(httpx.get(f"{base}/v1/health", timeout=30).json()["documents"])
        writer, compactions, rss = Writer(base, key, doc_ids, words, stats), [], []
        load_started, stop = time.monotonic(), threading.Event()
        SOAK_STARTED[:] = [load_started]
        deadline = load_started + args.minutes * 60
        threads = [threading.Thread(target=sample_rss, args=(server.pid, load_started, stop, rss))]
        threads += [threading.Thread(target=search_client, args=(base, queries, i * len(queries) // args.search_clients,
                                                                 deadline, stats))
                    for i in range(args.search_clients)]
        threads += [threading.Thread(target=writer.run, args=(deadline,)),
                    threading.Thread(target=compactor, args=(work / "index", args.compact_every, deadline, stop,
                                                             compactions))]
        for thread in threads:
            thread.daemon = True  # Ctrl-C must not wait for the clients; the finally below stops the server
            thread.start()
        for thread in threads[1:]:
            thread.join()
        elapsed = time.monotonic() - load_started
        for _ in range(10):  # the final compaction folds everything in; retry while a straggler holds the lock
            compactions.append({**compact(work / "index"), "final": True})
            if compactions[-1]["outcome"] != "refused_busy":
                break
            time.sleep(2)
        check = verify(base, writer, original_count)
        stop.set()
        threads[0].join()
    finally:
        stop_server(server)
    tail = log.read_text(errors="replace")[-3000:]
    return figures(stats, compactions, rss, elapsed, check, tail, args.minutes * 60)


def figures(stats: Stats, compactions: list[dict[str, Any]], rss: list[tuple[float, float]], elapsed: float,
            check: dict[str, Any], server_log_tail: str, planned_seconds: float) -> dict[str, Any]:
    outcomes = Counter(row["outcome"] for row in compactions)
    failed = outcomes["failed"]
    by_status = dict(stats.errors) | ({"compaction_failed": failed} if failed else {})
    messages = (stats.messages + [f"compaction: {row.get('stderr', '')}" for row in compactions
                                  if row["outcome"] == "failed"])[:KEPT_MESSAGES]
    total = sum(len(v) for v in stats.latencies.values())
    return {"seconds": round(elapsed, 1), "requests": {k: len(v) for k, v in stats.latencies.items()},
            "errors": {"count": sum(stats.errors.values()) + failed, "by_status": by_status,
                       "first_messages": messages},
            "retried_409_503": stats.retried,
            "compactions": {"ok": outcomes["ok"], "refused_busy": outcomes["refused_busy"], "failed": failed,
                            "durations_s": [row["seconds"] for row in compactions if row["outcome"] == "ok"],
                            "runs": compactions},
            "latency_ms": {kind: percentiles(values) for kind, values in stats.latencies.items()},
            "throughput_rps": {"total": round(total / elapsed, 1),
                               **{k: round(len(v) / elapsed, 1) for k, v in stats.latencies.items()}},
            "rss_mb": rss_figures(rss, planned_seconds), "final_check": check,
            "server_log_tail": server_log_tail}


def summary(r: dict[str, Any], met: dict[str, bool]) -> str:
    rss, check, errors = r["rss_mb"], r["final_check"], r["errors"]
    return "\n".join([
        f"requests {r['requests']} in {r['seconds']} s ({r['throughput_rps']['total']} req/s)",
        f"errors {errors['count']} {errors['by_status']}; retried 409/503 {r['retried_409_503']}",
        "compactions ok {ok}, refused busy {refused_busy}, failed {failed}".format(**r["compactions"]),
        *(f"latency {k}: p50 {v['p50']} p99 {v['p99']} max {v['max']} ms" for k, v in r["latency_ms"].items()),
        f"rss MB start {rss['start']} warm {rss['after_warmup']} peak {rss['peak']} end {rss['end']} "
        f"(growth after warm-up {rss['growth_after_warmup_pct']} %)",
        f"final check: {check['docs_checked']} ids, lost {check['lost_acknowledged_writes']}, unexpected "
        f"{check['unexpected_documents']}, unclear {check['unclear_writes']}", f"targets met: {met}",
        *(f"  error: {m}" for m in errors["first_messages"]), *(f"  lost: {m}" for m in check["mismatches"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--search-clients", type=int, default=16)
    parser.add_argument("--compact-every", type=float, default=60.0, help="seconds between compactions")
    parser.add_argument("--output", type=Path, default=None, help="default: results/soak_<cpu class>.json")
    args = parser.parse_args()
    require_data(args.data)
    work = Path(tempfile.mkdtemp(prefix="rankstack-soak-"))
    try:
        result = run_soak(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    targets = {"errors": 0, "lost_acknowledged_writes": 0, "rss_growth_after_warmup_pct_max": 10, "minutes_min": 10}
    growth = result["rss_mb"]["growth_after_warmup_pct"]
    met = {"errors": result["errors"]["count"] == 0,
           "lost_acknowledged_writes": result["final_check"]["lost_acknowledged_writes"] == 0,
           "rss_growth_after_warmup_pct_max": growth is not None and growth <= 10,
           "minutes_min": args.minutes >= 10}
    output = write_result(  # atomically: a reader never sees half a file
        "soak",
        settings={"minutes": args.minutes, "search_clients": args.search_clients, "writers": 1,
                  "compact_every_s": args.compact_every, "dataset": args.data.name},
        systems={"rankstack_serve": result}, ratios={}, targets=targets, targets_met=met,
        machine=result_machine(("fastapi", "uvicorn", "httpx")), output=args.output)
    print(summary(result, met), file=sys.stderr)
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
