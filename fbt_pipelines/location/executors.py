"""Where a run's steps execute: in process, one process per step, or on Celery workers.

One executor, ``fbt_executor``, serves every job of the code location. Run
config picks the mode, exactly as Dagster's default executor does, with a
third choice::

    execution: {config: {in_process: {}}}                        # demo, tests
    execution: {config: {multiprocess: {max_concurrent: 2}}}      # one machine
    execution: {config: {celery: {}}}                             # worker machines

With no ``execution`` block the mode is ``FBT_EXECUTOR`` (``in_process``,
``multiprocess`` or ``celery``; default ``in_process``), read when the code
location loads. Nothing in the jobs changes between the three. In process is
the default because a step process costs a whole code-location import
(seconds to a minute on a busy 2-core machine) while most fbt steps compute
for less than that; ``multiprocess`` pays only for long steps of a job that
can run several at once (docs/scale-out.md, "When each executor pays").

Celery (``dagster_celery``): broker and result backend are the server of
``REDIS_URL`` on its own database, ``FBT_CELERY_DB`` (default 14), so the
queue never mixes with fbt's cache, events and requests (db 0) or the tests
(db 15). :func:`celery_settings` is the one source of the Celery settings:
the executor sends tasks with it and ``fbt workers start`` writes it into the
workers' configuration, so both sides agree.

Settings and why:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged
  only after its step finished. A worker killed mid-step leaves its message
  unacknowledged and Redis hands it to another worker once
  ``visibility_timeout`` has passed; Dagster's own step retries never see
  such a loss (no failure event is ever written), so without this the run
  waits forever. See docs/scale-out.md for the measured behaviour.
- ``visibility_timeout`` (``FBT_CELERY_VISIBILITY_TIMEOUT``, default 600 s):
  must exceed the longest step, or a step still running on a healthy worker
  is handed out a second time.
- JSON only (``task_serializer``/``result_serializer``/``accept_content``):
  nothing is pickled across processes. Step outputs travel as Parquet files
  (the sweep's IO manager), never through the broker.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dagster import Field, Noneable, Selector, StringSource, executor, multiple_process_executor_requirements
from dagster._core.definitions.executor_definition import (IN_PROC_CONFIG, MULTI_PROC_CONFIG,
                                                           _core_in_process_executor_creation,
                                                           _core_multiprocess_executor_creation)
from dagster._core.execution.retries import RetryMode
from dagster_celery.config import DEFAULT_CONFIG as DAGSTER_CELERY_DEFAULTS
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor

from fbt_pipelines.config import (EXECUTOR_ENV, EXECUTOR_MODES as MODES, ExecutorConfigError,  # noqa: F401
                                  executor_mode, redis_url)

CELERY_DB_ENV = "FBT_CELERY_DB"
VISIBILITY_ENV = "FBT_CELERY_VISIBILITY_TIMEOUT"
DEFAULT_CELERY_DB = 14
DEFAULT_VISIBILITY_TIMEOUT = 600
CELERY_QUEUE = "dagster"  # dagster_celery's queue; workers listen on it


def celery_db() -> int:
    """Redis database of the Celery broker/backend: ``FBT_CELERY_DB``, default 14."""
    raw = os.environ.get(CELERY_DB_ENV) or str(DEFAULT_CELERY_DB)
    try:
        db = int(raw)
    except ValueError:
        raise ExecutorConfigError(f"{CELERY_DB_ENV}={raw!r}: expected a Redis database number 0-15") from None
    if not 0 <= db <= 15:
        raise ExecutorConfigError(f"{CELERY_DB_ENV}={db}: expected a Redis database number 0-15")
    return db


def celery_broker_url(url: str | None = None, db: int | None = None) -> str:
    """``REDIS_URL``'s server on database ``db`` (default :func:`celery_db`).

    Scheme, password, host, port and query are kept.
    """
    parts = urlsplit(url or redis_url())
    if parts.scheme not in ("redis", "rediss"):
        raise ExecutorConfigError(f"REDIS_URL scheme {parts.scheme!r}: Celery's broker needs redis:// or rediss://")
    return urlunsplit(parts._replace(path=f"/{celery_db() if db is None else db}"))


def celery_settings(visibility_timeout: int | None = None) -> dict[str, Any]:
    """Celery settings shared by the executor and the workers (see the module docstring)."""
    vt = visibility_timeout or int(os.environ.get(VISIBILITY_ENV) or DEFAULT_VISIBILITY_TIMEOUT)
    return {
        **DAGSTER_CELERY_DEFAULTS,
        "broker_transport_options": {
            **DAGSTER_CELERY_DEFAULTS["broker_transport_options"],
            "visibility_timeout": vt,
            # kombu sweeps for abandoned (unacked, timed-out) messages every
            # interval x throttle seconds: check every 2 s instead of ~100 s
            "unacked_restore_interval": 2,
            "unacked_restore_throttle": 1,
        },
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 24 * 3600,
    }


def celery_executor_config() -> dict[str, Any]:
    """The ``celery`` executor block (broker, backend, config_source).

    As the workers must be started with; ``fbt workers start`` writes the same.
    """
    url = celery_broker_url()
    return {"broker": url, "backend": url, "config_source": celery_settings()}


def _requirements(config: dict[str, Any]):
    return [] if "in_process" in config else multiple_process_executor_requirements()


def _celery_field() -> Field:
    # dagster_celery's own schema; broker and backend default to REDIS_URL's server on FBT_CELERY_DB
    schema = {**CELERY_CONFIG,
              "broker": Field(Noneable(StringSource), is_required=False,
                              description="Celery broker URL. Default: REDIS_URL's server on FBT_CELERY_DB (14)."),
              "backend": Field(Noneable(StringSource), is_required=False,
                               description="Celery result backend URL. Default: the broker URL.")}
    return Field(schema, description="Execute each step as a Celery task on `fbt workers` (Redis broker).")


@executor(
    name="fbt",
    config_schema=Field(
        Selector({"in_process": IN_PROC_CONFIG, "multiprocess": MULTI_PROC_CONFIG, "celery": _celery_field()}),
        default_value={executor_mode(): {}},
        description="in_process | multiprocess | celery; default from FBT_EXECUTOR when the code location loads.",
    ),
    requirements=_requirements,
)
def fbt_executor(init_context):
    """In process, multiprocess or Celery, chosen by run config (default ``FBT_EXECUTOR``)."""
    (mode, cfg), = init_context.executor_config.items()
    if mode == "in_process":
        return _core_in_process_executor_creation(cfg)
    if mode == "multiprocess":
        return _core_multiprocess_executor_creation(cfg)
    derived = celery_executor_config()
    return CeleryExecutor(
        broker=cfg.get("broker") or derived["broker"],
        backend=cfg.get("backend") or derived["backend"],
        include=cfg.get("include"),
        config_source={**derived["config_source"], **(cfg.get("config_source") or {})},
        retries=RetryMode.from_config(cfg["retries"]),
    )
