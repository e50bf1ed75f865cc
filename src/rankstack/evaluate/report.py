"""A self-contained evaluation report: HTML (plots embedded), the same numbers as JSON, and PNG plots."""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rankstack._optional import require
from rankstack.evaluate.experiment import ExperimentResult


def _pyplot() -> Any:
    matplotlib = require("matplotlib", "serve", "Report plots")
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _total_latency(latency_ms: dict[str, float]) -> float:
    return sum(latency_ms.values())


def tradeoff_plot(result: ExperimentResult, measure: str, path: Path) -> None:
    """Effectiveness (y) against mean latency per query (x, log scale) for every system."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for number, system in enumerate(result.systems):
        latency = _total_latency(system.latency_ms)
        if latency <= 0:
            continue  # a run file has no timing
        axes.scatter(latency, system.metrics[measure], s=40)
        axes.annotate(f"#{number}", (latency, system.metrics[measure]), textcoords="offset points", xytext=(5, 4))
    axes.set_xscale("log")
    axes.set_xlabel("mean latency per query (ms, log scale)")
    axes.set_ylabel(measure)
    axes.set_title(f"{measure} against latency")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def per_query_plot(result: ExperimentResult, measure: str, path: Path) -> None:
    """Per-query difference of each system from the baseline, sorted, one panel per system."""
    plt = _pyplot()
    baseline = result.baseline or 0
    others = [i for i in range(len(result.systems)) if i != baseline]
    figure, panels = plt.subplots(max(len(others), 1), 1, figsize=(7, 2.4 * max(len(others), 1)), dpi=120,
                                  squeeze=False)
    base_values = result.systems[baseline].per_query[measure]
    for panel, number in zip(panels[:, 0], others, strict=False):
        values = result.systems[number].per_query[measure]
        deltas = sorted(values[q] - base_values[q] for q in base_values)
        colours = ["#2a9d8f" if d > 0 else "#e76f51" for d in deltas]
        panel.bar(range(len(deltas)), deltas, color=colours, width=1.0)
        panel.axhline(0, color="black", linewidth=0.6)
        panel.set_ylabel(f"Δ {measure}")
        wins, losses = sum(d > 0 for d in deltas), sum(d < 0 for d in deltas)
        panel.set_title(f"#{number} vs #{baseline}: {wins} better, {losses} worse, "
                        f"{len(deltas) - wins - losses} tied", fontsize=9)
        panel.set_xticks([])
    panels[-1, 0].set_xlabel("queries, sorted by difference")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _table_html(result: ExperimentResult) -> str:
    head = "".join(f"<th>{html.escape(m)}</th>" for m in result.measures)
    rows = []
    for number, system in enumerate(result.systems):
        cells = []
        for measure in result.measures:
            comparison = system.significance.get(measure)
            mark = comparison.mark if comparison else ""
            title = f" title='p = {comparison.p_value:.4f} (Holm)'" if comparison else ""
            cells.append(f"<td{title}>{system.metrics[measure]:.4f}{mark}</td>")
        latency = _total_latency(system.latency_ms)
        stages = ", ".join(f"{html.escape(s)}: {ms:.2f}" for s, ms in system.latency_ms.items())
        rows.append(f"<tr><td>#{number}</td><td><code>{html.escape(system.name)}</code></td>{''.join(cells)}"
                    f"<td title='{stages}'>{latency:.2f}</td></tr>")
    return (f"<table><thead><tr><th></th><th>system</th>{head}<th>ms/query</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _image(path: Path) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{encoded}'>"


def write_report(result: ExperimentResult, directory: str | Path, title: str,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write ``report.html``, ``report.json``, ``tradeoff.png`` and ``per_query.png`` into ``directory``.

    Files are written to a temporary directory first and moved in one by one, so a failure never
    leaves a half-written report file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    measure = result.measures[0]
    with tempfile.TemporaryDirectory(dir=directory) as staging_name:
        staging = Path(staging_name)
        tradeoff_plot(result, measure, staging / "tradeoff.png")
        per_query_plot(result, measure, staging / "per_query.png")
        data = {"title": title, **(extra or {}), **result.to_json(),
                "per_query": {s.name: s.per_query for s in result.systems}}
        (staging / "report.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        caption = ""
        if result.baseline is not None and len(result.systems) > 1:
            caption = (f"<p>▲/▼: significantly better/worse than system #{result.baseline} (paired t-test, "
                       f"Holm–Bonferroni correction, p &lt; 0.05; {result.num_queries} queries).</p>")
        warnings = "".join(f"<p class='warning'>{html.escape(w)}</p>" for w in result.warnings)
        page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:24px auto;padding:0 16px;color:#1d232a}}
table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #e3e7eb;padding:4px 10px;text-align:right}}
td:nth-child(2),th:nth-child(2){{text-align:left}}img{{max-width:100%}}.warning{{color:#8a5a00}}</style></head>
<body><h1>{html.escape(title)}</h1>{warnings}{_table_html(result)}{caption}
<h2>{html.escape(measure)} against latency</h2>{_image(staging / "tradeoff.png")}
<h2>Per-query differences from the baseline</h2>{_image(staging / "per_query.png")}
</body></html>
"""
        (staging / "report.html").write_text(page, encoding="utf-8")
        for name in ("tradeoff.png", "per_query.png", "report.json", "report.html"):
            os.replace(staging / name, directory / name)
    return directory / "report.html"
