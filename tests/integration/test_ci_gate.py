"""The suite cannot shrink silently (tests/conftest.py, .ci/allowed-skips, .ci/run).

A real skip -- the PostgreSQL test against a port where nothing listens -- run
by a child pytest three ways: on a developer machine it is skipped and the
reason is printed (``-ra``); under CI (``FBT_CI=1``) the same skip fails the
run, named in the gate's section; with ``FBT_REQUIRE_POSTGRES=1`` the test
itself fails. And the allow-list: each entry names a test that exists, and
lets through only its own reason.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fbt_pipelines.config import REPO_ROOT
from tests.conftest import ALLOWED_SKIPS_FILE, allowed_skips, unallowed_skips

PG_TEST = ("tests/integration/test_postgres_instance.py::"
           "test_twenty_queued_runs_of_fbt_jobs_write_the_warehouse_one_at_a_time")
CI_VARS = ("FBT_CI", "FBT_REQUIRE_POSTGRES")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return: nothing listens there


def test_an_unallowed_skip_is_printed_on_a_dev_machine_and_fails_the_run_under_ci(tmp_path, redis_url):
    port = _closed_port()
    base = {k: v for k, v in os.environ.items() if k not in CI_VARS}
    base.update(FBT_PG_PORT=str(port), FBT_HOME=str(tmp_path / "home"), REDIS_URL=redis_url)
    modes = {"dev": {}, "ci": {"FBT_CI": "1"}, "require": {"FBT_REQUIRE_POSTGRES": "1"}}
    children = {
        mode: subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / mode}", PG_TEST],
            cwd=REPO_ROOT, env={**base, **extra}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for mode, extra in modes.items()}  # side by side: ~4 s each
    out = {mode: (child.communicate(timeout=300)[0], child.returncode) for mode, child in children.items()}
    no_server = f"NO POSTGRESQL at 127.0.0.1:{port}"

    text, code = out["dev"]
    assert code == 0 and re.search(r"^1 skipped", text, re.M) and "passed" not in text, text
    assert re.search(rf"^SKIPPED \[1\] tests/integration/test_postgres_instance.py:\d+: {no_server}", text, re.M), text
    assert "skipped tests not in .ci/allowed-skips" not in text

    text, code = out["ci"]
    assert code == 1 and re.search(r"^1 skipped", text, re.M), text  # the test did not fail: the gate did
    section = text.split("FBT_CI=1: skipped tests not in .ci/allowed-skips (the run fails)", 1)[1]
    assert f"{PG_TEST}: Skipped: {no_server}" in section, text

    text, code = out["require"]
    assert code == 1 and re.search(rf"^ERROR {re.escape(PG_TEST)}", text, re.M), text
    assert f"{no_server}" in text and "FBT_REQUIRE_POSTGRES=1" in text and "skipped" not in text.splitlines()[-1]


def _report(nodeid: str, reason: str, xfail: bool = False) -> pytest.TestReport:
    path = nodeid.split("::")[0]
    if xfail:
        report = pytest.TestReport(nodeid, (path, 1, nodeid), {}, "skipped", None, "call")
        report.wasxfail = reason
        return report
    return pytest.TestReport(nodeid, (path, 1, nodeid), {}, "skipped", (path, 1, f"Skipped: {reason}"), "call")


def test_the_allow_list_names_real_tests_and_lets_through_only_their_reason():
    entries = allowed_skips()
    assert entries, f"{ALLOWED_SKIPS_FILE} allows nothing: fine, but then drop this check's examples"
    for pattern, reason in entries:
        path, _, name = pattern.partition("::")
        assert (REPO_ROOT / path).is_file() and re.search(rf"^def {re.escape(name)}\(", (REPO_ROOT / path).read_text(),
                                                          re.M), f"stale allow-list entry {pattern!r}"
        assert reason in (REPO_ROOT / path).read_text(), f"{pattern}: the test never skips with {reason!r}"

    disk = "tests/integration/test_faults.py::test_disk_full_clear_error_previous_data_intact"
    allowed = _report(disk, "SKIPPED LOUDLY: cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN); "
                            "disk-full not simulated")
    other_reason = _report(disk, "redis-server not found")
    other_test = _report("tests/integration/test_faults.py::test_warehouse_locked", "cannot mount a tmpfs here")
    browser = _report("tests/e2e/test_browser.py", "BROWSER TESTS SKIPPED: /usr/bin/chromium does not exist")
    xfailed = _report("tests/unit/test_engine.py::test_x", "known bug", xfail=True)
    assert unallowed_skips([allowed], entries) == []
    assert unallowed_skips([allowed, other_reason, other_test, browser, xfailed], entries) == [
        f"{disk}: Skipped: redis-server not found",
        "tests/integration/test_faults.py::test_warehouse_locked: Skipped: cannot mount a tmpfs here",
        "tests/e2e/test_browser.py: Skipped: BROWSER TESTS SKIPPED: /usr/bin/chromium does not exist",
        "tests/unit/test_engine.py::test_x: known bug",
    ]


def test_a_malformed_allow_list_line_is_refused(tmp_path):
    bad = tmp_path / "allowed-skips"
    bad.write_text("# a comment\ntests/x.py::test_y   # no reason given\n")
    with pytest.raises(ValueError, match=r"allowed-skips:2: expected 'TEST-ID-PATTERN \| REASON SUBSTRING'"):
        allowed_skips(bad)
    assert allowed_skips(Path(os.devnull)) == []
