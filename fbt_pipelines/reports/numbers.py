"""Numbers formatted by kind for tables and metadata: percent, money, counts, ratios.

Kinds (``KINDS``), for a value ``v``:

- ``percent``: a fraction shown in percent, 1 decimal (0.1234 -> ``12.3%``);
  ``percent2`` with 2 decimals (``12.34%``).
- ``money``: USD with thousands separators, no decimals (``-1,234,568``);
  ``money2`` with cents (``-1,234,567.89``).
- ``count``: a whole number with thousands separators (642.0 -> ``642``).
- ``ratio``: 2 decimals (Sharpe, correlation, leverage: ``0.44``).

Any other string is used as a Python format spec (``".4f"``). NaN prints as
``n/a``; a result that is a signed zero (``-0``, ``-0.00``, ``-0.0%``) loses its
sign. :func:`metadata_number` rounds a number for Dagster metadata by the same
kinds (fractions to 4 decimals, ratios to 3, money to cents, counts whole), and
:func:`kind_of` guesses a kind from a column or metric name.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import pandas as pd

KINDS = {"percent": lambda v: f"{100 * v:,.1f}%", "percent2": lambda v: f"{100 * v:,.2f}%",
         "money": lambda v: f"{v:,.0f}", "money2": lambda v: f"{v:,.2f}",
         "count": lambda v: f"{round(v):,d}", "ratio": lambda v: f"{v:,.2f}"}

#: decimals of a metadata float per kind (counts become ints)
METADATA_DECIMALS = {"percent": 4, "percent2": 4, "money": 2, "money2": 2, "ratio": 3}

_COUNTS = {"days", "trades", "rolls", "margin_calls", "fills", "sets", "markets", "backtests", "windows",
           "max_drawdown_duration", "benchmark_sessions", "position", "contracts", "strategies", "rows",
           "account_stopped"}
_MONEY = {"net_pnl", "roll_costs", "final_equity", "gross_pnl", "costs", "commission", "slippage", "capital",
          "total_costs", "notional"}
_FRACTION_WORDS = ("drawdown", "var_", "cvar", "return", "cagr", "annual_vol", "volatility", "exposure",
                   "cost_share", "pbo", "probability", "prob_", "margin_to_equity", "turnover_notional",
                   "hit_rate", "win_rate")


def unsigned_zero(text: str) -> str:
    """``text`` without its minus sign when every digit in it is 0 (``-0.00`` -> ``0.00``)."""
    if text.startswith("-") and not any(c in "123456789" for c in text):
        return text[1:]
    return text


def format_number(value: Any, kind: str) -> str:
    """``value`` as text by ``kind`` (see the module docstring); non-numbers as ``str``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        if isinstance(value, pd.Timestamp):
            return f"{value:%Y-%m-%d}" if value == value.normalize() else value.isoformat()
        return str(value)
    v = float(value)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    fmt = KINDS.get(kind)
    try:
        text = fmt(v) if fmt is not None else format(v, kind)
    except ValueError as exc:
        raise ValueError(f"unknown number kind or format {kind!r} (kinds: {', '.join(KINDS)})") from exc
    return unsigned_zero(text)


def kind_of(name: str) -> str | None:
    """The kind of a column or metric from its name, None when nothing fits.

    ``*_usd`` and P&L/cost names are money; counts (trades, rolls, days ...)
    are counts; drawdowns, VaR, returns, volatility, exposure and
    probabilities are fractions (``percent``); Sharpe-like, correlation,
    beta, skew, kurtosis and leverage are ratios.
    """
    n = name.lower()
    if n.endswith("_usd") or n in _MONEY or n.startswith("pnl") or "pnl_usd" in n or "equity_usd" in n:
        return "money"
    if n in _COUNTS or n.endswith(("_count", "_days", "_sessions")) or n.startswith("n_"):
        return "count"
    if "leverage" in n:
        return "ratio"
    if any(w in n for w in _FRACTION_WORDS):
        return "percent"
    if any(w in n for w in ("sharpe", "sortino", "calmar", "beta", "correlation", "skew", "kurtosis", "ratio",
                            "psi", "auc", "turnover")):
        return "ratio"
    if "final_equity" in n:
        return "money"
    return None


def metadata_number(value: Any, kind: str | None) -> float | int:
    """``value`` rounded for metadata by ``kind``: count -> int; else a float (no -0.0).

    Fractions keep 4 decimals (0.01 %), ratios 3, money 2 (cents); an unknown
    kind keeps 6 significant decimals. NaN stays NaN.
    """
    v = float(value)
    if not math.isfinite(v):
        return v
    if kind == "count":
        return int(round(v))
    out = round(v, METADATA_DECIMALS.get(kind or "", 6))
    return out + 0.0 if out != 0 else 0.0
