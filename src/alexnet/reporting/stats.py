"""How every table states its spread: mean ± sample std, and paired differences with their 95 % interval.

Paired: two sets of measurements taken under the same conditions, key by key (an ablation's variant
and baseline trained with the same seed; two bench rows timed in the same round), are compared
through their differences d_k = other_k − base_k, and the interval is Student's t over those n
differences, mean(d) ± t(0.975, n − 1) · sd(d) / √n (``scipy.stats.ttest_rel``'s interval). A
ratio of times is paired the same way on logarithms (:func:`paired_ratio`), so a machine whose load
drifts between rounds moves both sides of a round alike and drops out of the ratio.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "std" (sample, n − 1; 0 for one value), "n"}; None for no values."""
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def format_mean_std(stat: Mapping[str, Any], scale: float = 1.0, digits: int = 2) -> str:
    """A :func:`mean_std` as a table shows it: ``9.61 ± 0.16``; one value without a spread (it has none
    to show), no value as ``–``. ``scale=100`` shows fractions as percentages or points."""
    if stat["mean"] is None:
        return "–"
    if stat["n"] < 2:
        return f"{scale * stat['mean']:.{digits}f}"
    return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"


def paired(base: Mapping, other: Mapping) -> dict[str, Any]:
    """mean, sd and the 95 % t interval of other − base over the keys both have (module docstring)."""
    keys = sorted(set(base) & set(other))
    d = [other[k] - base[k] for k in keys]
    out: dict[str, Any] = {"n": len(d), "seeds": keys, **{k: v for k, v in mean_std(d).items() if k != "n"}, "ci95": None}
    if len(d) >= 2:
        from scipy import stats  # scipy comes with scikit-learn; imported here, so that a CLI start does not pay for it

        half = stats.t.ppf(0.975, len(d) - 1) * out["std"] / math.sqrt(len(d))
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
    return out


def paired_ratio(base_times: Sequence[float], times: Sequence[float]) -> dict[str, Any]:
    """How many times faster ``times`` ran than ``base_times``, timed in the same rounds (round i of
    each side together): the geometric mean of base_i / time_i, with the 95 % t interval of its
    logarithm carried back ("ratio", "ci95"; "ci95" None under 2 rounds), and "n"."""
    logs = paired(dict(enumerate(math.log(t) for t in times)), dict(enumerate(math.log(t) for t in base_times)))
    ci = [math.exp(x) for x in logs["ci95"]] if logs["ci95"] else None
    return {"ratio": math.exp(logs["mean"]) if logs["n"] else None, "ci95": ci, "n": logs["n"]}
