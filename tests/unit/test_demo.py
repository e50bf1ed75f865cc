"""The demo's first run: BM25 results before any encoding, vectors cached once, interruptions resumed.

A fake bi-encoder stands in for the model (hashed words, so results are deterministic), and a handful
of documents for the Python docs; the flow, the index writes and the CLI output are the real ones.
"""

from __future__ import annotations

import _thread
import hashlib
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from rankstack import demo
from rankstack.cli import main
from rankstack.types import Doc

pytest.importorskip("faiss")

DOCS = [
    Doc("topic:files", "Files are read line by line with a for loop over the open file.", "files (language reference)"),
    Doc("fileinput", "Helper class to quickly write a loop over all standard input files.\n\nTypical use: ...",
        "fileinput (module)"),
    Doc("argparse", "Command-line parsing library.\n\nThis module is an optparse-inspired parser.", "argparse"),
    Doc("re.match", "Try to apply the pattern at the start of the string, returning a Match object.", "re.match"),
    Doc("subprocess.run", "Run command with arguments and return a CompletedProcess instance.", "subprocess.run"),
    Doc("list.sort", "Sort the list in place, using only < comparisons; a key function may be given.", "sorting"),
    Doc("shlex.split", "Split the string s using shell-like syntax.", "shlex.split (function)"),
]
ENCODING = "<encoding a shard>"
STARTED: list = []  # the vector builds the demo started


class FakeEncoder:
    """Enough of rankstack.models.encoder.BiEncoder for the demo: hashed bag-of-words vectors."""

    dimension, max_tokens, normalize, similarity = 32, 256, True, "cosine"

    def __init__(self, fail_on_call: int | None = None, interrupt_on_call: int | None = None) -> None:
        from rankstack.models.encoder import resolve_precision
        from rankstack.models.loading import canonical_model_id

        self.model_id, self.precision = canonical_model_id("default"), resolve_precision("auto")
        self.doc_calls: list[int] = []
        self.fail_on_call, self.interrupt_on_call = fail_on_call, interrupt_on_call
        self.cancelled = threading.Event()

    def _vectors(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, hashlib.md5(word.encode()).digest()[0] % self.dimension] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._vectors(list(texts))

    def encode_docs(self, texts: list[str], report: object = None) -> np.ndarray:
        self.doc_calls.append(len(texts))
        print(ENCODING, flush=True)  # lands in the captured stdout, between the tables
        if len(self.doc_calls) == self.fail_on_call:
            raise RuntimeError("the encoder broke")
        if len(self.doc_calls) == self.interrupt_on_call:
            _thread.interrupt_main()  # as Ctrl-C would, while the main thread waits for the vectors
            assert self.cancelled.wait(10), "the main thread did not stop the build"
        return self._vectors(list(texts))

    def config(self) -> dict[str, object]:
        return {"model": self.model_id, "dimension": self.dimension, "similarity": self.similarity,
                "normalize": True, "max_tokens": self.max_tokens, "precision": self.precision,
                "query_prefix": "", "doc_prefix": ""}


@pytest.fixture
def demo_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RANKSTACK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("rankstack.demo.python_docs_corpus", lambda: iter(DOCS))
    monkeypatch.setattr("rankstack.demo.vectors.SHARD_SIZE", 2)  # 4 shards for 7 documents
    start = demo.start_vectors

    def start_and_keep(index: object) -> object:
        build = start(index)
        STARTED.append(build) if build is not None else None
        return build

    monkeypatch.setattr(demo, "start_vectors", start_and_keep)

    def use(encoder: FakeEncoder) -> FakeEncoder:
        monkeypatch.setattr("rankstack.models.encoder.load_encoder", lambda *args, **kwargs: encoder)
        return encoder

    return use


def run_demo(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["rankstack", "demo", "--no-serve", "-k", "3"])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    for build in STARTED:  # a stopped build finishes its shard before the next run starts
        assert build.done.wait(60)  # fsync on a busy disk can be slow
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bm25_results_are_printed_before_encoding_starts(demo_env, monkeypatch, capsys) -> None:
    encoder = demo_env(FakeEncoder())
    code, out, err = run_demo(monkeypatch, capsys)
    assert code == 0, err
    assert encoder.doc_calls == [2, 2, 2, 1]
    last_bm25, first_encoding, first_hybrid = out.rindex("[bm25("), out.index(ENCODING), out.index("[rrf(")
    assert last_bm25 < first_encoding < first_hybrid
    assert out.count("[bm25(") == 5 and out.count("[rrf(") == 5
    assert "built meanwhile" in err and "BM25 results first" in err


def test_a_second_run_reuses_the_index_and_the_vectors(demo_env, monkeypatch, capsys) -> None:
    demo_env(FakeEncoder())
    assert run_demo(monkeypatch, capsys)[0] == 0
    monkeypatch.setattr("rankstack.demo.python_docs_corpus", lambda: pytest.fail("the corpus was read again"))
    encoder = demo_env(FakeEncoder())
    code, out, err = run_demo(monkeypatch, capsys)
    assert code == 0, err
    assert encoder.doc_calls == [] and ENCODING not in out and "built meanwhile" not in err
    assert out.count("[bm25(") == 5 and out.count("[rrf(") == 5


def _bm25_still_works() -> None:
    from rankstack.demo import demo_index_path
    from rankstack.index import Index
    from rankstack.stages import SearchContext, parse_pipeline
    from rankstack.types import Query

    index = Index.open(demo_index_path())
    try:
        assert index.dense_keys() == []  # no vectors entered, half-built or otherwise
        run = parse_pipeline("bm25", index).transform([Query("q", "parse command line")], context=SearchContext())
        assert run.results["q"][0].doc_id == "argparse"
        shards = sorted(p.name for p in (index.path / "dense").glob("*.building/shard-*.npy"))
        assert shards == ["shard-000000.npy"]  # the finished shard is kept for the next run
    finally:
        index.close()


def test_a_failed_encoding_keeps_bm25_and_the_next_run_resumes(demo_env, monkeypatch, capsys) -> None:
    demo_env(FakeEncoder(fail_on_call=2))
    code, out, err = run_demo(monkeypatch, capsys)
    assert code != 0 and out.count("[bm25(") == 5 and "[rrf(" not in out
    assert "building the demo's vectors failed (RuntimeError: the encoder broke)" in err and "resumes" in err
    _bm25_still_works()
    encoder = demo_env(FakeEncoder())
    code, out, err = run_demo(monkeypatch, capsys)
    assert code == 0, err
    assert encoder.doc_calls == [2, 2, 1]  # only the shards the first run did not finish
    assert out.count("[rrf(") == 5


@pytest.fixture
def python_sigint_handler():
    """Ctrl-C handled as in a fresh interpreter: a library another test used may have replaced the handler,
    and ``_thread.interrupt_main`` does nothing where SIGINT is not handled by Python's default."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("python_sigint_handler")
def test_ctrl_c_while_encoding_stops_cleanly_and_the_next_run_resumes(demo_env, monkeypatch, capsys) -> None:
    from rankstack.demo.vectors import VectorBuild

    encoder = demo_env(FakeEncoder(interrupt_on_call=1))
    cancel = VectorBuild.cancel

    def cancel_and_tell(build: VectorBuild) -> None:
        cancel(build)
        encoder.cancelled.set()

    monkeypatch.setattr(VectorBuild, "cancel", cancel_and_tell)
    code, out, err = run_demo(monkeypatch, capsys)
    assert code == 130 and "the next run resumes" in err and out.count("[bm25(") == 5 and "[rrf(" not in out
    _bm25_still_works()
    encoder = demo_env(FakeEncoder())
    assert run_demo(monkeypatch, capsys)[0] == 0
    assert encoder.doc_calls == [2, 2, 1]


def test_the_vectors_encode_each_documents_opening() -> None:
    from rankstack.demo.vectors import OPENING_CHARS, opening

    assert opening("argparse (module) Command-line parsing library.\n\nThis module is") == \
        "argparse (module) Command-line parsing library."
    assert opening("if (language reference) " + "word " * 1000) == ("if (language reference) " + "word " * 1000)[
        :OPENING_CHARS]


def test_modules_removed_from_newer_pythons_are_left_out(tmp_path: Path) -> None:
    from rankstack.demo.corpus import stdlib_docstring_docs

    for package in ("json", "distutils", "telnetlib"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f'"""The {package} package, documented at some length."""\n')
    assert [d.doc_id for d in stdlib_docstring_docs(tmp_path)] == ["json"]
