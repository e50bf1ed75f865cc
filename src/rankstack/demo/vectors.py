"""The demo's dense vectors, built in a background thread while the BM25 results are on the screen.

What is encoded is each document's opening: its title and first paragraph (for a docstring, the
summary PEP 257 asks for), at most ``OPENING_CHARS`` characters. BM25 still reads every word. The
openings are less than half the word pieces of the whole texts, so the one-off encoding on a first
run takes less than half the time; the vectors' metadata records the choice (``doc_text``).

The build is :func:`rankstack.index.dense.build_dense`'s: shards of finished vectors survive an
interruption and the next run resumes from them; nothing enters the index until every shard is done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rankstack.errors import RankstackError

SHARD_SIZE = 256  # documents per resumable shard: what a Ctrl-C can cost, and how often progress moves
OPENING_CHARS = 1_000  # past the model's 256-word-piece window for almost any text
DOC_TEXT = "title and first paragraph"


def opening(contents: str) -> str:
    """The title and first paragraph of a document's contents (title and text joined by a space)."""
    return contents.strip()[:OPENING_CHARS].split("\n\n", 1)[0]


class OpeningEncoder:
    """A bi-encoder that encodes documents from their opening; queries and the rest are the model's."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode_docs(self, texts: Sequence[str], report: Any = None) -> np.ndarray:
        # No truncation report: the openings are cut on purpose, a warning about them would mislead.
        return self._encoder.encode_docs([opening(t) for t in texts])

    def config(self) -> dict[str, Any]:
        return {**self._encoder.config(), "doc_text": DOC_TEXT}


class _Cancelled(Exception):
    """Raised inside the build when the main thread was interrupted."""


def _load_encoder(model: str, precision: str) -> Any:
    from rankstack.models import encoder  # looked up at call time, so tests can substitute a fake

    return encoder.load_encoder(model, precision)


class VectorBuild:
    """Loads the model at once in a daemon thread; encodes after :meth:`finish` is called.

    Encoding waits for ``finish`` so that the BM25 results printed meanwhile do not compete with it.
    ``finish`` blocks until the vectors are in the index (or raises the thread's error); Ctrl-C there
    stops the thread after the shard in hand, keeping the finished shards for the next run.
    """

    def __init__(self, path: Path, model: str = "default", precision: str = "auto") -> None:
        self.path = path
        self.model, self.precision = model, precision
        self.error: BaseException | None = None
        self._advance: Callable[[int], None] | None = None
        self._go = threading.Event()
        self._stop = threading.Event()
        self.done = threading.Event()  # waited on instead of join(): a Ctrl-C inside join() can spoil it
        self._thread = threading.Thread(target=self._run, name="demo-vectors", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            encoder = _load_encoder(self.model, self.precision)
            self._go.wait()
            if self._stop.is_set():
                return
            from rankstack.index import Index
            from rankstack.index.dense import build_dense

            index = Index.open(self.path, verify_checksums=False)  # its own handle: no sharing across threads
            try:
                build_dense(index, OpeningEncoder(encoder), shard_size=SHARD_SIZE,  # type: ignore[arg-type]
                            progress=self._progress)
            finally:
                index.close()
        except _Cancelled:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the main thread, which raises it
            self.error = error
        finally:
            self.done.set()

    def _progress(self, count: int) -> None:
        if self._stop.is_set():
            raise _Cancelled
        if self._advance is not None:
            self._advance(count)

    def finish(self, advance: Callable[[int], None] | None = None) -> None:
        self._advance = advance
        self._go.set()
        try:
            # Polled with sleep rather than Event.wait: Ctrl-C's KeyboardInterrupt is raised wherever the main
            # thread happens to be, and raised inside threading's Condition code it can leave the lock state
            # broken (a RuntimeError instead of a clean interruption). Here it lands in sleep or in this loop.
            while not self.done.is_set():
                time.sleep(0.05)
        except BaseException:
            self.cancel()
            raise
        if isinstance(self.error, RankstackError):
            raise self.error
        if self.error is not None:
            raise RankstackError(
                f"building the demo's vectors failed ({type(self.error).__name__}: {self.error}); the BM25 index "
                f"at {self.path} is complete and kept, and a rerun resumes the vectors") from self.error

    def cancel(self) -> None:
        self._stop.set()
        self._go.set()
