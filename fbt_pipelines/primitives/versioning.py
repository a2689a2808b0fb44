"""Content hashes: the data version of frames and the hash of a frozen spec."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd


def frame_version(*frames: pd.DataFrame) -> str:
    """Deterministic content hash of one or more frames; 16 hex characters.

    Hashes values and column names; row order matters.
    """
    h = hashlib.sha256()
    for frame in frames:
        h.update(",".join(map(str, frame.columns)).encode())
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def content_hash(value: Any) -> str:
    """SHA-256 of ``value`` as canonical JSON (sorted keys, no spaces); 16 hex characters.

    ``value`` holds only JSON types (dicts, lists, str, numbers, None).
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
