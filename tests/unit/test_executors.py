"""Executor by configuration: broker URL derivation and the run-config choice."""

import pytest

from fbt_pipelines.location.executors import (ExecutorConfigError, celery_broker_url, celery_settings, executor_mode,
                                     fbt_executor)


def test_broker_is_redis_url_server_on_its_own_db(monkeypatch):
    monkeypatch.delenv("FBT_CELERY_DB", raising=False)
    assert celery_broker_url("redis://:secret@cache.lan:6380/0") == "redis://:secret@cache.lan:6380/14"
    assert celery_broker_url("rediss://h:6379/3?ssl_cert_reqs=required") == "rediss://h:6379/14?ssl_cert_reqs=required"
    monkeypatch.setenv("FBT_CELERY_DB", "9")
    assert celery_broker_url("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379/9"
    monkeypatch.setenv("FBT_CELERY_DB", "16")
    with pytest.raises(ExecutorConfigError, match="FBT_CELERY_DB=16"):
        celery_broker_url("redis://127.0.0.1:6379/0")
    monkeypatch.setenv("FBT_CELERY_DB", "14")
    with pytest.raises(ExecutorConfigError, match="scheme 'amqp'"):
        celery_broker_url("amqp://guest@localhost//")


def test_settings_ack_late_json_only_and_mode_from_env(monkeypatch):
    s = celery_settings(visibility_timeout=30)
    assert s["task_acks_late"] and s["task_reject_on_worker_lost"]
    assert s["accept_content"] == ["json"] and s["task_serializer"] == s["result_serializer"] == "json"
    assert s["broker_transport_options"]["visibility_timeout"] == 30
    assert s["worker_prefetch_multiplier"] == 1
    monkeypatch.setenv("FBT_EXECUTOR", "Celery")
    assert executor_mode() == "celery"
    monkeypatch.setenv("FBT_EXECUTOR", "threads")
    with pytest.raises(ExecutorConfigError, match="in_process, multiprocess, celery"):
        executor_mode()


def test_in_process_has_no_requirements_and_the_default_is_the_env_mode():
    from dagster import DagsterInstance, job, op

    @op
    def one() -> int:
        return 1

    @job(executor_def=fbt_executor)
    def tiny():
        one()

    with DagsterInstance.ephemeral() as instance:
        assert tiny.execute_in_process(instance=instance).success
    assert fbt_executor.get_requirements({"in_process": {}}) == []
    assert fbt_executor.get_requirements({"celery": {}}) == fbt_executor.get_requirements({"multiprocess": {}}) != []
    schema_default = fbt_executor.config_schema.as_field().default_value
    assert list(schema_default) == [executor_mode()]
