"""Monte Carlo of a daily return series: stationary bootstrap and trade reshuffles.

Conventions (as :mod:`fbt_pipelines.risk.metrics`):

- Returns are simple daily returns, fractions per day; an equity path starts
  at ``capital`` (USD) and compounds them: ``e[0] = capital``,
  ``e[t] = capital * prod(1 + r[:t])``, so a path of ``horizon`` returns has
  ``horizon + 1`` equity points.
- Drawdowns are POSITIVE fractions of equity (0.1 = 10 % below the running
  peak, the first point being its own peak).
- Annualisation uses ``periods_per_year`` sessions (252): Sharpe is
  ``mean / std(ddof=1) * sqrt(252)`` of daily returns (no risk-free rate),
  NaN when the std is <= 1e-12 (a constant-return path); CAGR is
  ``(e[-1] / e[0]) ** (252 / horizon) - 1``.

Randomness: every function takes a seed (or a ``np.random.Generator``), so
results are reproducible for the same arguments. Paths are generated and
summarised in chunks of rows (~2 M numbers) to keep memory flat; the chunk
size is fixed, so the output does not depend on the machine.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fbt_pipelines.primitives.performance import sharpe_ratios

__all__ = [
    "PERCENTILES", "MonteCarloSummary", "bootstrap_paths", "max_drawdown_paths",
    "monte_carlo_summary", "stationary_bootstrap_indices", "trade_reshuffle_paths",
]

#: Percentiles reported by :func:`monte_carlo_summary` (and its DataFrame columns).
PERCENTILES = (5, 50, 95)

# Numbers per chunk of rows processed at once (~16 MB per float64 array).
_CHUNK = 1 << 21


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _rows_per_chunk(width: int) -> int:
    return max(1, _CHUNK // max(1, width))


def stationary_bootstrap_indices(
    n: int, n_paths: int, mean_block: float, rng: np.random.Generator, horizon: int | None = None
) -> np.ndarray:
    """Indices of a Politis-Romano (1994) stationary bootstrap.

    Each path is a concatenation of blocks of consecutive source indices. A
    block starts at a uniform index in ``[0, n)`` and runs forward, wrapping
    from ``n - 1`` to ``0``; at every step after the first a new block starts
    with probability ``p = 1 / mean_block``, so block lengths are geometric
    on ``{1, 2, ...}`` with mean ``mean_block`` (the last block of a path is
    cut at ``horizon``). ``mean_block=1`` gives the iid bootstrap.

    Parameters
    ----------
    n : int
        Length of the source series (indices are in ``[0, n)``).
    n_paths : int
        Number of resampled paths (rows).
    mean_block : float
        Mean block length in observations, >= 1 (need not be an integer).
    rng : np.random.Generator
        Source of randomness (advanced by the call).
    horizon : int, optional
        Length of each path; defaults to ``n``.

    Returns
    -------
    np.ndarray
        ``int64`` array of shape ``(n_paths, horizon)``.
    """
    n = _count(n, "n")
    n_paths = _count(n_paths, "n_paths")
    horizon = n if horizon is None else _count(horizon, "horizon")
    mean_block = float(mean_block)
    if not (math.isfinite(mean_block) and mean_block >= 1.0):
        raise ValueError(f"mean_block must be a finite number >= 1, got {mean_block!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    p = 1.0 / mean_block
    out = np.empty((n_paths, horizon), dtype=np.int64)
    step = _rows_per_chunk(horizon)
    for lo in range(0, n_paths, step):
        hi = min(n_paths, lo + step)
        new = rng.random((hi - lo, horizon)) < p
        new[:, 0] = True                        # every path opens a block
        flat = new.ravel()
        first_pos = np.flatnonzero(flat)        # flat position of each block's first step
        first_idx = rng.integers(0, n, size=first_pos.size)
        block = np.cumsum(flat) - 1             # block number of every step
        idx = first_idx[block] + (np.arange(flat.size) - first_pos[block])
        out[lo:hi] = (idx % n).reshape(hi - lo, horizon)
    return out


def _returns_1d(returns: Any) -> np.ndarray:
    values = np.asarray(returns, dtype=float)
    if values.ndim != 1 or values.size < 1:
        raise ValueError(f"returns must be a non-empty 1-D series, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("returns contain NaN or inf; drop or fill them explicitly first")
    return values


def bootstrap_paths(
    returns: np.ndarray | pd.Series, n_paths: int, horizon: int, mean_block: float = 20, seed: int = 0
) -> np.ndarray:
    """Resampled daily-return paths by stationary bootstrap.

    ``returns`` (simple daily returns, fractions) is resampled in blocks of
    mean length ``mean_block`` sessions (see
    :func:`stationary_bootstrap_indices`), which keeps short-range
    dependence such as volatility clustering within a block. Returns a
    float64 array of shape ``(n_paths, horizon)``; the same ``seed`` gives
    the same paths.
    """
    values = _returns_1d(returns)
    rng = np.random.default_rng(seed)
    return values[stationary_bootstrap_indices(values.size, n_paths, mean_block, rng, horizon=horizon)]


def trade_reshuffle_paths(
    trade_pnl: np.ndarray | pd.Series, n_paths: int, seed: int = 0, capital: float = 0.0
) -> np.ndarray:
    """Equity paths (USD) of random reorderings of a trade P&L sequence.

    Each row is ``capital`` followed by the cumulative sum of an independent
    random permutation of ``trade_pnl`` (USD per closed trade): shape
    ``(n_paths, n_trades + 1)``. Every path ends at ``capital +
    sum(trade_pnl)`` (up to floating-point summation order; exactly when the
    P&L values are whole numbers of moderate size), only the order -- hence
    drawdowns and time under water -- changes. With the default
    ``capital=0`` the rows are cumulative P&L; pass the account size for
    relative drawdowns via :func:`max_drawdown_paths`.
    """
    pnl = _returns_1d(trade_pnl)
    n_paths = _count(n_paths, "n_paths")
    if not math.isfinite(capital):
        raise ValueError(f"capital must be finite, got {capital!r}")
    rng = np.random.default_rng(seed)
    out = np.empty((n_paths, pnl.size + 1))
    out[:, 0] = capital
    step = _rows_per_chunk(pnl.size)
    for lo in range(0, n_paths, step):
        hi = min(n_paths, lo + step)
        shuffled = rng.permuted(np.broadcast_to(pnl, (hi - lo, pnl.size)), axis=1)
        np.cumsum(shuffled, axis=1, out=out[lo:hi, 1:])
        out[lo:hi, 1:] += capital
    return out


def max_drawdown_paths(equity: np.ndarray, relative: bool = True) -> np.ndarray:
    """Maximum drawdown of each row of an equity array ``(n_paths, points)``.

    ``relative=True``: ``-min(e / running_max(e) - 1)``, a positive fraction
    (0 when a path never falls), exactly :func:`metrics.drawdown`'s formula;
    equity must be > 0. ``relative=False``: ``max(running_max(e) - e)`` in
    the equity's currency (for cumulative P&L paths starting at 0).
    """
    e = np.asarray(equity, dtype=float)
    if e.ndim != 2 or e.shape[1] < 1:
        raise ValueError(f"equity must be a 2-D array (n_paths, points), got shape {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError("equity contains NaN or inf")
    if relative and (e <= 0).any():
        raise ValueError("relative drawdowns need equity > 0; use relative=False for P&L paths")
    out = np.empty(e.shape[0])
    step = _rows_per_chunk(e.shape[1])
    for lo in range(0, e.shape[0], step):
        block = e[lo:lo + step]
        peak = np.maximum.accumulate(block, axis=1)
        if relative:
            out[lo:lo + step] = -(block / peak - 1.0).min(axis=1)
        else:
            out[lo:lo + step] = (peak - block).max(axis=1)
    return out


def _frozen(values: np.ndarray) -> np.ndarray:
    values.setflags(write=False)
    return values


@dataclass(frozen=True, eq=False)
class MonteCarloSummary:
    """Distribution of path statistics from :func:`monte_carlo_summary`.

    Per-path arrays (read-only, shape ``(n_paths,)``): ``max_drawdown``
    (positive fraction), ``cagr`` (fraction per year), ``sharpe``
    (annualised, NaN for a constant-return path), ``final_equity`` (USD).

    ``percentiles``: DataFrame indexed by ``max_drawdown``, ``cagr``,
    ``sharpe``, ``final_equity`` with columns :data:`PERCENTILES` (5, 50,
    95), linear interpolation; Sharpe percentiles ignore NaN paths (NaN if
    every path is flat).

    ``prob_drawdown_exceeds``: share of paths whose max drawdown is strictly
    greater than ``dd_threshold``.

    ``sharpe_ci``: ``(low, high)`` percentile-bootstrap interval of the
    annualised Sharpe at ``ci_level``, i.e. the ``(1 - ci_level) / 2`` and
    ``(1 + ci_level) / 2`` quantiles of ``sharpe``. When the paths are
    bootstrap resamples with ``horizon`` equal to the source length this is
    the usual bootstrap confidence interval for the source's Sharpe ratio;
    with another horizon it is the range of Sharpe ratios realised over
    ``horizon`` sessions.
    """

    n_paths: int
    horizon: int
    capital: float
    dd_threshold: float
    ci_level: float
    periods_per_year: int
    max_drawdown: np.ndarray
    cagr: np.ndarray
    sharpe: np.ndarray
    final_equity: np.ndarray
    percentiles: pd.DataFrame
    prob_drawdown_exceeds: float
    sharpe_ci: tuple[float, float]

    def scalars(self) -> dict[str, float]:
        """Flat ``name -> float`` (e.g. for MLflow metrics).

        ``<metric>_p<q>`` for every percentile, ``prob_drawdown_exceeds``,
        ``sharpe_ci_low``, ``sharpe_ci_high``.
        """
        out = {f"{metric}_p{q}": float(self.percentiles.at[metric, q])
               for metric in self.percentiles.index for q in self.percentiles.columns}
        out["prob_drawdown_exceeds"] = self.prob_drawdown_exceeds
        out["sharpe_ci_low"], out["sharpe_ci_high"] = self.sharpe_ci
        return out


def _nanpercentile(values: np.ndarray, q: Any) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN -> NaN, silently
        return np.nanpercentile(values, q)


def monte_carlo_summary(
    paths_returns: np.ndarray,
    capital: float,
    dd_threshold: float,
    ci_level: float = 0.95,
    periods_per_year: int = 252,
) -> MonteCarloSummary:
    """Drawdown, CAGR and Sharpe distributions of simulated return paths.

    Parameters
    ----------
    paths_returns : np.ndarray
        ``(n_paths, horizon)`` simple daily returns (e.g. from
        :func:`bootstrap_paths`), finite and > -1, ``horizon >= 2``.
    capital : float
        Starting equity in USD (> 0); only ``final_equity`` depends on it.
    dd_threshold : float
        Drawdown threshold as a positive fraction in ``(0, 1]`` (0.2 = 20 %).
    ci_level : float
        Confidence level of ``sharpe_ci`` in ``(0, 1)``.
    periods_per_year : int
        Sessions per year for Sharpe and CAGR (252).

    Returns
    -------
    MonteCarloSummary
        See the class. Vectorised over paths (NumPy, in chunks of rows).
    """
    r = np.asarray(paths_returns, dtype=float)
    if r.ndim != 2 or r.shape[0] < 1 or r.shape[1] < 2:
        raise ValueError(f"paths_returns must be 2-D (n_paths >= 1, horizon >= 2), got shape {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError("paths_returns contain NaN or inf")
    if (r <= -1.0).any():
        raise ValueError("paths_returns contain a return <= -100 %, which wipes out the account")
    if not (math.isfinite(capital) and capital > 0):
        raise ValueError(f"capital must be a finite amount > 0, got {capital!r}")
    if not 0.0 < dd_threshold <= 1.0:
        raise ValueError(f"dd_threshold must be a positive fraction in (0, 1], e.g. 0.2; got {dd_threshold!r}")
    if not 0.0 < ci_level < 1.0:
        raise ValueError(f"ci_level must be in (0, 1), e.g. 0.95; got {ci_level!r}")
    if isinstance(periods_per_year, bool) or int(periods_per_year) != periods_per_year or periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be a positive integer, got {periods_per_year!r}")

    n_paths, horizon = r.shape
    mdd = np.empty(n_paths)
    final = np.empty(n_paths)
    sharpe = np.empty(n_paths)
    step = _rows_per_chunk(horizon + 1)
    for lo in range(0, n_paths, step):
        hi = min(n_paths, lo + step)
        block = r[lo:hi]
        equity = np.empty((hi - lo, horizon + 1))
        equity[:, 0] = capital
        np.multiply(capital, np.cumprod(1.0 + block, axis=1), out=equity[:, 1:])
        peak = np.maximum.accumulate(equity, axis=1)
        mdd[lo:hi] = -(equity / peak - 1.0).min(axis=1)
        final[lo:hi] = equity[:, -1]
        sharpe[lo:hi] = sharpe_ratios(block, periods_per_year, axis=1)  # one Sharpe per path (row)
    with np.errstate(over="ignore"):
        cagr = np.power(final / capital, periods_per_year / horizon) - 1.0

    q = list(PERCENTILES)
    table = pd.DataFrame(
        [np.percentile(mdd, q), np.percentile(cagr, q), _nanpercentile(sharpe, q), np.percentile(final, q)],
        index=pd.Index(["max_drawdown", "cagr", "sharpe", "final_equity"], name="metric"),
        columns=pd.Index(q, name="percentile"),
    )
    tail = 100.0 * (1.0 - ci_level) / 2.0
    low, high = _nanpercentile(sharpe, [tail, 100.0 - tail])
    return MonteCarloSummary(
        n_paths=int(n_paths), horizon=int(horizon), capital=float(capital),
        dd_threshold=float(dd_threshold), ci_level=float(ci_level),
        periods_per_year=int(periods_per_year),
        max_drawdown=_frozen(mdd), cagr=_frozen(cagr), sharpe=_frozen(sharpe),
        final_equity=_frozen(final), percentiles=table,
        prob_drawdown_exceeds=float(np.mean(mdd > dd_threshold)),
        sharpe_ci=(float(low), float(high)),
    )
