"""Fine-tuning rankers on relevance data (``pip install 'rankstack[train]'``)."""
