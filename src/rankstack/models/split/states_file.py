"""The ``.npz`` file that keeps documents' split-layer states between runs (``precompute`` with ``states=DIR``).

One file holds, for every document, the 16-byte digest of its text (``keys``), the number of tokens kept
(``lengths``), whether it was cut to the window (``cut``) and its states, all documents' rows concatenated
(``states``, float16). For a model whose query reads the document it also holds each document's split-layer
keys and values (``keys_values_shapes``: 2 x layers and tokens per document; ``keys_values``: their bits as
int16, since numpy has no bfloat16; ``keys_values_bf16``: whether those bits are bfloat16 or float16).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from rankstack.models.split.layout import DocumentEntry

logger = logging.getLogger(__name__)


def _arrays(entries: list[tuple[bytes, DocumentEntry]]) -> dict[str, Any]:
    import numpy as np

    hidden = entries[0][1].states.shape[-1] if entries else 0
    projected = [e.keys_values for _, e in entries if e.keys_values is not None]
    return {
        "keys": np.frombuffer(b"".join(k for k, _ in entries), dtype=np.uint8).reshape(-1, 16),
        "lengths": np.array([e.states.shape[0] for _, e in entries], dtype=np.int64),
        "cut": np.array([e.cut for _, e in entries], dtype=bool),
        "states": (torch.cat([e.states for _, e in entries]).numpy() if entries
                   else np.zeros((0, hidden), dtype=np.float16)),
        # split-layer keys and values (a query that reads the document): 2 x layers by tokens per entry
        "keys_values_shapes": np.array([e.keys_values.shape[:2] if e.keys_values is not None else (0, 0)
                                        for _, e in entries], dtype=np.int64).reshape(-1, 2),
        "keys_values": (torch.cat([kv.reshape(-1, hidden) for kv in projected]).view(torch.int16).numpy()
                        if projected else np.zeros((0, hidden), dtype=np.int16)),  # bits: numpy has no bfloat16
        "keys_values_bf16": np.array(bool(projected) and projected[0].dtype == torch.bfloat16),
    }


def save_states(path: Path, entries: list[tuple[bytes, DocumentEntry]]) -> None:
    """Writes ``entries`` (each document's key and entry) to ``path``, by way of a temporary file of its
    own, synced and renamed into place: a crash or a concurrent writer leaves the previous file or the
    new one, never half of one."""
    import os
    import tempfile

    import numpy as np

    arrays = _arrays(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def load_states(path: Path) -> list[tuple[bytes, DocumentEntry]]:
    """The entries saved at ``path``. An unreadable file is reported and read as empty (its documents are
    computed again and the file rewritten)."""
    import zipfile

    import numpy as np

    try:
        with np.load(path) as saved:
            keys, lengths, cut, states = saved["keys"], saved["lengths"], saved["cut"], saved["states"]
            shapes, projected = saved["keys_values_shapes"], saved["keys_values"]
            bf16 = bool(saved["keys_values_bf16"])
        if not len(keys) == len(lengths) == len(cut) == len(shapes) or int(lengths.sum()) != len(states) \
                or int(shapes.prod(axis=1).sum()) != len(projected):
            raise ValueError("its arrays disagree in length")
        if keys.ndim != 2 or keys.shape[1] != 16 or states.dtype != np.float16 or projected.dtype != np.int16:
            raise ValueError("it is not a states file of this version")
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as error:
        logger.warning("ignoring stored document states %s (%s); they will be computed and saved again",
                       path, error)
        return []
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    projected_offsets = np.concatenate([[0], np.cumsum(shapes.prod(axis=1))])
    entries = []
    for row in range(len(keys)):
        layers, tokens = (int(n) for n in shapes[row])
        keys_values = (torch.from_numpy(projected[projected_offsets[row]:projected_offsets[row + 1]].copy())
                       .view(torch.bfloat16 if bf16 else torch.float16).view(layers, tokens, -1)
                       if layers else None)
        entry = DocumentEntry(torch.from_numpy(states[offsets[row]:offsets[row + 1]].copy()), bool(cut[row]),
                              keys_values)
        entries.append((keys[row].tobytes(), entry))
    return entries
