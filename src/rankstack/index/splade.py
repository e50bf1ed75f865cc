"""Learned sparse (SPLADE) impacts inside an index directory: quantised, term-major, per model.

Layout: ``splade/<model-slug>/`` holds ``meta.json`` (model, vocabulary size and checksum, the scale,
counts), ``term_indptr.npy`` (int64, one entry per vocabulary entry + 1), ``doc_indices.npy`` (int32 rows,
ascending within a term) and ``impacts.npy`` (uint8): the postings of the document-term weight matrix
stored by term, as the BM25 postings are. A weight ``w`` is stored as ``max(1, round(w / scale))`` with
``scale = largest weight / 255``, so every weight the model gave survives and a score is
``scale * sum(query weight * impact)``. The directory is written beside its final name and renamed into
place, then entered into the manifest with checksums of its files.

A live index's added documents are not stored here: the splade stage encodes them on first use; a
compaction carries the impacts into the new segment (the live rows' impacts unchanged, the added documents
encoded then, and all re-quantised on a larger scale only when an added document outweighs every stored
one: :func:`carry_over`). Building is resumable: encoded chunks wait in ``splade/<slug>.building/``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankstack.errors import IndexCorruptError, RankstackError
from rankstack.index.dense import dense_slug
from rankstack.index.manifest import update_manifest
from rankstack.models.encoder import TruncationReport
from rankstack.models.splade import SpladeEncoder

IMPACT_MAX = 255
SPLADE_FILES = ("meta.json", "term_indptr.npy", "doc_indices.npy", "impacts.npy")
DEFAULT_CHUNK = 256


def quantise(weights: Any, scale: float) -> Any:
    """A copy of the sparse matrix ``weights`` with uint8 impacts: ``max(1, round(w / scale))``, capped at 255."""
    quantised = weights.copy()
    quantised.data = np.clip(np.rint(weights.data / scale), 1, IMPACT_MAX).astype(np.uint8)
    return quantised


def _save_chunk(path: Path, weights: Any, report: TruncationReport) -> None:
    """One encoded chunk (CSR arrays and its truncation counts), written beside its name and renamed."""
    weights = weights.tocsr()
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, data=weights.data.astype(np.float32), indices=weights.indices.astype(np.int32),
             indptr=weights.indptr.astype(np.int64), shape=np.array(weights.shape, dtype=np.int64),
             report=np.array([report.texts, report.truncated, report.longest_tokens], dtype=np.int64))
    os.replace(partial, path)


def _load_chunk(path: Path) -> tuple[Any, TruncationReport]:
    from scipy import sparse

    with np.load(path) as loaded:
        weights = sparse.csr_matrix((loaded["data"], loaded["indices"], loaded["indptr"]),
                                    shape=tuple(int(x) for x in loaded["shape"]))
        texts, truncated, longest = (int(x) for x in loaded["report"])
    return weights, TruncationReport(texts, truncated, longest)


def build_splade(index: Any, encoder: SpladeEncoder, chunk: int = DEFAULT_CHUNK,
                 progress: Callable[[int], None] | None = None) -> Path:
    """Encode every document of ``index``'s segment with ``encoder`` and add the quantised impacts to the
    directory (documents added live since are encoded by the stage at search time).

    Resumable: each encoded chunk is kept in ``splade/<slug>.building/`` until the impacts are written, so
    an interrupted build (Ctrl-C, a crash) encodes only the chunks it had not finished when run again;
    chunks of another model, chunk size or corpus are discarded."""
    from scipy import sparse

    segment = index.segment
    slug = dense_slug(encoder.model_id)
    work = segment.path / "splade" / f"{slug}.building"
    plan = {"encoder": encoder.config(), "num_docs": segment.num_docs, "chunk": chunk}
    plan_path = work / "plan.json"
    if work.exists() and (not plan_path.exists() or json.loads(plan_path.read_text(encoding="utf-8")) != plan):
        shutil.rmtree(work)  # chunks of another model or corpus are useless
    work.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(plan), encoding="utf-8")
    report = TruncationReport()
    parts = []
    for number, start in enumerate(range(0, segment.num_docs, chunk)):
        path = work / f"chunk-{number:06d}.npz"
        count = min(chunk, segment.num_docs - start)
        if not path.exists():  # a finished chunk of an interrupted run is never encoded again
            docs = segment.docstore.range(start, start + count)
            own = TruncationReport()
            weights = encoder.encode_docs([d.contents for d in docs], own)
            weights.eliminate_zeros()
            _save_chunk(path, weights, own)
        weights, own = _load_chunk(path)
        parts.append(weights)
        report.texts += own.texts
        report.truncated += own.truncated
        report.longest_tokens = max(report.longest_tokens, own.longest_tokens)
        if progress is not None:
            progress(count)
    report.warn("documents", encoder.max_tokens, encoder.document_windows)
    matrix = sparse.vstack(parts, format="csr") if parts else sparse.csr_matrix((0, encoder.dimension))
    meta = {**encoder.config(), "truncated_docs": report.truncated, "longest_doc_tokens": report.longest_tokens}
    final = write_splade_impacts(segment.path, encoder.model_id, meta, matrix)
    shutil.rmtree(work, ignore_errors=True)
    return final


def write_splade_impacts(index_path: Path, model_id: str, meta: dict[str, Any], weights: Any,
                         scale: float | None = None) -> Path:
    """Store float ``weights`` (rows: index rows, columns: the model's vocabulary) quantised and term-major;
    ``scale`` keeps an earlier scale (a compaction: stored impacts then come back unchanged)."""
    weights = weights.tocsc()
    weights.sort_indices()
    largest = float(weights.data.max()) if weights.nnz else 1.0
    if scale is None:
        scale = largest / IMPACT_MAX if largest > 0 else 1.0
    impacts = quantise(weights, scale)
    rows, columns = weights.shape
    meta = {**meta, "count": int(rows), "postings": int(impacts.nnz), "scale": scale, "quantisation": "uint8",
            "mean_terms_per_doc": round(float(impacts.nnz) / max(rows, 1), 2)}
    root = index_path / "splade"
    slug = dense_slug(model_id)
    staging = root / f"{slug}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    np.save(staging / "term_indptr.npy", impacts.indptr.astype(np.int64))
    np.save(staging / "doc_indices.npy", impacts.indices.astype(np.int32))
    np.save(staging / "impacts.npy", impacts.data.astype(np.uint8))
    (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    final = root / slug
    retired = root / f"{slug}.retired"
    if final.exists():
        os.rename(final, retired)
    os.rename(staging, final)
    update_manifest(index_path, prefix=f"splade/{slug}/", section=("splade", model_id),
                    section_value={"dir": f"splade/{slug}", "model": model_id, "vocab_size": int(columns),
                                   "vocab_sha256": meta.get("vocab_sha256"), "scale": scale,
                                   "postings": int(impacts.nnz)})
    shutil.rmtree(retired, ignore_errors=True)
    return final


@dataclass
class SpladeImpacts:
    """Loaded impacts of one model: a (rows x vocabulary) CSC matrix of impacts, and its scale."""

    directory: Path
    meta: dict[str, Any]
    matrix: Any  # scipy.sparse.csc_matrix of float32 impact values (whole numbers 1..255)

    @classmethod
    def load(cls, directory: Path) -> SpladeImpacts:
        from scipy import sparse

        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        indptr = np.load(directory / "term_indptr.npy")
        indices = np.load(directory / "doc_indices.npy")
        impacts = np.load(directory / "impacts.npy")
        vocab_size = int(meta["vocab_size"])
        if len(indptr) != vocab_size + 1 or len(indices) != len(impacts) or int(indptr[-1]) != len(impacts):
            raise IndexCorruptError(f"the SPLADE impacts in {directory} are inconsistent (term pointers, rows and "
                                    "impacts disagree); rebuild them with: rankstack index CORPUS -o DIR "
                                    f"--sparse {meta.get('model', 'MODEL')}")
        matrix = sparse.csc_matrix((impacts.astype(np.float32), indices, indptr),
                                   shape=(int(meta["count"]), vocab_size))
        return cls(directory, meta, matrix)

    @property
    def scale(self) -> float:
        return float(self.meta["scale"])

    @property
    def num_docs(self) -> int:
        return int(self.matrix.shape[0])

    def check_encoder(self, encoder: SpladeEncoder, index_path: Path) -> None:
        if int(self.meta["vocab_size"]) != len(encoder.vocab) or \
                self.meta.get("vocab_sha256") != encoder.vocab_sha256:
            raise RankstackError(
                f"the SPLADE impacts of {index_path} for '{self.meta['model']}' were written with a "
                f"{self.meta['vocab_size']}-entry vocabulary (checksum {str(self.meta.get('vocab_sha256'))[:12]}), "
                f"but the model loaded now has {len(encoder.vocab)} entries (checksum {encoder.vocab_sha256[:12]}): "
                f"its term ids would match the wrong terms. Re-encode the documents with: rankstack index CORPUS "
                f"-o {index_path} --sparse {encoder.model_id}")

    def scores(self, queries: Any) -> np.ndarray:
        """(queries x rows) float32 scores for a (queries x vocabulary) sparse matrix of query weights; only
        the postings of the queries' terms are read."""
        queries = queries.tocsr()
        terms = np.unique(queries.indices)
        if len(terms) == 0:
            return np.zeros((queries.shape[0], self.num_docs), dtype=np.float32)
        postings = self.matrix[:, terms]  # CSC column selection: the selected terms' postings only
        weights = queries[:, terms].toarray().astype(np.float32)
        return np.asarray((postings @ weights.T).T * self.scale, dtype=np.float32)


def carry_over(index: Any, view: Any, staging: Path, model_id: str) -> None:
    """Write ``model_id``'s impacts for a compaction of ``view`` into ``staging``: the stored rows of the
    segment's live documents (impacts unchanged: same scale), then the added live documents, encoded now."""
    from scipy import sparse

    from rankstack.models.splade import load_splade

    impacts = index.splade_impacts(model_id)
    if impacts is None:
        raise IndexCorruptError(f"{index.path} lists SPLADE impacts '{model_id}' in its manifest, but they cannot "
                                "be opened; rebuild the index")
    segment, alive, added = live_parts(view)
    base = segment.num_docs
    alive = np.ones(base + len(added), dtype=bool) if alive is None else alive
    parts = [impacts.matrix.tocsr()[np.flatnonzero(alive[:base])] * impacts.scale]
    fresh = [doc for position, doc in enumerate(added) if alive[base + position]]
    scale = impacts.scale
    if fresh:
        encoded = load_splade(model_id).encode_docs([d.contents for d in fresh], windows=document_windows(impacts.meta))
        parts.append(encoded)
        # An added document may outweigh every stored one; keeping the old scale would clip its weights at
        # 255. Then everything is re-quantised on the larger scale (stored impacts round to the new steps).
        if encoded.nnz and float(encoded.data.max()) > scale * IMPACT_MAX:
            scale = float(encoded.data.max()) / IMPACT_MAX
    write_splade_impacts(staging, model_id, impacts.meta, sparse.vstack(parts, format="csr"), scale=scale)


def document_windows(meta: dict[str, Any]) -> int:
    """How many windows per document the stored impacts were encoded with (1, truncation, before windows
    were recorded): documents added later are encoded the same way."""
    return int(meta.get("document_windows", 1))


def live_parts(view: Any) -> tuple[Any, np.ndarray | None, list[Any]]:
    """(segment, alive mask over every row or None, the added documents whose rows follow the segment's)."""
    added = getattr(view, "added", None)
    if added is not None:  # a LiveView (checked by shape: live_view imports the segment, which imports this)
        return view.segment, view.alive, [a.doc for a in added]
    return view, None, []
