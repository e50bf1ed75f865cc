"""Text analysis: the Lucene-compatible English analyzer."""

from rankstack.text.analyzer import LUCENE_ENGLISH_STOP_WORDS, Analyzer, LuceneEnglishAnalyzer

__all__ = ["Analyzer", "LuceneEnglishAnalyzer", "LUCENE_ENGLISH_STOP_WORDS"]
