"""Crash safety (SIGKILL at random points) and concurrent readers during writes and compaction."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from rankstack.index import Index, build_index
from rankstack.index.live import IndexWriter
from rankstack.stages import BM25
from rankstack.types import Doc, Query

CHILD = """
import sys
from rankstack.index import Index
from rankstack.index.live import IndexWriter
from rankstack.types import Doc
writer = IndexWriter(Index.open(sys.argv[1]))
start = int(sys.argv[2])
for i in range(start, start + 100000):
    writer.add([Doc(f"n{i}", f"added document number {i} with some words")])
    print(f"ack n{i}", flush=True)
"""


def test_acknowledged_changes_survive_sigkill(tmp_path: Path) -> None:
    path = build_index([Doc("base", "the first document")], tmp_path / "idx")
    rng = random.Random(7)
    acknowledged: list[str] = []
    attempted_upto = 0
    for run in range(5):
        start = attempted_upto
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(start)], stdout=subprocess.PIPE,
                                 text=True)
        assert child.stdout is not None
        wanted = rng.randint(3, 40)
        acknowledged_this_run = 0
        while acknowledged_this_run < wanted:
            line = child.stdout.readline()
            if not line:
                break
            acknowledged.append(line.split()[1])
            acknowledged_this_run += 1
        assert acknowledged_this_run == wanted, "the writer died on its own"
        time.sleep(rng.uniform(0, 0.05))  # land the kill anywhere, also inside a write
        child.send_signal(signal.SIGKILL)
        child.wait()
        rest = child.stdout.read().split()
        acknowledged += [token for token in rest if token.startswith("n")]
        index = Index.open(path)  # loads after every crash
        present = set(index.view().doc_positions) - {"base"}
        assert set(acknowledged) <= present, f"run {run}: acknowledged changes lost"
        numbers = sorted(int(d[1:]) for d in present)
        assert numbers == list(range(numbers[0] if numbers else 0, (numbers[-1] + 1) if numbers else 0))
        assert len(present - set(acknowledged)) <= 1  # at most the one in flight when the kill came
        assert all(d.startswith("n") for d in present)
        attempted_upto = (numbers[-1] + 1) if numbers else start
        acknowledged = sorted(present, key=lambda d: int(d[1:]))  # the in-flight one is now durable too
    with IndexWriter(Index.open(path)) as writer:  # the lock died with the child; a torn tail is trimmed
        writer.add([Doc("after", "written after the crashes")])
    assert "after" in Index.open(path).view().doc_positions


def test_readers_never_see_a_partial_batch(tmp_path: Path) -> None:
    index = Index.open(build_index([Doc(f"b{i}", f"base document {i}") for i in range(50)], tmp_path / "idx"))
    errors: list[BaseException] = []
    stop = threading.Event()
    batches = 12
    batch_size = 5
    seen_sizes: dict[int, set[int]] = {n: set() for n in range(batches)}

    def reader() -> None:
        try:
            while not stop.is_set():
                for n in range(batches):
                    hits = (BM25(index) % 50).transform([Query("q", f"marker{n}")])["q"]
                    seen_sizes[n].add(len(hits))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    with IndexWriter(index) as writer:
        for n in range(batches):
            writer.add([Doc(f"m{n}-{i}", f"marker{n} document {i}") for i in range(batch_size)])
            if n == batches // 2:
                writer.compact()
        writer.delete([f"b{i}" for i in range(10)])
        writer.compact()
    time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    for n, sizes in seen_sizes.items():
        assert sizes <= {0, batch_size}, f"batch {n} seen partially applied: {sizes}"
    assert index.view().num_docs == 50 - 10 + batches * batch_size
