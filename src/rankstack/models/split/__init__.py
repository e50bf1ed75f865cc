"""Split (PreTTR-style) cross-encoders: lower layers that read the query and the document apart, so the
document's side can be computed before any query and kept.

- ``layout``: ``SplitLayout`` (how one input is laid out, saved as ``rankstack_split.json``) and
  ``DocumentEntry`` (what is kept of one document);
- ``model``: ``SplitCrossEncoder``, the model, with its joint (training) and split (serving) paths;
- ``state_cache``: ``DocumentStateCache``, the thread-safe, byte-bounded cache of documents' states, and
  ``shared_cache``, the process's cache per model;
- ``states_file``: the ``.npz`` file that keeps those states between runs;
- ``scorer``: ``SplitScorer``, the serving adapter a ``cross_encoder`` stage scores with.
"""

from rankstack.models.split.layout import DocumentEntry, SplitLayout, prunable_token_ids
from rankstack.models.split.model import SplitCrossEncoder
from rankstack.models.split.scorer import SplitScorer
from rankstack.models.split.state_cache import DocumentStateCache, shared_cache
from rankstack.models.split.states_file import load_states, save_states

__all__ = [
    "DocumentEntry",
    "DocumentStateCache",
    "SplitCrossEncoder",
    "SplitLayout",
    "SplitScorer",
    "load_states",
    "prunable_token_ids",
    "save_states",
    "shared_cache",
]
