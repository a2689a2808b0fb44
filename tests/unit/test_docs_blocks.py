"""The documentation's runnable code blocks run and succeed.

Marker: an HTML comment ``<!-- runnable -->`` alone on the line right before
a fenced block whose info string is ``bash`` (invisible when the Markdown is
rendered)::

    <!-- runnable -->
    ```bash
    fbt strategies --json | grep -q sma_crossover
    ```

Every such block in ``README.md`` and ``docs/*.md`` runs with
``bash -euo pipefail``, the venv's ``bin/`` first on ``PATH`` (so ``fbt`` and
``python`` are the project's), a private ``FBT_HOME`` per Markdown file, the
test Redis as ``REDIS_URL`` and a scratch working directory. The blocks of one
file run in order and share that ``FBT_HOME`` and directory, as a reader
following the page would. A block passes when it exits 0: write blocks that
check what they claim (``grep -q``, ``test``, a ``python -c`` assert). Keep
them fast (seconds): the longer workflows are covered by the integration
tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- runnable -->"
FENCE = re.compile(r"^```(\S*)\s*$")


def runnable_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number of the fence, code) of each marked block; ValueError when a marker is misplaced."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if not fence or fence.group(1) != "bash":
            raise ValueError(f"{path.name}:{i + 1}: {MARKER} must be followed by a ```bash fence")
        end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{path.name}:{i + 2}: unclosed code block")
        blocks.append((i + 2, "\n".join(lines[i + 2:end]) + "\n"))
    return blocks


DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
WITH_BLOCKS = [p for p in DOCS if p.exists() and runnable_blocks(p)]


def test_the_marker_parser_finds_blocks_and_refuses_a_misplaced_marker(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"text\n{MARKER}\n```bash\necho one\n```\n\n```bash\necho not marked\n```\n", encoding="utf-8")
    assert runnable_blocks(page) == [(3, "echo one\n")]
    page.write_text(f"{MARKER}\n\n```bash\necho x\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"page\.md:1: .* must be followed by a ```bash fence"):
        runnable_blocks(page)
    # the guide keeps its runnable examples (data, market, strategy, a bad strategy)
    assert len(runnable_blocks(REPO / "docs" / "guide.md")) >= 4


@pytest.mark.parametrize("doc", WITH_BLOCKS, ids=[p.relative_to(REPO).as_posix() for p in WITH_BLOCKS])
def test_runnable_blocks_succeed(doc: Path, tmp_path, redis_url):
    home, work = tmp_path / "fbt_home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "FBT_WAREHOUSE", "DAGSTER_HOME")}
    env.update(FBT_HOME=str(home), REDIS_URL=redis_url, PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
               TMPDIR=str(tmp_path))
    for line, code in runnable_blocks(doc):
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=work, env=env, capture_output=True,
                                text=True, timeout=180)
        assert result.returncode == 0, (
            f"{doc.name}:{line}: block failed with exit code {result.returncode}\n--- code\n{code}"
            f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}")
