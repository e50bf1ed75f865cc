"""Running encoding and pipelines on a Ray cluster, with the same on-disk results as one process.

* Encoding: shards of the corpus go to encoder actors (the model is loaded once per actor); the
  driver writes each finished shard into the same ``dense/<key>.building`` directory the
  single-process path uses, so a re-run skips finished shards and both paths give one index format.
  Actors are restartable and their calls retried, so a worker that dies mid-shard has that shard
  redone elsewhere.
* Queries: the query set is split into chunks that pipeline actors (index opened and models loaded
  once per actor) run; the driver merges the chunks into one run.

Workers read the index directory by path, so on a multi-machine cluster it must be on a shared
filesystem (or copied to the same path on every node).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from rankstack._optional import require
from rankstack.stages.base import SearchContext
from rankstack.types import Query, Run, ScoredDoc

ShardJob = tuple[int, list[str]]
ShardResult = tuple[int, np.ndarray, tuple[int, int, int]]
TokenShardResult = tuple[int, np.ndarray, np.ndarray]  # shard number, stacked token vectors, tokens per document


def _ray() -> Any:
    return require("ray", "ray", "Scale-out on Ray (--ray)")


@contextmanager
def ray_session(address: str) -> Iterator[Any]:
    """Connect to a cluster (``host:port``) or start a local instance (``local``) for one command.

    ``RANKSTACK_RAY_NODE_IP`` sets the driver's node address (e.g. a loopback address for a test
    cluster started with ``ray start --node-ip-address``).
    """
    ray = _ray()
    options: dict[str, Any] = {"log_to_driver": False}
    node_ip = os.environ.get("RANKSTACK_RAY_NODE_IP")
    if node_ip:
        options["_node_ip_address"] = node_ip
    if address == "local":
        ray.init(include_dashboard=False, **options)
    else:
        ray.init(address=address, **options)
    try:
        yield ray
    finally:
        ray.shutdown()


class _EncoderWorker:
    def __init__(self, model: str, precision: str, query_prefix: str, doc_prefix: str) -> None:
        from rankstack.models.encoder import BiEncoder

        self.encoder = BiEncoder(model, precision, query_prefix=query_prefix, doc_prefix=doc_prefix)

    def encode(self, job: ShardJob) -> ShardResult:
        from rankstack.models.encoder import TruncationReport

        number, texts = job
        report = TruncationReport()
        vectors = self.encoder.encode_docs(texts, report)
        return number, vectors, (report.texts, report.truncated, report.longest_tokens)

    def pid(self) -> int:
        return os.getpid()


class _TokenVectorWorker:
    """A late-interaction model's token vectors for a shard: all tokens stacked, and each document's count."""

    def __init__(self, model: str) -> None:
        from rankstack.models.late_interaction import LateInteractionEncoder

        self.encoder = LateInteractionEncoder(model)

    def encode(self, job: ShardJob) -> TokenShardResult:
        number, texts = job
        vectors = self.encoder.encode_docs(texts)
        lengths = np.array([len(v) for v in vectors], dtype=np.int64)
        tokens = np.concatenate(vectors) if vectors else np.zeros((0, self.encoder.dimension), dtype=np.float32)
        return number, tokens, lengths

    def pid(self) -> int:
        return os.getpid()


class RayShardEncoder:
    """Encodes shards on a pool of restartable encoder actors; one actor per worker CPU by default. A config
    of kind ``late-interaction`` makes token vectors (one row per token), any other one dense vectors."""

    def __init__(self, encoder_config: dict[str, Any], workers: int | None = None) -> None:
        ray = _ray()
        count = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        if encoder_config.get("kind") == "late-interaction":
            tokens = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=-1)(_TokenVectorWorker)
            self.actors = [tokens.remote(encoder_config["model"]) for _ in range(count)]
            return
        actor = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=-1)(_EncoderWorker)
        self.actors = [actor.remote(encoder_config["model"], encoder_config["precision"],
                                    encoder_config.get("query_prefix", ""), encoder_config.get("doc_prefix", ""))
                       for _ in range(count)]

    def worker_pids(self) -> list[int]:
        return list(_ray().get([a.pid.remote() for a in self.actors]))

    def encode(self, jobs: Sequence[ShardJob]) -> Iterator[ShardResult | TokenShardResult]:
        """Yield results as shards finish (in any order)."""
        from ray.util import ActorPool

        pool = ActorPool(self.actors)
        yield from pool.map_unordered(lambda actor, job: actor.encode.remote(job), list(jobs))


class _PipelineWorker:
    def __init__(self, index_path: str, pipeline: str) -> None:
        from rankstack.index import Index
        from rankstack.stages import parse_pipeline

        self.index = Index.open(index_path, verify_checksums=False)
        self.pipeline = parse_pipeline(pipeline, self.index)
        self.pipeline.prepare(None)

    def run(self, queries: list[tuple[str, str]], top_k: int | None, ignore_identical_ids: bool
            ) -> tuple[dict[str, list[tuple[str, float]]], dict[str, float]]:
        pipeline = self.pipeline % top_k if top_k else self.pipeline
        run = pipeline.transform([Query(q, t) for q, t in queries],
                                 context=SearchContext(ignore_identical_ids=ignore_identical_ids))
        hits = {q: [(h.doc_id, h.score) for h in ranked] for q, ranked in run.results.items()}
        return hits, run.stage_seconds


def run_queries_on_ray(index_path: str, pipeline: str, queries: Sequence[Query], top_k: int | None,
                       ignore_identical_ids: bool, workers: int | None = None, chunk_size: int = 32,
                       progress: Callable[[int], None] | None = None) -> Run:
    """Run ``pipeline`` over ``queries`` in chunks on pipeline actors; one merged run comes back."""
    ray = _ray()
    from ray.util import ActorPool

    count = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    actor = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=-1)(_PipelineWorker)
    pool = ActorPool([actor.remote(index_path, pipeline) for _ in range(count)])
    chunks = [[(q.query_id, q.text) for q in queries[i:i + chunk_size]] for i in range(0, len(queries), chunk_size)]
    merged = Run()
    for hits, seconds in pool.map_unordered(lambda a, c: a.run.remote(c, top_k, ignore_identical_ids), chunks):
        for query_id, ranked in hits.items():
            merged.set(query_id, [ScoredDoc(query_id, d, s) for d, s in ranked])
        for stage, value in seconds.items():
            merged.stage_seconds[stage] = merged.stage_seconds.get(stage, 0.0) + value
        if progress is not None:
            progress(len(hits))
    return merged
