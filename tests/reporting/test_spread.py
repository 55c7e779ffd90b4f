"""The spread every table states (alexnet.reporting.stats): checked against scipy's paired t-test."""

import math

import pytest
from scipy import stats as scipy_stats

from alexnet.reporting.stats import format_mean_std, mean_std, paired, paired_ratio


def test_paired_interval_is_students_t_over_the_differences_of_shared_keys():
    base, other = {0: 0.10, 1: 0.20, 2: 0.30, 3: 0.12}, {0: 0.20, 1: 0.28, 2: 0.40, 3: 0.20, 9: 0.9}  # seed 9: unpaired
    diff = paired(base, other)
    assert diff["n"] == 4 and diff["seeds"] == [0, 1, 2, 3]
    reference = scipy_stats.ttest_rel([other[s] for s in range(4)], [base[s] for s in range(4)]).confidence_interval(0.95)
    assert diff["mean"] == pytest.approx(0.09) and diff["ci95"] == pytest.approx([reference.low, reference.high])
    assert paired({0: 0.5}, {0: 0.4})["ci95"] is None  # one pair: no interval
    assert mean_std([]) == {"mean": None, "std": None, "n": 0} and mean_std([2.0]) == {"mean": 2.0, "std": 0.0, "n": 1}


def test_paired_ratio_cancels_a_load_that_drifts_between_rounds():
    """Rows timed round by round: a round that runs 2× slower for both sides moves neither the ratio nor its interval,
    where the ratio of medians would follow the drift."""
    ours = [1.0, 1.1, 0.95, 1.05, 1.0]
    drift = [1.0, 2.0, 1.0, 2.0, 2.0]  # the machine's load, round by round
    reference = [1.2 * t * d for t, d in zip(ours, drift)]
    ratio = paired_ratio(reference, [t * d for t, d in zip(ours, drift)])
    assert ratio["n"] == 5 and ratio["ratio"] == pytest.approx(1.2)
    assert ratio["ci95"] == pytest.approx([1.2, 1.2])  # the same ratio every round: no spread
    noisy = paired_ratio([1.0, 1.3, 0.9, 1.1], [1.1, 1.2, 1.0, 1.0])
    logs = [math.log(a / b) for a, b in zip([1.0, 1.3, 0.9, 1.1], [1.1, 1.2, 1.0, 1.0])]
    low, high = scipy_stats.ttest_1samp(logs, 0.0).confidence_interval(0.95)
    assert noisy["ratio"] == pytest.approx(math.exp(sum(logs) / 4))
    assert noisy["ci95"] == pytest.approx([math.exp(low), math.exp(high)]) and noisy["ci95"][0] < 1 < noisy["ci95"][1]
    assert paired_ratio([1.0], [0.5]) == {"ratio": pytest.approx(2.0), "ci95": None, "n": 1}


def test_mean_and_spread_are_written_one_way():
    assert format_mean_std(mean_std([0.0952, 0.0967, 0.0986]), scale=100) == "9.68 ± 0.17"
    assert format_mean_std(mean_std([0.8109]), digits=4) == "0.8109"  # one run: no spread to show (not "± 0.0000")
    assert format_mean_std(mean_std([])) == "–"
