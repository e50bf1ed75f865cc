"""Stages and pipelines."""

from rankstack.stages.base import Cutoff, Pipeline, SearchContext, Stage
from rankstack.stages.bm25 import BM25
from rankstack.stages.parse import parse_pipeline
from rankstack.stages.registry import register_stage, stage_names

__all__ = ["BM25", "Cutoff", "Pipeline", "SearchContext", "Stage", "parse_pipeline", "register_stage",
           "stage_names"]
