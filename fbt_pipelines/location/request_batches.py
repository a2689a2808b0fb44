"""Job ``backtest_requests_job``: one run per batch of queued backtest requests."""

from dagster import job

from assets.requests import backtest_requests


@job(description="A batch of queued backtest requests (`fbt submit`): each backtested, stored under its request "
                 "id, announced with backtest_done; launched by backtest_request_sensor.",
     tags={"fbt/kind": "requests"})
def backtest_requests_job():
    backtest_requests()
