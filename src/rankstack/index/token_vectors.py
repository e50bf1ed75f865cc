"""Token vectors of a late-interaction model inside an index directory, stored compressed, and MaxSim over them.

Layout: ``late_interaction/<model-slug>/`` holds ``meta.json`` (model, dimension, tokenizer fingerprint,
storage, bytes per token), ``tokens.npy`` (every document's token vectors, one row per token, in index row
order), ``offsets.npy`` (int64, row r's tokens are ``tokens[offsets[r]:offsets[r + 1]]``) and, for int8,
``scales.npy`` (one float32 scale per dimension). The default storage is int8 with per-dimension scales: a
64-dimensional model costs 64 bytes per token. Encoding writes numbered shards into
``late_interaction/<model-slug>.building/`` first: an interrupted run resumes from the shards it finished, and
only a complete set is moved into place and entered into the manifest (with sha256 checksums).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rankstack._bounded import BoundedCache
from rankstack.errors import RankstackError
from rankstack.index.dense import dense_slug, shard_encoder_factory
from rankstack.index.manifest import update_manifest
from rankstack.index.token_centroids import TokenCentroids
from rankstack.models.late_interaction import LateInteractionEncoder

SECTION = "late_interaction"
LATE_INTERACTION_KIND = "late-interaction"  # the encoder config's "kind" that tells a remote pool to make token vectors
TOKEN_STORAGES = ("int8", "float16", "float32")
MAX_BYTES_PER_TOKEN = 64  # the budget the default storage keeps to (a 64-d model in int8)
DEFAULT_SHARD_SIZE = 256
_SCORE_BLOCK = 1 << 24  # float32 cells of one query-token x document-token block (64 MB)


def _save_shard(path: Path, vectors: list[np.ndarray]) -> None:
    temporary = path.with_name(path.name + ".tmp.npz")
    lengths = np.array([len(v) for v in vectors], dtype=np.int64)
    dimension = vectors[0].shape[1] if vectors else 0
    tokens = np.concatenate(vectors) if vectors else np.zeros((0, dimension), dtype=np.float32)
    np.savez(temporary, tokens=tokens.astype(np.float32), lengths=lengths)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def quantize_tokens(shards: Sequence[np.ndarray], storage: str) -> dict[str, np.ndarray]:
    """The stored arrays for token vectors given in pieces: int8 with one scale per dimension (its largest
    magnitude over the collection / 127), or float16/float32 as they are."""
    dimension = shards[0].shape[1] if shards else 0
    total = sum(len(s) for s in shards)
    if storage != "int8":
        dtype = np.float16 if storage == "float16" else np.float32
        return {"tokens.npy": np.concatenate([s.astype(dtype) for s in shards]) if shards
                else np.zeros((0, dimension), dtype=dtype)}
    scales = np.zeros(dimension, dtype=np.float32)
    for shard in shards:
        if len(shard):
            scales = np.maximum(scales, np.abs(shard).max(axis=0))
    scales = scales / 127.0
    scales[scales == 0] = 1.0
    tokens = np.empty((total, dimension), dtype=np.int8)
    start = 0
    for shard in shards:
        tokens[start:start + len(shard)] = np.clip(np.rint(shard / scales), -127, 127)
        start += len(shard)
    return {"tokens.npy": tokens, "scales.npy": scales.astype(np.float32)}


def build_token_vectors(index: Any, encoder: LateInteractionEncoder, storage: str = "int8",
                        shard_size: int = DEFAULT_SHARD_SIZE, progress: Callable[[int], None] | None = None) -> Path:
    """Encode every document of ``index`` into token vectors with ``encoder`` and add them to the index."""
    if storage not in TOKEN_STORAGES:
        raise RankstackError(f"unknown token vector storage '{storage}'; choose one of {', '.join(TOKEN_STORAGES)}")
    if index.view() is not index.segment:
        raise RankstackError(f"{index.path} has live changes that are not compacted; run: rankstack compact "
                             f"{index.path}, then add token vectors")
    segment = index.segment
    slug = dense_slug(encoder.model_id)
    work = segment.path / SECTION / f"{slug}.building"
    plan = {"encoder": encoder.config(), "num_docs": segment.num_docs, "shard_size": shard_size}
    plan_path = work / "plan.json"
    if work.exists() and (not plan_path.exists() or json.loads(plan_path.read_text()) != plan):
        shutil.rmtree(work)  # shards of another model or corpus are useless
    work.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(plan))
    paths, pending = [], []
    for number, start in enumerate(range(0, segment.num_docs, shard_size)):
        path = work / f"shard-{number:06d}.npz"
        paths.append(path)
        count = min(shard_size, segment.num_docs - start)
        if path.exists():  # a finished shard of an interrupted run is never recomputed
            if progress is not None:
                progress(count)
        else:
            pending.append((number, start, count))
    remote = shard_encoder_factory()
    if remote is not None and pending:  # Ray actors encode; this process writes the same shards
        jobs = [(number, [d.contents for d in segment.docstore.range(start, start + count)])
                for number, start, count in pending]
        for number, tokens, lengths in remote({**encoder.config(), "kind": LATE_INTERACTION_KIND}).encode(jobs):
            _save_shard(paths[number], np.split(tokens, np.cumsum(lengths)[:-1]) if len(lengths) else [])
            if progress is not None:
                progress(len(lengths))
    else:
        for number, start, count in pending:
            docs = segment.docstore.range(start, start + count)
            _save_shard(paths[number], encoder.encode_docs([d.contents for d in docs]))
            if progress is not None:
                progress(count)
    shards, lengths = [], []
    for path in paths:
        with np.load(path) as loaded:
            shards.append(loaded["tokens"])
            lengths.append(loaded["lengths"])
    final = write_token_vectors(segment.path, encoder.config(), storage, shards,
                                np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64))
    shutil.rmtree(work, ignore_errors=True)
    return final


def write_token_vectors(index_path: Path, config: dict[str, Any], storage: str, shards: Sequence[np.ndarray],
                        lengths: np.ndarray) -> Path:
    """Store token vectors (``lengths[r]`` tokens for index row r) and enter them into the manifest."""
    files = quantize_tokens(shards, storage)
    files["offsets.npy"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    bytes_per_token = int(config["dimension"]) * files["tokens.npy"].dtype.itemsize
    meta = {**config, "storage": storage, "bytes_per_token": bytes_per_token, "docs": int(len(lengths)),
            "tokens": int(files["offsets.npy"][-1])}
    root = index_path / SECTION
    slug = dense_slug(config["model"])
    staging, final, retired = root / f"{slug}.staging", root / slug, root / f"{slug}.retired"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, array in files.items():
        np.save(staging / name, array)
    (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if final.exists():
        os.rename(final, retired)
    os.rename(staging, final)
    update_manifest(index_path, prefix=f"{SECTION}/{slug}/", section=(SECTION, config["model"]),
                    section_value={"dir": f"{SECTION}/{slug}", "model": config["model"],
                                   "dimension": int(config["dimension"]), "storage": storage,
                                   "bytes_per_token": bytes_per_token})
    shutil.rmtree(retired, ignore_errors=True)
    return final


class TokenVectors:
    """The stored token vectors of one model for the rows of one segment."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        self.tokens = np.load(directory / "tokens.npy", mmap_mode="r")
        self.offsets = np.load(directory / "offsets.npy")
        scales = directory / "scales.npy"
        self.scales = np.load(scales) if scales.exists() else None

    @functools.cached_property
    def centroids(self) -> TokenCentroids | None:
        """The approximate index over these vectors (``token_centroids``), None when it was not built."""
        return TokenCentroids.load(self.directory)

    @property
    def dimension(self) -> int:
        return int(self.meta["dimension"])

    @property
    def num_rows(self) -> int:
        return len(self.offsets) - 1

    def check_encoder(self, encoder: LateInteractionEncoder, index_path: Path) -> None:
        """Refuse a model whose vectors cannot be compared with the stored ones (dimension or tokenizer)."""
        fix = (f"re-encode them with: rankstack index CORPUS -o {index_path} --late-interaction "
               f"{encoder.model_id}")
        if encoder.dimension != self.dimension:
            raise RankstackError(f"the index's token vectors for '{self.meta['model']}' have dimension "
                                 f"{self.dimension}, but the model loaded now produces {encoder.dimension}; {fix}")
        if encoder.tokenizer_sha256 != self.meta.get("tokenizer_sha256"):
            raise RankstackError(f"the index's token vectors for '{self.meta['model']}' were made with another "
                                 f"tokenizer than the model loaded now has (its vocabulary differs); {fix}")

    def decode(self, start: int, stop: int) -> np.ndarray:
        """Token rows ``start:stop`` as float32."""
        return self._as_float(np.asarray(self.tokens[start:stop]))

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """The token rows at ``positions`` (any order) as float32."""
        return self._as_float(np.asarray(self.tokens[positions]))

    def _as_float(self, block: np.ndarray) -> np.ndarray:
        if self.scales is not None:
            scaled: np.ndarray = block.astype(np.float32) * self.scales
            return scaled
        return block.astype(np.float32)

    def compress_like(self, tokens: np.ndarray) -> np.ndarray:
        """``tokens`` (encoded now) as they would read back from this storage."""
        if self.scales is not None:
            rounded: np.ndarray = np.clip(np.rint(tokens / self.scales), -127, 127).astype(np.float32) * self.scales
            return rounded
        return tokens.astype(self.tokens.dtype).astype(np.float32)

    def rows(self, rows: Sequence[int]) -> list[np.ndarray]:
        return [self.decode(int(self.offsets[r]), int(self.offsets[r + 1])) for r in rows]

    def maxsim_rows(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """MaxSim of one query against the given rows, their tokens gathered and decoded in one pass."""
        starts, lengths = self.offsets[rows], np.diff(self.offsets)[rows]
        bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        positions = np.repeat(starts - bounds[:-1], lengths) + np.arange(int(bounds[-1]))
        tokens = self.gather(positions)
        scores: np.ndarray = maxsim_block(np.asarray(query, dtype=np.float32), np.zeros(1, dtype=np.int64), tokens,
                                          bounds)[0]
        return scores

    def maxsim_all(self, queries: Sequence[np.ndarray]) -> np.ndarray:
        """MaxSim of every query against every row: (queries, rows) float32, exact, in token blocks decoded
        once for all queries. Each query is scored on its own, so its scores do not depend on the batch."""
        scores = np.zeros((len(queries), self.num_rows), dtype=np.float32)
        if not queries or not self.num_rows:
            return scores
        longest = max(len(q) for q in queries)
        tokens_per_block = max(1024, _SCORE_BLOCK // max(1, longest))
        first = np.zeros(1, dtype=np.int64)
        row = 0
        while row < self.num_rows:
            end = int(np.searchsorted(self.offsets, self.offsets[row] + tokens_per_block, side="right")) - 1
            end = min(max(end, row + 1), self.num_rows)
            block = self.decode(int(self.offsets[row]), int(self.offsets[end]))
            offsets = self.offsets[row:end + 1] - self.offsets[row]
            for i, query in enumerate(queries):
                scores[i, row:end] = maxsim_block(np.asarray(query, dtype=np.float32), first, block, offsets)[0]
            row = end
        return scores


def maxsim_block(stacked: np.ndarray, query_starts: np.ndarray, tokens: np.ndarray,
                 offsets: np.ndarray) -> np.ndarray:
    """MaxSim of queries (their token vectors stacked, query i from ``query_starts[i]``) against documents
    (their tokens stacked, document j at ``offsets[j]:offsets[j + 1]``); a document without tokens scores 0."""
    count = len(offsets) - 1
    if not len(tokens) or not len(stacked):
        return np.zeros((len(query_starts), count), dtype=np.float32)
    similarity = stacked @ tokens.T
    lengths = np.diff(offsets)
    present = lengths > 0
    best = np.zeros((len(stacked), count), dtype=np.float32)
    best[:, present] = np.maximum.reduceat(similarity, offsets[:-1][present], axis=1)
    return np.add.reduceat(best, query_starts, axis=0).astype(np.float32)


def maxsim(query: np.ndarray, documents: Sequence[np.ndarray]) -> np.ndarray:
    """MaxSim of one query's token vectors against each document's."""
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in documents])]).astype(np.int64)
    dimension = query.shape[1]
    tokens = np.concatenate(documents) if documents else np.zeros((0, dimension), dtype=np.float32)
    scores: np.ndarray = maxsim_block(query.astype(np.float32), np.zeros(1, dtype=np.int64),
                                      tokens.astype(np.float32), offsets)[0]
    return scores


_LOADED: BoundedCache[tuple[str, int, str], TokenVectors] = BoundedCache(4)


def stored_token_vectors(segment: Any, model_key: str) -> TokenVectors | None:
    """The segment's token vectors for ``model_key``; None when the index has none for it."""
    entry = segment.manifest.get(SECTION, {}).get(model_key)
    if entry is None:
        return None
    return _LOADED.get_or_create((str(segment.path), int(segment.manifest_inode), model_key),
                                 lambda: TokenVectors(segment.path / entry["dir"]))
