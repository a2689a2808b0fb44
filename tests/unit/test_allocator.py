"""glibc malloc tuning for threaded sweeps (fbt_pipelines/engine/allocator.py).

Its effect is speed, measured by bench/scaleout.py (the engine run's system
time and minor page faults), not asserted here.
"""

from __future__ import annotations

import platform

import pytest

from fbt_pipelines.engine import allocator

GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="mallopt's parameter numbers are glibc's")
def test_keep_freed_memory_takes_effect_once():
    assert allocator.keep_freed_memory() is True
    assert allocator.keep_freed_memory() is True  # idempotent: the first answer, no second mallopt
