"""Rendering an experiment as a rich table: metrics with significance marks, latency per stage."""

from __future__ import annotations

from rich.table import Table

from rankstack.evaluate.experiment import ExperimentResult


def experiment_table(result: ExperimentResult, title: str = "") -> Table:
    table = Table(title=title or None, show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("system")
    for measure in result.measures:
        table.add_column(measure, justify="right")
    table.add_column("ms/query", justify="right")
    for position, system in enumerate(result.systems):
        cells = [str(position), system.name]
        for measure in result.measures:
            comparison = system.significance.get(measure)
            mark = comparison.mark if comparison else ""
            cells.append(f"{system.metrics[measure]:.4f}{mark}")
        cells.append(_latency_cell(system.latency_ms))
        table.add_row(*cells, style="bold" if position == result.baseline else None)
    if result.baseline is not None and len(result.systems) > 1:
        table.caption = (f"▲/▼: significantly better/worse than system {result.baseline} "
                         f"(paired t-test, Holm–Bonferroni, p < 0.05; {result.num_queries} queries)")
    return table


def _latency_cell(latency_ms: dict[str, float]) -> str:
    if not latency_ms:
        return "-"
    total = f"{sum(latency_ms.values()):.2f}"
    if len(latency_ms) == 1:
        return total
    stages = " + ".join(f"{stage.split('(')[0]} {ms:.2f}" for stage, ms in latency_ms.items())
    return f"{total} ({stages})"
