"""Dense vectors inside an index directory: resumable sharded encoding, storage options, FAISS search.

Layout: ``dense/<model-slug>/`` holds ``meta.json`` (model, dimension, similarity, storage,
truncation counts), ``vectors.npy`` (float32, float16, or int8 with ``scales.npy``) and optionally
``hnsw.faiss``. Encoding writes numbered shards into ``dense/<model-slug>.building/`` first: an
interrupted run resumes from the shards it finished, and only a complete set is moved into place and
entered into the manifest.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankstack._optional import require
from rankstack.errors import RankstackError
from rankstack.index.manifest import update_manifest
from rankstack.models.encoder import BiEncoder, TruncationReport

logger = logging.getLogger(__name__)
STORAGES = ("float32", "float16", "int8")
DEFAULT_SHARD_SIZE = 512


@dataclass(frozen=True)
class HnswParams:
    m: int = 32
    ef_construction: int = 200

    def to_json(self) -> dict[str, int]:
        return {"M": self.m, "efConstruction": self.ef_construction}


# Set by rankstack.distributed to encode shards on a cluster instead of in this process: a callable
# taking the encoder's config and returning an object whose ``encode(jobs)`` yields finished shards.
_SHARD_ENCODER: ContextVar[Callable[[dict[str, Any]], Any] | None] = ContextVar("shard_encoder", default=None)


@contextmanager
def remote_shard_encoding(factory: Callable[[dict[str, Any]], Any]) -> Iterator[None]:
    """Within this block, build_dense (and build_token_vectors) encode shards through
    ``factory(encoder_config).encode(jobs)``."""
    token = _SHARD_ENCODER.set(factory)
    try:
        yield
    finally:
        _SHARD_ENCODER.reset(token)


def shard_encoder_factory() -> Callable[[dict[str, Any]], Any] | None:
    """The factory set by :func:`remote_shard_encoding` around this call, if any."""
    return _SHARD_ENCODER.get()


def vectors_key(model_id: str, precision: str) -> str:
    """Vectors are kept per model and encoding precision, so fp32 figures come from fp32 vectors."""
    return f"{model_id}@{precision}"


def dense_slug(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", model_id).strip("-.") or "model"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    temporary = path.with_name(path.name + ".tmp.npy")
    np.save(temporary, array)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def encode_vectors(vectors: np.ndarray, storage: str) -> dict[str, np.ndarray]:
    if storage == "float32":
        return {"vectors.npy": vectors.astype(np.float32)}
    if storage == "float16":
        return {"vectors.npy": vectors.astype(np.float16)}
    # Symmetric per-dimension int8: each dimension scaled by its largest magnitude.
    scales = np.abs(vectors).max(axis=0).astype(np.float32) / 127.0
    scales[scales == 0] = 1.0
    quantized = np.clip(np.rint(vectors / scales), -127, 127).astype(np.int8)
    return {"vectors.npy": quantized, "scales.npy": scales}


def build_dense(index: Any, encoder: BiEncoder, storage: str = "float32", hnsw: HnswParams | None = None,
                shard_size: int = DEFAULT_SHARD_SIZE, progress: Callable[[int], None] | None = None) -> Path:
    """Encode every document of ``index`` with ``encoder`` and add the vectors to the index directory."""
    if storage not in STORAGES:
        raise RankstackError(f"unknown vector storage '{storage}'; choose one of {', '.join(STORAGES)}")
    if index.view() is not index.segment:
        raise RankstackError(f"{index.path} has live changes that are not compacted; run: rankstack compact "
                             f"{index.path}, then add vectors")
    index = index.segment  # rows of the segment, in order
    dense_root = index.path / "dense"
    key = vectors_key(encoder.model_id, encoder.precision)
    slug = dense_slug(key)
    work = dense_root / f"{slug}.building"
    plan = {"encoder": encoder.config(),
            "num_docs": index.num_docs, "shard_size": shard_size}
    plan_path = work / "plan.json"
    if work.exists() and (not plan_path.exists() or json.loads(plan_path.read_text()) != plan):
        shutil.rmtree(work)  # shards from another model or corpus are useless
    work.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(plan))
    report = TruncationReport()
    shards, pending = [], []
    for number, start in enumerate(range(0, index.num_docs, shard_size)):
        shard = work / f"shard-{number:06d}.npy"
        shards.append(shard)
        count = min(shard_size, index.num_docs - start)
        if shard.exists():  # finished by an earlier, interrupted run: never recomputed
            if progress is not None:
                progress(count)
        else:
            pending.append((number, start, count))
    remote = _SHARD_ENCODER.get()
    if remote is not None and pending:
        jobs = [(number, [d.contents for d in index.docstore.range(start, start + count)])
                for number, start, count in pending]
        for number, vectors, (texts, truncated, longest) in remote(encoder.config()).encode(jobs):
            _save_atomic(shards[number], vectors)
            report.texts, report.truncated = report.texts + texts, report.truncated + truncated
            report.longest_tokens = max(report.longest_tokens, longest)
            if progress is not None:
                progress(len(vectors))
    else:
        for number, start, count in pending:
            docs = index.docstore.range(start, start + count)
            _save_atomic(shards[number], encoder.encode_docs([d.contents for d in docs], report))
            if progress is not None:
                progress(count)
    report.warn("documents", encoder.max_tokens)
    vectors = np.concatenate([np.load(s) for s in shards]) if shards else np.zeros((0, encoder.dimension))
    meta = {**encoder.config(), "storage": storage, "truncated_docs": report.truncated,
            "longest_doc_tokens": report.longest_tokens}
    final = write_dense_vectors(index.path, key, meta, vectors, hnsw)
    shutil.rmtree(work, ignore_errors=True)
    return final


def write_dense_vectors(index_path: Path, key: str, meta: dict[str, Any], vectors: np.ndarray,
                        hnsw: HnswParams | None = None) -> Path:
    """Store ``vectors`` (one row per index row) under ``dense/`` and enter them into the manifest."""
    storage = meta.get("storage", "float32")
    files = encode_vectors(vectors, storage)
    meta = {**meta, "count": int(len(vectors)), "hnsw": hnsw.to_json() if hnsw else None}
    dense_root = index_path / "dense"
    slug = dense_slug(key)
    staging = dense_root / f"{slug}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, array in files.items():
        np.save(staging / name, array)
    if hnsw is not None:
        faiss = require("faiss", "dense", "HNSW search")
        graph = _build_hnsw(faiss, decode_vectors(files), hnsw)
        faiss.write_index(graph, str(staging / "hnsw.faiss"))
    (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    final = dense_root / slug
    retired = dense_root / f"{slug}.retired"
    if final.exists():
        os.rename(final, retired)
    os.rename(staging, final)
    update_manifest(index_path, prefix=f"dense/{slug}/", section=("dense", key),
                    section_value={"dir": f"dense/{slug}", "model": meta["model"], "precision": meta["precision"],
                                   "dimension": int(vectors.shape[1]), "storage": storage})
    shutil.rmtree(retired, ignore_errors=True)
    return final


def decode_vectors(files: dict[str, np.ndarray]) -> np.ndarray:
    vectors = files["vectors.npy"]
    if vectors.dtype == np.int8:
        return np.asarray(vectors.astype(np.float32) * files["scales.npy"], dtype=np.float32)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _build_hnsw(faiss: Any, vectors: np.ndarray, params: HnswParams) -> Any:
    graph = faiss.IndexHNSWFlat(vectors.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = params.ef_construction
    graph.add(vectors)
    return graph


class DenseVectors:
    """Loaded vectors of one model, searchable exactly (FAISS flat) or approximately (FAISS HNSW)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        files = {"vectors.npy": np.load(directory / "vectors.npy")}
        if (directory / "scales.npy").exists():
            files["scales.npy"] = np.load(directory / "scales.npy")
        self.vectors = decode_vectors(files)
        self._faiss = require("faiss", "dense", "Dense retrieval")
        self._exact: Any = None
        self._hnsw: Any = None

    @property
    def dimension(self) -> int:
        return int(self.meta["dimension"])

    def check_encoder(self, encoder: BiEncoder) -> None:
        if encoder.dimension != self.dimension:
            raise RankstackError(
                f"the index's vectors for '{self.meta['model']}' have dimension {self.dimension}, but the model "
                f"loaded now produces {encoder.dimension}; re-encode with: rankstack index CORPUS -o DIR "
                f"--dense {encoder.model_id} --overwrite")

    def _exact_index(self) -> Any:
        if self._exact is None:
            self._exact = self._faiss.IndexFlatIP(self.dimension)
            self._exact.add(self.vectors)
        return self._exact

    def hnsw_index(self, params: HnswParams | None = None) -> Any:
        if self._hnsw is None:
            stored = self.directory / "hnsw.faiss"
            if stored.exists():
                self._hnsw = self._faiss.read_index(str(stored))
            else:
                logger.info("no stored HNSW graph for %s; building one in memory", self.meta["model"])
                self._hnsw = _build_hnsw(self._faiss, self.vectors, params or HnswParams())
        return self._hnsw

    def search(self, queries: np.ndarray, count: int, method: str = "exact", ef_search: int = 256
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``count`` (scores, rows) per query; rows of -1 pad when there are fewer documents."""
        count = min(count, len(self.vectors))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if method == "hnsw":
            graph = self.hnsw_index()
            graph.hnsw.efSearch = max(ef_search, count)
            scores, rows = graph.search(queries, count)
        else:
            scores, rows = self._exact_index().search(queries, count)
        return np.asarray(scores, dtype=np.float32), np.asarray(rows, dtype=np.int64)
