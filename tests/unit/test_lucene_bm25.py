from __future__ import annotations

import math

import numpy as np

from rankstack.index.lucene_bm25 import decode_lengths, encode_lengths, idf, posting_scores


def test_short_lengths_are_exact() -> None:
    lengths = np.arange(0, 24)
    assert decode_lengths(encode_lengths(lengths)).tolist() == lengths.tolist()


def test_long_lengths_follow_lucene_smallfloat() -> None:
    # SmallFloat.intToByte4(100) == 57 and byte4ToInt(57) == 96, worked by hand from Lucene's source.
    assert encode_lengths(np.array([100]))[0] == 57
    assert decode_lengths(np.array([57]))[0] == 96
    lengths = np.arange(24, 100_000)
    decoded = decode_lengths(encode_lengths(lengths))
    assert np.all(decoded <= lengths)                 # rounds down
    assert np.all(decoded > lengths * 0.87)           # keeps 4 significant bits
    assert np.all(np.diff(encode_lengths(lengths).astype(int)) >= 0)  # monotone
    assert encode_lengths(np.array([2**31 - 1]))[0] == 255


def test_idf_is_lucenes() -> None:
    assert math.isclose(float(idf(np.array([1]), 10)[0]), math.log(1 + 9.5 / 1.5), rel_tol=1e-6)


def test_posting_score_matches_textbook_formula_for_short_docs() -> None:
    k1, b, avgdl = 0.9, 0.4, 7.5
    score = posting_scores(np.array([2.0]), np.array([3]), np.array([10]), avgdl, k1, b)[0]
    expected = 2.0 * 3 / (3 + k1 * (1 - b + b * 10 / avgdl))
    assert math.isclose(float(score), expected, rel_tol=1e-6)
