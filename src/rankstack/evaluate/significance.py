"""Paired significance tests against a baseline, with Holm–Bonferroni correction across systems."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Comparison:
    p_value: float          # after correction
    raw_p_value: float
    difference: float       # mean(system) - mean(baseline)
    significant: bool

    @property
    def mark(self) -> str:
        if not self.significant:
            return ""
        return "▲" if self.difference > 0 else "▼"


def paired_t_test(system: Sequence[float], baseline: Sequence[float]) -> float:
    """Two-sided p-value of a paired t-test; 1.0 when the systems do not differ on any query."""
    from scipy import stats

    if len(system) != len(baseline):
        raise ValueError("paired test needs values for the same queries")
    if len(system) < 2 or all(a == b for a, b in zip(system, baseline, strict=True)):
        return 1.0
    result = stats.ttest_rel(system, baseline)
    p_value = float(result.pvalue)
    return 1.0 if math.isnan(p_value) else p_value


def holm_bonferroni(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running_max = 0.0
    total = len(p_values)
    for rank, i in enumerate(order):
        running_max = max(running_max, min(1.0, (total - rank) * p_values[i]))
        adjusted[i] = running_max
    return adjusted


def compare_to_baseline(systems: Sequence[dict[str, float]], baseline_index: int, query_ids: Sequence[str],
                        alpha: float = 0.05) -> list[Comparison | None]:
    """Compare each system's per-query values with the baseline's; ``None`` for the baseline itself."""
    baseline = [systems[baseline_index][q] for q in query_ids]
    others = [i for i in range(len(systems)) if i != baseline_index]
    raw = [paired_t_test([systems[i][q] for q in query_ids], baseline) for i in others]
    adjusted = holm_bonferroni(raw)
    results: list[Comparison | None] = [None] * len(systems)
    count = max(len(query_ids), 1)
    for i, p_raw, p_adj in zip(others, raw, adjusted, strict=True):
        difference = (sum(systems[i][q] for q in query_ids) - sum(baseline)) / count
        results[i] = Comparison(p_adj, p_raw, difference, p_adj < alpha)
    return results
