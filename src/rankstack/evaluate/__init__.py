"""Effectiveness measures (trec_eval parity via ir_measures) and significance tests."""

from rankstack.evaluate.measures import DEFAULT_MEASURES, Evaluation, evaluate, parse_measures
from rankstack.evaluate.significance import Comparison, compare_to_baseline, holm_bonferroni, paired_t_test

__all__ = ["DEFAULT_MEASURES", "Comparison", "Evaluation", "compare_to_baseline", "evaluate", "holm_bonferroni",
           "paired_t_test", "parse_measures"]
