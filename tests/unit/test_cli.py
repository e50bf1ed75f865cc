from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rankstack.cli import app, main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run through main() so errors take the same path as on the command line."""
    monkeypatch.setattr("sys.argv", ["rankstack", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_index_search_run_eval(tiny_beir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    index_dir = tmp_path / "idx"
    code, _, err = invoke(["index", str(tiny_beir), "-o", str(index_dir)], monkeypatch, capsys)
    assert code == 0 and "indexed 6 documents" in err

    code, out, _ = invoke(["search", str(index_dir), "parrot feathers", "-k", "2", "--json"], monkeypatch, capsys)
    payload = json.loads(out)
    assert code == 0 and payload["hits"][0]["doc_id"] == "d5" and len(payload["hits"]) <= 2
    assert payload["pipeline"] == "bm25(k1=0.9,b=0.4)"

    run_file = tmp_path / "out.run"
    code, _, err = invoke(["run", str(index_dir), "-q", str(tiny_beir / "queries.jsonl"), "-p", "bm25%3",
                           "-o", str(run_file)], monkeypatch, capsys)
    assert code == 0 and run_file.read_text().startswith("q1 Q0 d1 1 ")
    assert "q1 Q0 q1 " not in run_file.read_text()  # BEIR index: identical ids dropped by default

    code, out, _ = invoke(["eval", str(tiny_beir), "-p", "bm25", "-p", "bm25(k1=1.2,b=0.75)", "--metrics",
                           "nDCG@10,RR@10", "--index", str(index_dir), "--json"], monkeypatch, capsys)
    result = json.loads(out)
    assert code == 0
    assert [s["pipeline"] for s in result["systems"]] == ["bm25(k1=0.9,b=0.4)", "bm25(k1=1.2,b=0.75)"]
    assert set(result["systems"][0]["metrics"]) == {"nDCG@10", "RR@10"}
    assert list(result["systems"][0]["latency_ms"]) == ["bm25(k1=0.9,b=0.4)"]
    assert result["systems"][1]["significance"]["nDCG@10"]["p_value"] <= 1.0

    code, out, _ = invoke(["eval", str(tiny_beir), "--run", str(run_file), "-m", "RR@10"], monkeypatch, capsys)
    assert code == 0 and "RR@10" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["search", "{missing}", "cats"], 4, "no index at"),
        (["search", "{index}", "   "], 6, "the query is empty"),
        (["search", "{index}", "cats", "-p", "bm25 >>"], 5, "expected a stage name"),
        (["search", "{index}", "cats", "-p", "dense9"], 5, "unknown stage 'dense9'"),
        (["eval", "{beir}", "-m", "nDCG@x"], 5, "unknown measure"),
        (["eval", "{beir}", "--split", "dev"], 6, "no qrels for split 'dev'"),
        (["index", "{bad_corpus}", "-o", "{fresh}"], 6, "bad.jsonl:2: malformed JSON"),
    ],
)
def test_errors_are_one_clear_line(args, code, message, tiny_beir: Path, tmp_path: Path, monkeypatch,
                                   capsys) -> None:
    from rankstack.index import build_index

    index_dir = build_index(tiny_beir, tmp_path / "idx")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "x"}\n{oops\n')
    values = {"missing": str(tmp_path / "missing"), "index": str(index_dir), "beir": str(tiny_beir),
              "bad_corpus": str(bad), "fresh": str(tmp_path / "fresh")}
    exit_code, _, err = invoke([a.format(**values) for a in args], monkeypatch, capsys)
    assert exit_code == code
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "fresh").exists()


def test_qrels_with_unknown_queries_warn_and_count(tiny_beir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    with (tiny_beir / "qrels" / "test.tsv").open("a") as handle:
        handle.write("ghost\td1\t1\n")
    code, out, err = invoke(["eval", str(tiny_beir), "--index", str(tmp_path / "i"), "--json"], monkeypatch, capsys)
    assert code == 0
    assert "1 qrels rows name 1 queries that are not in the query file" in err
    assert json.loads(out)["num_queries"] == 4


def test_help_lists_the_commands(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("index", "search", "run", "eval", "demo"):
        assert command in result.output


def test_eval_report_writes_html_json_and_plots(tiny_beir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("matplotlib")
    report = tmp_path / "report"
    code, _, err = invoke(["eval", str(tiny_beir), "-p", "bm25", "-p", "bm25(k1=2.0,b=1.0)", "--index",
                           str(tmp_path / "i"), "--report", str(report), "-m", "nDCG@10"], monkeypatch, capsys)
    assert code == 0 and "report.html" in err
    assert sorted(p.name for p in report.iterdir()) == ["per_query.png", "report.html", "report.json",
                                                        "tradeoff.png"]
    data = json.loads((report / "report.json").read_text())
    assert [s["pipeline"] for s in data["systems"]] == ["bm25(k1=0.9,b=0.4)", "bm25(k1=2.0,b=1.0)"]
    assert set(data["per_query"]["bm25(k1=0.9,b=0.4)"]["nDCG@10"]) == {"q1", "q2", "q3", "q4"}
    page = (report / "report.html").read_text()
    assert "data:image/png;base64," in page and "bm25(k1=2.0,b=1.0)" in page
    assert (report / "tradeoff.png").read_bytes().startswith(b"\x89PNG")


def test_add_delete_compact(tiny_beir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    index_dir = tmp_path / "idx"
    assert invoke(["index", str(tiny_beir), "-o", str(index_dir)], monkeypatch, capsys)[0] == 0
    extra = tmp_path / "more.jsonl"
    extra.write_text('{"_id": "n1", "text": "hamsters run on wheels"}\n{"_id": "d4", "text": "goldfish gone"}\n')
    code, _, err = invoke(["add", str(index_dir), str(extra)], monkeypatch, capsys)
    assert code == 0 and "added 2 documents" in err
    code, out, _ = invoke(["search", str(index_dir), "hamsters", "--json"], monkeypatch, capsys)
    assert json.loads(out)["hits"][0]["doc_id"] == "n1"
    code, _, err = invoke(["delete", str(index_dir), "n1", "ghost"], monkeypatch, capsys)
    assert code == 0 and "deleted 1 documents" in err and "ghost" in err
    code, _, err = invoke(["delete", str(index_dir), "ghost"], monkeypatch, capsys)
    assert code == 2 and "not in the index" in err
    code, _, err = invoke(["compact", str(index_dir)], monkeypatch, capsys)
    assert code == 0 and "compacted" in err
    code, out, _ = invoke(["search", str(index_dir), "goldfish", "--json"], monkeypatch, capsys)
    assert [h["doc_id"] for h in json.loads(out)["hits"]] == ["d4"]
    code, out, _ = invoke(["search", str(index_dir), "hamsters", "--json"], monkeypatch, capsys)
    assert json.loads(out)["hits"] == []
