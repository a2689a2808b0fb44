"""Model monitoring: feature drift (PSI) and rolling hit rate of the direction model.

Feature drift is the population stability index; the hit rate is that of the
direction model's predictions.

Population stability index of an ``actual`` sample against an ``expected``
(reference, e.g. training) sample, over bins b with proportions e_b and a_b::

    PSI = sum_b (a_b - e_b) * ln(a_b / e_b)

Usual reading (a rule of thumb from credit scoring, not a test):

- PSI < 0.1: no material shift;
- 0.1 <= PSI < 0.25: moderate shift, worth a look;
- PSI >= 0.25: significant shift; the model may need retraining.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
DRIFT_WINDOW = 250
"""Sessions of recent features compared with the champion's training window."""
DRIFT_MARGIN = 2.0
"""A feature drifts when its PSI is at least this multiple of its usual PSI (and >= max_psi).

Measured (150 seeds, 3,000 training + 250 recent rows, no change): a recent
window reaches 1x its worst training stretch in 6-11% of the seeds (AR(1),
phi 0, 0.98, 0.995), 1.5x in up to 4.7%, 2x in up to 2.7%; the demo's sample
data peaks at 1.35x (CL atr_14). A level outside the training range still
alarms: it saturates the PSI (~8) far above twice a stationary feature's usual.
"""


@dataclass(frozen=True)
class MonitoringConfig:
    """Thresholds of the checks on a market's predictions.

    The attribute docstrings are also the descriptions of the ``predictions``
    asset's run config (its fields and defaults come from here).
    """

    accuracy_window: int = 250
    """Labelled predictions in the rolling hit rate of the rolling_accuracy check."""
    min_rolling_accuracy: float = 0.45
    """The rolling_accuracy check warns below this hit rate (a coin scores 0.5 +- 0.03 over 250 calls)."""
    max_psi: float = PSI_SIGNIFICANT
    """The feature_drift check warns at or above this PSI."""

    def __post_init__(self) -> None:
        if self.accuracy_window < 1:
            raise ValueError(f"accuracy_window must be >= 1, got {self.accuracy_window}")


def _finite(x) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    return a[~np.isnan(a)]


def population_stability_index(expected: np.ndarray, actual: np.ndarray, bins: int = 10,
                               eps: float = 1e-4) -> float:
    """PSI of ``actual`` against ``expected`` (see module doc; 0.1 / 0.25 thresholds).

    Bin edges are the ``expected`` sample's quantiles at 1/bins, 2/bins, ...;
    repeated edges (ties, discrete data) are merged, so there may be fewer
    bins. The outer bins are open-ended, so values of ``actual`` outside the
    expected range still count. Bins are right-closed: (-inf, q1], (q1, q2],
    ..., (q_last, inf). A bin's proportion of 0 is replaced by ``eps`` (the
    log would be infinite). NaNs are dropped from both samples.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    e, a = _finite(expected), _finite(actual)
    if len(e) == 0 or len(a) == 0:
        raise ValueError("population_stability_index needs non-empty samples (after dropping NaNs)")
    inner = np.unique(np.quantile(e, np.linspace(0.0, 1.0, bins + 1)[1:-1])) if bins > 1 else np.array([])
    n_bins = len(inner) + 1
    # side="left": index i with inner[i-1] < x <= inner[i], i.e. right-closed bins
    e_share = np.bincount(np.searchsorted(inner, e, side="left"), minlength=n_bins) / len(e)
    a_share = np.bincount(np.searchsorted(inner, a, side="left"), minlength=n_bins) / len(a)
    e_share = np.maximum(e_share, eps)
    a_share = np.maximum(a_share, eps)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


def feature_drift(train: pd.DataFrame, recent: pd.DataFrame, columns: Iterable[str], bins: int = 10) -> pd.Series:
    """PSI of each feature in ``columns``: ``recent`` rows against ``train`` rows.

    NaNs are dropped per feature (warm-up rows, missing carry). A feature with
    no non-NaN value on either side gets NaN. Returns a Series indexed by
    feature, named ``psi``.
    """
    out = {}
    for col in columns:
        e, a = _finite(train[col]), _finite(recent[col])
        out[col] = population_stability_index(e, a, bins=bins) if len(e) and len(a) else np.nan
    return pd.Series(out, dtype=float, name="psi")


def usual_drift(train: pd.DataFrame, columns: Iterable[str], window: int = DRIFT_WINDOW, bins: int = 10) -> pd.Series:
    """Per feature, the highest PSI of one stretch of ``train`` against all of it.

    Stretches are ``window`` rows long.

    The drift a feature shows when nothing is wrong: a persistent feature (a
    carry that cycles over years, an ATR in points that follows the price
    level) puts any one year of its own training history in a few deciles,
    so its PSI against the whole history is far above 0.25 every year --
    the 0.25 rule of thumb assumes independent draws. Measured on the demo's
    sample data (6 markets, training 2012-2023): ``roll_yield`` scores 4.9 in
    2024 and up to 5.8 inside its own training years. Stretches start every
    ``window // 2`` rows; NaNs are dropped per feature; NaN where the feature
    has fewer than ``window`` finite rows. Returns a Series named
    ``usual_psi`` indexed by feature.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out = {}
    for col in columns:
        e = _finite(train[col])
        starts = range(0, len(e) - window + 1, max(window // 2, 1))
        out[col] = max((population_stability_index(e, e[i:i + window], bins=bins) for i in starts), default=np.nan)
    return pd.Series(out, dtype=float, name="usual_psi")


def drift_alarms(psi: pd.Series, usual: pd.Series, max_psi: float = PSI_SIGNIFICANT,
                 margin: float = DRIFT_MARGIN) -> pd.Series:
    """The features whose PSI is at or above ``max_psi`` and ``margin`` x their usual PSI.

    ``psi``: :func:`feature_drift`; ``usual``: :func:`usual_drift` (a NaN
    usual PSI leaves ``max_psi`` alone as the bar). Returns the alarming
    entries of ``psi``. Why a margin: the usual PSI is the worst of a few
    dozen training stretches, which one more stretch beats by chance (see
    :data:`DRIFT_MARGIN`).
    """
    bar = np.maximum((margin * usual.reindex(psi.index)).fillna(max_psi), max_psi)
    return psi[psi.fillna(0.0) >= bar]


def rolling_accuracy(y_true, prob_up, window: int, min_periods: int | None = None) -> pd.Series:
    """Rolling hit rate over the last ``window`` rows.

    A row is a hit when ``prob_up > 0.5`` equals the realised label (the same
    rule as the training metric ``oos_accuracy``).

    Rows whose label or probability is NaN (e.g. the latest ``horizon``
    sessions, not yet known) are not counted. A window needs ``min_periods``
    counted rows (default: ``window``, i.e. a full window), else NaN. The
    index is ``y_true``'s when it is a Series, else 0..n-1.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(prob_up, dtype=float)
    if y.shape != p.shape:
        raise ValueError(f"y_true and prob_up differ in shape: {y.shape} vs {p.shape}")
    known = ~(np.isnan(y) | np.isnan(p))
    hit = np.where(known, ((p > 0.5) == (y > 0.5)).astype(float), np.nan)
    index = y_true.index if isinstance(y_true, pd.Series) else None
    hits = pd.Series(hit, index=index, name="rolling_accuracy")
    return hits.rolling(window, min_periods=window if min_periods is None else min_periods).mean()
