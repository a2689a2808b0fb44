"""Backtest requests from the queue: validated, run in batches, stored by request id."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from fbt_pipelines.engine.strategies import StrategyTemplate
from fbt_pipelines.errors import FbtError, StrategyError
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.usecases.backtest import MarketBacktest, MarketData, backtest_market, backtest_row
from fbt_pipelines.services.limits import check_backtest_request
from fbt_pipelines.usecases.spec import BacktestSpec, OrderSettings


@dataclass(frozen=True)
class BacktestRequest:
    """One queued request: its id (the run key), the market and the validated spec."""

    request_id: str
    market: str
    spec: BacktestSpec

    def backtests_config(self) -> dict[str, Any]:
        """The ``backtests`` asset's run config of this request.

        ``strategies``: one ``{name, params}`` (the list shape of
        ``BacktestsConfig``), then the order settings that are set (fill,
        stop loss, take profit, trailing stop, limit offset, contracts).
        """
        return {"strategies": [{"name": self.spec.strategy, "params": self.spec.param_dict}],
                **self.spec.orders.settings()}


def accept_request(body: Mapping[str, Any], markets_with_data: set[str],
                   library: Mapping[str, StrategyTemplate]) -> BacktestRequest:
    """A queued body as a validated request; raise naming the request, setting and value.

    Checks its shape and size, that its market has data and that its
    strategy, parameters and order settings (``orders``: fill, stop_loss,
    take_profit, trailing_stop, limit_offset, contracts) are valid.
    """
    check_backtest_request(dict(body))  # shape and size (fbt_pipelines/services/limits.py)
    market = body.get("market")
    if market not in markets_with_data:
        raise StrategyError(f"request {body.get('request_id')}: no data for market {market!r}; "
                            f"markets with data: {', '.join(sorted(markets_with_data)) or 'none'}")
    try:
        orders = OrderSettings(**dict(body.get("orders", {})))
    except (TypeError, ValueError) as exc:
        raise StrategyError(f"request {body.get('request_id')}: {exc}") from None
    try:
        spec = BacktestSpec.create(str(body.get("strategy", "sma_crossover")), body.get("params", {}), library=library,
                                   orders=orders)
    except ValueError as exc:  # an order setting among the parameters
        raise StrategyError(f"request {body.get('request_id')}: {exc}") from None
    return BacktestRequest(str(body["request_id"]), str(market), spec)


def batch_key(request_ids: list[str]) -> str:
    """Run key of a batch: ``batch-`` + 16 hex of SHA-256(sorted request ids).

    The same requests always make the same key, so a batch emitted again
    after a crash is the same Dagster run (the sensor daemon never creates a
    second run for a run key).
    """
    digest = hashlib.sha256("\n".join(sorted(request_ids)).encode()).hexdigest()
    return f"batch-{digest[:16]}"


@dataclass(frozen=True)
class RequestBatchResult:
    """What a batch did: each accepted request's backtest, and why the others were refused."""

    done: list[tuple[BacktestRequest, MarketBacktest]]
    rejected: list[tuple[str | None, str]]  # (request id, reason)


def run_request_batch(bodies: Sequence[Mapping[str, Any]], markets_with_data: set[str],
                      library: Mapping[str, StrategyTemplate],
                      read_data: Callable[[str], MarketData]) -> RequestBatchResult:
    """Backtest every request of a batch; a bad request is refused alone, never the batch.

    Each body is validated again (:func:`accept_request`: the sensor checked
    it against the data and strategies of its tick); each market's data is
    read once (``read_data(root)``) for all its requests. A request whose
    validation, data or backtest fails goes to ``rejected`` with the reason.
    """
    done: list[tuple[BacktestRequest, MarketBacktest]] = []
    rejected: list[tuple[str | None, str]] = []
    data: dict[str, MarketData] = {}
    for body in bodies:
        rid = body.get("request_id")
        try:
            request = accept_request(body, markets_with_data, library)
            if request.market not in data:
                data[request.market] = read_data(request.market)
            done.append((request, backtest_market(request.spec, data[request.market])))
        except (FbtError, ValueError) as exc:
            rejected.append((rid if isinstance(rid, str) else None, str(exc)))
    return RequestBatchResult(done, rejected)


def request_result(bt: MarketBacktest, mlflow_run_id: str | None) -> dict[str, Any]:
    """A request's result as ``backtest_done`` carries it (USD, fractions, counts)."""
    s = bt.summary
    return {"strategy": bt.strategy, "net_pnl": float(s["net_pnl"]), "sharpe": float(s["sharpe"]),
            "max_drawdown": float(s["max_drawdown"]), "trades": int(s["trades"]), "mlflow_run_id": mlflow_run_id}


def store_request_results(conn, done: list[tuple[BacktestRequest, MarketBacktest]], *, code_version: str,
                          mlflow_run_id: str | None, batch: str) -> pd.DataFrame:
    """Store a batch's results by request id, in one transaction.

    Tables request_backtest_runs / _equity / _trades (key ``request_id``).

    Returns the runs table (one row per request; the MLflow artifact of the batch).
    """
    if not done:
        return pd.DataFrame()
    runs = pd.DataFrame([{"request_id": r.request_id, "batch": batch,
                          **backtest_row(bt, code_version=code_version, mlflow_run_id=mlflow_run_id)}
                         for r, bt in done])
    equity = pd.concat([bt.result.bars.assign(request_id=r.request_id) for r, bt in done], ignore_index=True)
    trades = pd.concat([bt.result.trades.assign(request_id=r.request_id) for r, bt in done], ignore_index=True)
    wh.replace_partitions(conn, {"request_backtest_runs": runs, "request_backtest_equity": equity,
                                 "request_backtest_trades": trades}, versions=False)
    return runs
