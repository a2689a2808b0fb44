"""Input size limits: bar files on ingest, backtest requests on the queue.

Each limit is read from the environment when checked (so a test or an
operator can change it without a restart of the library), with these
defaults:

| variable | default | what |
| --- | --- | --- |
| ``FBT_MAX_INGEST_FILE_MB`` | 1024 | size of one bar file (MiB); a LEAN zip also by its uncompressed size |
| ``FBT_MAX_INGEST_ROWS`` | 20000000 | data rows of one bar file (CSV lines after the header; Parquet rows; LEAN inner CSV lines) |
| ``FBT_MAX_REQUEST_BYTES`` | 16384 | JSON body of one backtest request (bytes) |
| ``FBT_MAX_REQUEST_PARAMS`` | 32 | strategy parameters in one backtest request |

The ingest defaults leave room for 20 years of one-minute bars of a single
contract file (~7M rows at 24 x 60 bars a day for 252 days x 20 years);
a request as ``fbt submit`` sends it is 135 bytes with two parameters.

Violations raise :class:`LimitExceeded` (a :class:`DataError`, so the CLI
prints it as one line naming the file or request and the limit).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fbt_pipelines.errors import DataError

MIB = 1024 * 1024
# A request id is a run key and a Dagster tag value: keep it to a plain token.
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MARKET_RE = re.compile(r"^[A-Z0-9]{1,8}$")
STRATEGY_RE = re.compile(r"^[a-z0-9_]{1,64}$")
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# order settings a request may give (values are checked by the backtest spec: units, signs, whole contracts)
ORDER_SETTINGS = ("fill", "stop_loss", "take_profit", "trailing_stop", "limit_offset", "contracts")


class LimitExceeded(DataError):
    """An input is larger than a configured limit, or a request is malformed."""


@dataclass(frozen=True)
class Limits:
    """The limits in force (see the module docstring for units and defaults)."""

    max_ingest_file_bytes: int
    max_ingest_rows: int
    max_request_bytes: int
    max_request_params: int


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise LimitExceeded(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise LimitExceeded(f"{name}={raw!r} must be positive")
    return value


def current() -> Limits:
    """The limits from the environment (defaults where unset)."""
    return Limits(
        max_ingest_file_bytes=_env_int("FBT_MAX_INGEST_FILE_MB", 1024) * MIB,
        max_ingest_rows=_env_int("FBT_MAX_INGEST_ROWS", 20_000_000),
        max_request_bytes=_env_int("FBT_MAX_REQUEST_BYTES", 16_384),
        max_request_params=_env_int("FBT_MAX_REQUEST_PARAMS", 32),
    )


def _count_lines(handle, max_lines: int) -> int:
    """Newline-terminated lines (plus a last unterminated one), stopping past ``max_lines``."""
    lines, last = 0, b"\n"
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        lines += chunk.count(b"\n")
        last = chunk[-1:]
        if lines > max_lines:
            break
    return lines + (0 if last == b"\n" else 1)


def check_ingest_file(path: Path, fmt: str, csv_lines: Callable[[], int] | None = None) -> None:
    """Refuse a bar file over the size or row limit, before anything is read into the warehouse.

    ``fmt`` is ``csv``, ``parquet`` or ``lean`` (a zip of CSVs: each member's
    uncompressed size and lines are checked, so a zip bomb is refused unread).
    ``csv_lines``: how to get a CSV's line count (header included) once its
    size has passed, when the caller reads the file anyway (the ingest
    hashes it in the same pass); by default the lines are counted here.
    """
    lim = current()
    path = Path(path)
    size = path.stat().st_size
    if size > lim.max_ingest_file_bytes:
        raise LimitExceeded(f"{path}: {size:,} bytes exceeds the ingest limit of {lim.max_ingest_file_bytes:,} bytes "
                            "(FBT_MAX_INGEST_FILE_MB)")
    if fmt == "csv":
        if csv_lines is not None:
            rows = csv_lines() - 1  # minus the header
        else:
            with path.open("rb") as handle:
                rows = _count_lines(handle, lim.max_ingest_rows + 1) - 1
        _check_rows(str(path), rows, lim)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception:  # noqa: BLE001 - unreadable: the stager reports it with its own message
            return
        _check_rows(str(path), rows, lim)
    elif fmt == "lean":
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            return  # the LEAN reader reports a bad zip
        with archive:
            total = sum(info.file_size for info in archive.infolist())
            if total > lim.max_ingest_file_bytes:
                raise LimitExceeded(f"{path}: {total:,} bytes uncompressed exceeds the ingest limit of "
                                    f"{lim.max_ingest_file_bytes:,} bytes (FBT_MAX_INGEST_FILE_MB)")
            for info in archive.infolist():
                with archive.open(info) as member:
                    _check_rows(f"{path}:{info.filename}", _count_lines(member, lim.max_ingest_rows), lim)


def _check_rows(source: str, rows: int, lim: Limits) -> None:
    if rows > lim.max_ingest_rows:
        raise LimitExceeded(f"{source}: more than {lim.max_ingest_rows:,} rows exceeds the ingest limit "
                            "(FBT_MAX_INGEST_ROWS)")


def check_request_body(body: bytes | str) -> dict[str, Any]:
    """A queued request's JSON body -> the object, refused if over ``FBT_MAX_REQUEST_BYTES``,
    not JSON or not a JSON object. Parsed by ``json.loads`` only: nothing is evaluated."""
    lim = current()
    raw = body.encode() if isinstance(body, str) else bytes(body)
    if len(raw) > lim.max_request_bytes:
        raise LimitExceeded(f"request of {len(raw):,} bytes exceeds the limit of {lim.max_request_bytes:,} bytes "
                            "(FBT_MAX_REQUEST_BYTES)")
    try:
        request = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise LimitExceeded(f"request is not valid JSON ({exc})") from None
    if not isinstance(request, dict):
        raise LimitExceeded(f"request must be a JSON object, got {type(request).__name__}")
    return request


def check_backtest_request(request: dict[str, Any]) -> None:
    """Refuse a backtest request of the wrong shape (:class:`LimitExceeded` says what is wrong).

    Accepted: ``request_id`` (token of at most 64 characters), ``market``
    (upper-case root), optional ``strategy`` (snake-case name), optional
    ``params`` (object of at most ``FBT_MAX_REQUEST_PARAMS`` identifier ->
    number) and optional ``orders`` (object of :data:`ORDER_SETTINGS` -> a
    number or a text of at most 32 characters, e.g. ``{"stop_loss": "2%",
    "contracts": 1}``). Names and values are checked further by the strategy
    (``validate_params``) and the order settings (units, signs), the market
    by the partitions that have data.
    """
    lim = current()
    request_id = request.get("request_id")
    if not isinstance(request_id, str) or not REQUEST_ID_RE.match(request_id):
        raise LimitExceeded(f"request_id {str(request_id)[:80]!r} must be 1-64 characters of A-Z a-z 0-9 _ . : -")
    market = request.get("market")
    if not isinstance(market, str) or not MARKET_RE.match(market):
        raise LimitExceeded(f"request {request_id}: market {str(market)[:80]!r} must be an upper-case root "
                            "(1-8 letters or digits)")
    strategy = request.get("strategy", "sma_crossover")
    if not isinstance(strategy, str) or not STRATEGY_RE.match(strategy):
        raise LimitExceeded(f"request {request_id}: strategy {str(strategy)[:80]!r} is not a strategy name")
    params = request.get("params", {})
    if not isinstance(params, dict):
        raise LimitExceeded(f"request {request_id}: params must be an object of name -> number")
    if len(params) > lim.max_request_params:
        raise LimitExceeded(f"request {request_id}: {len(params)} params exceed the limit of "
                            f"{lim.max_request_params} (FBT_MAX_REQUEST_PARAMS)")
    for name, value in params.items():
        if not PARAM_NAME_RE.match(name):
            raise LimitExceeded(f"request {request_id}: parameter name {name[:80]!r} is not an identifier")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LimitExceeded(f"request {request_id}: parameter {name} must be a number, got {str(value)[:80]!r}")
    orders = request.get("orders", {})
    if not isinstance(orders, dict):
        raise LimitExceeded(f"request {request_id}: orders must be an object of order setting -> value")
    for name, value in orders.items():
        if name not in ORDER_SETTINGS:
            raise LimitExceeded(f"request {request_id}: unknown order setting {str(name)[:80]!r}; known: "
                                f"{', '.join(ORDER_SETTINGS)}")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or len(str(value)) > 32:
            raise LimitExceeded(f"request {request_id}: order setting {name} must be a number or a short text "
                                f"like '40', '2%' or '3atr', got {str(value)[:80]!r}")


def request_id_of(body: bytes | str) -> str | None:
    """Best-effort ``request_id`` of a body that failed :func:`check_request_body` (for the rejection event)."""
    try:
        raw = body.encode() if isinstance(body, str) else bytes(body)
        if len(raw) > current().max_request_bytes:
            return None
        value = json.loads(raw).get("request_id")
    except Exception:  # noqa: BLE001 - any malformed body: no id
        return None
    return value if isinstance(value, str) and REQUEST_ID_RE.match(value) else None
