"""Approximate late-interaction search: centroids of the stored token vectors and an inverted file over them.

Exact MaxSim as a first stage multiplies the query's tokens with every token of the collection, which is
fine for tens of thousands of documents and too slow for millions. The approximate index follows PLAID's
candidate generation (Santhanam et al., 2022): the token vectors are clustered (spherical k-means on a
sample, ``2 ** floor(log2(16 * sqrt(tokens)))`` centroids as ColBERTv2 chooses); every stored token is
assigned its nearest centroid, and an inverted file lists for each centroid the documents with a token
there. A query then

1. scores its tokens against the centroids and takes each token's ``nprobe`` best centroids;
2. gathers the documents listed under them (the candidates);
3. ranks the candidates by MaxSim over the centroid scores of their entries in those lists (PLAID's
   centroid interaction with centroid pruning: a document's tokens under centroids no query token probed
   count 0; no vector is decoded);
4. rescores the best ``candidates`` of them exactly with the stored vectors.

Files, next to the token vectors in ``late_interaction/<model-slug>/`` and checksummed in the manifest
like them: ``centroids.npy`` (k x dimension, float32, unit length), ``ivf_indptr.npy`` and
``ivf_rows.npy`` (for centroid c, the sorted rows ``ivf_rows[ivf_indptr[c]:ivf_indptr[c + 1]]``, each row
once). The vectors themselves stay as stored (int8 with
per-dimension scales by default, 64 bytes a token): PLAID's residual compression to 2 bits is not done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rankstack.errors import RankstackError
from rankstack.index.manifest import MANIFEST_NAME, update_manifest

if TYPE_CHECKING:
    from rankstack.index.token_vectors import TokenVectors

FILES = ("centroids.npy", "ivf_indptr.npy", "ivf_rows.npy")
AUTO_FROM_TOKENS = 2_000_000  # below this many stored tokens exact MaxSim is fast enough: no centroids by default
DEFAULT_NPROBE = 4
DEFAULT_CANDIDATES = 1024
_ASSIGN_BLOCK = 65_536
_SAMPLE_PER_CENTROID = 16
_ITERATIONS = 8


def centroid_count(tokens: int) -> int:
    """ColBERTv2's choice: the power of two at or below 16 * sqrt(tokens), at most one per token."""
    if tokens < 2:
        return 1
    return int(min(tokens, 2 ** int(np.floor(np.log2(16.0 * np.sqrt(tokens))))))


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    normalised: np.ndarray = rows / np.maximum(norms, 1e-12)
    return normalised.astype(np.float32)


def _assign(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    codes = np.empty(len(vectors), dtype=np.int32)
    for start in range(0, len(vectors), _ASSIGN_BLOCK):
        codes[start:start + _ASSIGN_BLOCK] = np.argmax(vectors[start:start + _ASSIGN_BLOCK] @ centroids.T, axis=1)
    return codes


def train_centroids(sample: np.ndarray, k: int, seed: int = 0, iterations: int = _ITERATIONS) -> np.ndarray:
    """Spherical k-means: ``k`` unit centroids of the (unit) ``sample`` rows; an emptied centroid is reseeded
    on a random sample row, so all ``k`` stay in use."""
    rng = np.random.default_rng(seed)
    sample = _unit(sample)
    centroids = sample[rng.choice(len(sample), size=k, replace=False)].copy()
    for _ in range(iterations):
        codes = _assign(sample, centroids)
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=k)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        used = counts > 0
        sums = np.zeros_like(centroids)
        sums[used] = np.add.reduceat(sample[order], starts[used], axis=0)
        centroids = np.where(used[:, None], _unit(sums), centroids)
        empty = np.flatnonzero(~used)
        if len(empty):
            centroids[empty] = sample[rng.choice(len(sample), size=len(empty), replace=False)]
    return centroids


@dataclass(frozen=True)
class TokenCentroids:
    """The approximate index of one model's stored token vectors."""

    centroids: np.ndarray
    ivf_indptr: np.ndarray
    ivf_rows: np.ndarray

    @classmethod
    def load(cls, directory: Path) -> TokenCentroids | None:
        if not all((directory / name).is_file() for name in FILES):
            return None
        return cls(*(np.load(directory / name) for name in FILES))

    def candidates(self, query: np.ndarray, nprobe: int, keep: int) -> np.ndarray:
        """Rows worth scoring exactly for ``query`` (its token vectors): those with a token under one of each
        query token's ``nprobe`` best centroids, cut to the ``keep`` best by centroid interaction."""
        scores = np.asarray(query, dtype=np.float32) @ self.centroids.T
        probe = min(nprobe, scores.shape[1])
        probed = np.unique(np.argpartition(-scores, probe - 1, axis=1)[:, :probe])
        lengths = self.ivf_indptr[probed + 1] - self.ivf_indptr[probed]
        if not lengths.sum():
            return np.zeros(0, dtype=np.int64)
        entries = np.concatenate([self.ivf_rows[self.ivf_indptr[c]:self.ivf_indptr[c + 1]] for c in probed])
        rows, inverse = np.unique(entries, return_inverse=True)
        if len(rows) <= keep:
            return rows.astype(np.int64)
        per_row = np.zeros((len(rows), len(scores)), dtype=np.float32)  # unprobed centroids count 0
        np.maximum.at(per_row, inverse, scores[:, np.repeat(probed, lengths)].T)
        chosen = np.argpartition(-per_row.sum(axis=1), keep - 1)[:keep]
        return np.sort(rows[chosen]).astype(np.int64)


def build_token_centroids(stored: TokenVectors, k: int | None = None, seed: int = 0,
                          progress: Callable[[int], None] | None = None) -> TokenCentroids:
    """Cluster ``stored``'s token vectors, assign every token, write the inverted file next to the vectors
    (each file written whole, then renamed) and enter the files into the index manifest."""
    offsets = stored.offsets
    total, rows = int(offsets[-1]), stored.num_rows
    if total == 0:
        raise RankstackError(f"{stored.directory}: no token vectors to cluster (an empty collection)")
    k = min(k or centroid_count(total), total)
    rng = np.random.default_rng(seed)
    sample_size = min(total, max(k * _SAMPLE_PER_CENTROID, 8_192))
    picked = np.sort(rng.choice(total, size=sample_size, replace=False))
    centroids = train_centroids(stored.gather(picked), k, seed)
    codes = np.empty(total, dtype=np.int32)
    for start in range(0, total, _ASSIGN_BLOCK):
        stop = min(total, start + _ASSIGN_BLOCK)
        codes[start:stop] = _assign(_unit(stored.decode(start, stop)), centroids)
        if progress is not None:
            progress(stop - start)
    token_rows = np.repeat(np.arange(rows, dtype=np.int64), np.diff(offsets))
    pairs = np.unique(codes.astype(np.int64) * max(rows, 1) + token_rows)  # (centroid, row), each once, sorted
    ivf_rows = (pairs % max(rows, 1)).astype(np.int32)
    ivf_indptr = np.concatenate([[0], np.cumsum(np.bincount(pairs // max(rows, 1), minlength=k))]).astype(np.int64)
    built = TokenCentroids(centroids, ivf_indptr, ivf_rows)
    _publish(stored, built)
    return built


def _publish(stored: TokenVectors, built: TokenCentroids) -> None:
    directory = stored.directory
    for name, array in zip(FILES, (built.centroids, built.ivf_indptr, built.ivf_rows), strict=True):
        temporary = directory / f".{name}.tmp.npy"
        np.save(temporary, array)
        os.replace(temporary, directory / name)
    meta = {**stored.meta, "centroids": int(len(built.centroids))}
    temporary = directory / ".meta.json.tmp"  # replaced whole: a crash leaves the old meta, never half a file
    temporary.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, directory / "meta.json")
    index_path, section, slug = directory.parent.parent, directory.parent.name, directory.name
    manifest = json.loads((index_path / MANIFEST_NAME).read_text(encoding="utf-8"))
    entry: dict[str, Any] = dict(manifest[section][stored.meta["model"]])
    entry["centroids"] = int(len(built.centroids))
    update_manifest(index_path, prefix=f"{section}/{slug}/", section=(section, stored.meta["model"]),
                    section_value=entry)
