"""Content hashes (data versions) and the code version that tag every result."""

from __future__ import annotations

import hashlib
import subprocess
from functools import lru_cache

import pandas as pd

from fbt_pipelines.config import REPO_ROOT


def frame_version(*frames: pd.DataFrame) -> str:
    """Deterministic content hash of one or more frames (values and column
    names; row order matters). 16 hex characters."""
    h = hashlib.sha256()
    for frame in frames:
        h.update(",".join(map(str, frame.columns)).encode())
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def code_version() -> str:
    """Git commit of the checkout (``+dirty`` if it has local changes), or
    ``unknown`` outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
