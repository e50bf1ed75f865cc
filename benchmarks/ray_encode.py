"""Encoding SciFact on Ray with 1 and 2 workers against the single-process path, in one run.

    python benchmarks/ray_encode.py [--data DIR] [--output FILE] [--precision auto]

Starts a local Ray instance on loopback (127.0.0.2) with its own temp dir and auth token, encodes
the whole corpus into a fresh index three ways (single process; Ray with 1 worker; Ray with 2
workers), checks the vectors agree, and reports docs/s and the overhead against one process. Results go to
results/ray_encode_<cpu class>.json (variant ``default``; see ``_common.write_result``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="rsray-", dir="/tmp"))
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RANKSTACK_RAY_NODE_IP", "127.0.0.2")

import numpy as np  # noqa: E402
from _common import require_data, result_machine, write_result  # noqa: E402

from rankstack.distributed.ray_backend import RayShardEncoder, ray_session  # noqa: E402
from rankstack.index import Index, build_index  # noqa: E402
from rankstack.index.dense import build_dense, remote_shard_encoding  # noqa: E402
from rankstack.io import BeirDataset  # noqa: E402
from rankstack.models.encoder import load_encoder  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
# No target was ever stated for this benchmark (README, docs/ray.md: "On one small machine Ray adds overhead and
# no speed: benchmarks/ray_encode.py measures it"): it records "targets": {} rather than a made-up threshold.
NO_TARGETS = "no target was ever stated for this benchmark (README, docs, script)"


def encode(index: Index, encoder, workers: int | None) -> tuple[float, np.ndarray]:  # noqa: ANN001
    started = time.perf_counter()
    if workers is None:
        build_dense(index, encoder)
    else:
        pool = RayShardEncoder(encoder.config(), workers)
        pool.worker_pids()  # returns once every actor has loaded its model
        started = time.perf_counter()  # time the encoding; actor start-up is reported separately
        with remote_shard_encoding(lambda config: pool):
            build_dense(index, encoder)
    seconds = time.perf_counter() - started
    index.reload_manifest()
    vectors = index.dense_vectors(encoder.model_id, encoder.precision, exact=True)
    assert vectors is not None
    return seconds, vectors.vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=None, help="default: results/ray_encode_<cpu class>.json")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    require_data(args.data)
    dataset = BeirDataset.open(args.data)
    encoder = load_encoder("default", args.precision)
    results, ratios = {}, {}
    with tempfile.TemporaryDirectory() as work:
        base = Path(work)
        index = Index.open(build_index(dataset.root, base / "single"))
        seconds, reference = encode(index, encoder, None)
        results["single_process"] = {"seconds": seconds, "docs_per_s": len(reference) / seconds}
        print(f"single process: {len(reference) / seconds:.1f} docs/s", file=sys.stderr)
        with ray_session("local"):
            for workers in (1, 2):
                index = Index.open(build_index(dataset.root, base / f"ray{workers}"))
                started = time.perf_counter()
                seconds, vectors = encode(index, encoder, workers)
                total = time.perf_counter() - started
                agree = float(np.abs(vectors - reference).max())
                results[f"ray_{workers}_workers"] = {
                    "seconds": seconds, "docs_per_s": len(vectors) / seconds, "seconds_with_actor_start": total,
                    "max_abs_difference_vs_single_process": agree}
                ratios[f"ray_{workers}_workers"] = {
                    "overhead_vs_single_process": seconds / results["single_process"]["seconds"] - 1.0}
                print(f"ray, {workers} worker(s): {len(vectors) / seconds:.1f} docs/s, max |diff| {agree:.2e}",
                      file=sys.stderr)
    output = write_result(
        "ray_encode",
        settings={"dataset": "scifact", "docs": len(reference), "model": encoder.model_id,
                  "precision": encoder.precision},
        systems=results, ratios=ratios, targets={}, targets_met={},
        extra={"note": f"local Ray instance on this {os.cpu_count()}-CPU machine; each worker actor has num_cpus=1",
               "targets_note": NO_TARGETS},
        machine=result_machine(("ray", "torch")), output=args.output)
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
