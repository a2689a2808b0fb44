"""Backtest-overfitting statistics for parameter sweeps.

- :func:`deflated_sharpe_ratio`: Bailey & Lopez de Prado (2014), "The
  Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest Overfitting
  and Non-Normality", J. Portfolio Management 40(5).
- :func:`probability_of_backtest_overfitting`: Bailey, Borwein, Lopez de
  Prado & Zhu (2017), "The Probability of Backtest Overfitting", J.
  Computational Finance 20(4), by combinatorially symmetric cross-validation
  (CSCV).

Units: every Sharpe ratio here is PER PERIOD (per observation, e.g. daily),
NOT annualised: ``mean(r) / std(r)`` of the ``n_obs`` returns. Convert an
annualised ratio with ``SR / sqrt(252)`` and an annualised variance of
Sharpe ratios with ``V / 252``. Skewness and kurtosis are those of the same
per-period returns; ``kurtosis`` is the Pearson (NON-excess) kurtosis, 3 for
a normal distribution -- pass ``RiskMetrics.kurtosis + 3`` (metrics reports
excess kurtosis).

Both functions work on the output of :func:`fbt_pipelines.usecases.sweep.run_sweep`:
``probability_of_backtest_overfitting(sweep.pnl)``; for the DSR take the
best set's per-day Sharpe, the variance of all sets' per-day Sharpe ratios
and ``len(sweep.pnl)``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from fbt_pipelines.primitives.performance import sharpe_from_moments

__all__ = [
    "EULER_MASCHERONI", "cscv_logits", "deflated_sharpe_ratio", "expected_max_sharpe",
    "probabilistic_sharpe_ratio", "probability_of_backtest_overfitting",
]

EULER_MASCHERONI = 0.5772156649015329


def _finite(value: Any, name: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def expected_max_sharpe(n_trials: int, sharpe_trials_var: float) -> float:
    """Expected maximum of ``n_trials`` per-period Sharpe ratios under the null.

    The trials' Sharpe ratios are taken as independent draws with mean 0 and
    variance ``sharpe_trials_var`` (per-period units, see the module
    docstring); with ``gamma`` the Euler-Mascheroni constant::

        E[max SR] ~= sqrt(V) * ((1 - gamma) * Phi^-1(1 - 1/N)
                                + gamma * Phi^-1(1 - 1/(N e)))

    (Bailey & Lopez de Prado 2014, eq. 7; an extreme-value approximation,
    accurate to a few per cent for N >= 10). For ``n_trials == 1`` or
    ``sharpe_trials_var == 0`` it is 0 (no selection: the single trial's
    expected Sharpe under the null).
    """
    if isinstance(n_trials, bool) or int(n_trials) != n_trials or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}")
    var = _finite(sharpe_trials_var, "sharpe_trials_var")
    if var < 0:
        raise ValueError(f"sharpe_trials_var must be >= 0, got {var!r}")
    n = int(n_trials)
    if n == 1 or var == 0.0:
        return 0.0
    g = EULER_MASCHERONI
    return math.sqrt(var) * ((1.0 - g) * norm.ppf(1.0 - 1.0 / n) + g * norm.ppf(1.0 - 1.0 / (n * math.e)))


def probabilistic_sharpe_ratio(
    sharpe: float, sharpe_benchmark: float, n_obs: int, skew: float, kurtosis: float
) -> float:
    """Probability that the true per-period Sharpe exceeds ``sharpe_benchmark``.

    ``Phi((SR - SR*) * sqrt(T - 1) / sqrt(1 - skew * SR + (kurtosis - 1) / 4 * SR^2))``
    (Bailey & Lopez de Prado 2012), with ``SR`` the observed per-period
    Sharpe of ``T = n_obs`` returns whose skewness is ``skew`` and Pearson
    kurtosis (normal = 3) ``kurtosis``. Raises ``ValueError`` when
    ``kurtosis < 1 + skew**2`` (impossible for any distribution; usually
    excess kurtosis passed by mistake).
    """
    sr = _finite(sharpe, "sharpe")
    sr0 = _finite(sharpe_benchmark, "sharpe_benchmark")
    skew = _finite(skew, "skew")
    kurt = _finite(kurtosis, "kurtosis")
    if isinstance(n_obs, bool) or int(n_obs) != n_obs or n_obs < 2:
        raise ValueError(f"n_obs must be an integer >= 2, got {n_obs!r}")
    if kurt < 1.0 + skew**2 - 1e-12:
        raise ValueError(
            f"kurtosis {kurt!r} < 1 + skew^2 = {1 + skew**2!r}: pass the Pearson kurtosis "
            "(3 for a normal distribution), i.e. excess kurtosis + 3"
        )
    var = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    if not var > 0:
        raise ValueError(f"degenerate Sharpe variance {var!r} for sharpe={sr}, skew={skew}, kurtosis={kurt}")
    return float(norm.cdf((sr - sr0) * math.sqrt(int(n_obs) - 1) / math.sqrt(var)))


def deflated_sharpe_ratio(
    sharpe_best: float, n_trials: int, sharpe_trials_var: float, n_obs: int, skew: float, kurtosis: float
) -> float:
    """Deflated Sharpe ratio: probability that the best of ``n_trials`` is real.

    ``DSR = PSR(SR_best; SR0)`` with ``SR0 = expected_max_sharpe(n_trials,
    sharpe_trials_var)``, i.e. the probabilistic Sharpe ratio of the selected
    strategy against the Sharpe ratio the best of ``n_trials`` skill-less
    strategies would show by luck.

    Parameters
    ----------
    sharpe_best : float
        Observed Sharpe ratio of the selected strategy, PER PERIOD (daily
        ``mean / std``; annualised / sqrt(252)).
    n_trials : int
        Number of (effectively independent) strategies/parameter sets tried.
    sharpe_trials_var : float
        Variance across trials of their per-period Sharpe ratios (annualised
        variance / 252).
    n_obs : int
        Number of returns ``T`` behind ``sharpe_best`` (>= 2).
    skew, kurtosis : float
        Skewness and Pearson (non-excess, normal = 3) kurtosis of the
        selected strategy's per-period returns.

    Returns
    -------
    float
        A probability in [0, 1]; 0.95 is the usual bar.
    """
    sr0 = expected_max_sharpe(n_trials, sharpe_trials_var)
    return probabilistic_sharpe_ratio(sharpe_best, sr0, n_obs, skew, kurtosis)


def _combinations(n_splits: int, max_combinations: int, seed: int) -> np.ndarray:
    """Boolean (n_combinations, n_splits) in-sample masks, each with n_splits/2 True."""
    half = n_splits // 2
    total = math.comb(n_splits, half)
    if total <= max_combinations:
        chosen = list(itertools.combinations(range(n_splits), half))
    else:
        rng = np.random.default_rng(seed)
        seen: set[tuple[int, ...]] = set()
        chosen = []
        while len(chosen) < max_combinations:
            combo = tuple(sorted(rng.choice(n_splits, size=half, replace=False).tolist()))
            if combo not in seen:
                seen.add(combo)
                chosen.append(combo)
    masks = np.zeros((len(chosen), n_splits), dtype=bool)
    rows = np.repeat(np.arange(len(chosen)), half)
    masks[rows, np.asarray(chosen).ravel()] = True
    return masks


def cscv_logits(pnl: pd.DataFrame | np.ndarray, n_splits: int = 16, max_combinations: int = 20_000,
                seed: int = 0) -> np.ndarray:
    """Logits of the out-of-sample relative rank of the in-sample best (CSCV).

    ``pnl``: rows = periods in time order, columns = strategies (e.g.
    ``SweepResult.pnl``, daily P&L in USD per parameter set; returns work
    the same: the Sharpe ratio is scale-free). The rows are cut into
    ``n_splits`` contiguous blocks (``np.array_split``: sizes differ by at
    most one row). For every way of choosing ``n_splits / 2`` blocks as
    in-sample (the rest, the complement, out-of-sample) -- all
    ``C(n_splits, n_splits/2)`` when that is at most ``max_combinations``,
    otherwise ``max_combinations`` distinct combinations drawn with
    ``seed`` --

    1. take the strategy with the highest in-sample Sharpe (first on ties),
    2. rank it among all ``N`` strategies by out-of-sample Sharpe (1 =
       worst, ``N`` = best, ties share their average rank),
    3. ``w = rank / (N + 1)``, ``logit = ln(w / (1 - w))``.

    Sharpe is ``mean / std(ddof=1)`` per period, 0 for a column with no
    volatility (st. dev. <= ``ZERO_VOL``, where
    :func:`~fbt_pipelines.primitives.performance.sharpe_from_moments` gives
    NaN). Returns one logit per combination.
    """
    values = np.asarray(pnl, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"pnl must be 2-D (periods x strategies), got shape {values.shape}")
    if isinstance(n_splits, bool) or int(n_splits) != n_splits or n_splits < 2 or n_splits % 2:
        raise ValueError(f"n_splits must be an even integer >= 2, got {n_splits!r}")
    if isinstance(max_combinations, bool) or int(max_combinations) != max_combinations or max_combinations < 1:
        raise ValueError(f"max_combinations must be a positive integer, got {max_combinations!r}")
    t, n = values.shape
    if n < 2:
        raise ValueError(f"pnl needs at least 2 strategies (columns), got {n}")
    if t < 2 * n_splits:
        raise ValueError(f"pnl needs at least 2 rows per block: {t} rows < 2 * n_splits = {2 * n_splits}")
    if not np.isfinite(values).all():
        raise ValueError("pnl contains NaN or inf; align strategies on a common calendar and fill first")

    # Moments per block; centring each column first keeps sum-of-squares variances accurate.
    centred = values - values.mean(axis=0)
    blocks = np.array_split(np.arange(t), int(n_splits))
    counts = np.array([b.size for b in blocks], dtype=float)                     # (S,)
    sums = np.stack([centred[b].sum(axis=0) for b in blocks])                    # (S, N)
    squares = np.stack([(centred[b] ** 2).sum(axis=0) for b in blocks])          # (S, N)
    shift = values.mean(axis=0)

    masks = _combinations(int(n_splits), int(max_combinations), int(seed)).astype(float)  # (C, S)

    def sharpe(m: np.ndarray) -> np.ndarray:
        count = (m @ counts)[:, None]                                            # (C, 1)
        total, sq = m @ sums, m @ squares                                        # (C, N)
        # Sharpe of the raw values: variance is shift-invariant, the mean is shifted back.
        mean_c = total / count
        var = np.maximum(sq - count * mean_c**2, 0.0) / (count - 1)
        per_period = sharpe_from_moments(mean_c + shift, np.sqrt(var), periods_per_year=1)
        # CSCV ranks every strategy, so a flat (zero-volatility, NaN Sharpe) one ranks as Sharpe 0
        return np.where(np.isnan(per_period), 0.0, per_period)

    is_sr, oos_sr = sharpe(masks), sharpe(1.0 - masks)
    best = np.argmax(is_sr, axis=1)                                               # (C,)
    chosen = oos_sr[np.arange(best.size), best][:, None]
    rank = (oos_sr < chosen).sum(axis=1) + ((oos_sr == chosen).sum(axis=1) + 1) / 2.0
    w = rank / (n + 1.0)
    return np.log(w / (1.0 - w))


def probability_of_backtest_overfitting(pnl: pd.DataFrame | np.ndarray, n_splits: int = 16,
                                        max_combinations: int = 20_000, seed: int = 0) -> float:
    """Probability of backtest overfitting (PBO) by CSCV.

    Share of the :func:`cscv_logits` that are ``<= 0``: how often the
    in-sample best strategy ranks at or below the out-of-sample median.
    About 0.5 for skill-less strategies (selection carries no information),
    near 0 when the in-sample winner is genuinely better, above 0.5 when
    in-sample selection is anti-informative. Deterministic: all
    combinations by default (12,870 for ``n_splits=16``); a seeded subset
    when there are more than ``max_combinations``.
    """
    return float(np.mean(cscv_logits(pnl, n_splits, max_combinations, seed) <= 0.0))
