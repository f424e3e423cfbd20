"""Paired multi-seed statistics, checked against NumPy and SciPy written out by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from kdistill import statistics


def test_t_interval_matches_the_textbook_formula():
    values = [0.1, 0.4, 0.35, 0.2, 0.3]
    mean, low, high = statistics.t_interval(values)
    half = stats.t.ppf(0.975, 4) * np.std(values, ddof=1) / math.sqrt(5)
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx((np.mean(values) - half, np.mean(values) + half))
    # a 99 % interval is wider
    _, low99, high99 = statistics.t_interval(values, confidence=0.99)
    assert low99 < low and high99 > high


def test_paired_comparison_uses_per_seed_differences_not_the_two_spreads():
    # Seed noise is large (alone varies by 5 points) but the method wins by 1 point on every seed:
    alone = [0.70, 0.75, 0.72, 0.68, 0.74]
    method = [a + 0.01 + 0.001 * i for i, a in enumerate(alone)]
    result = statistics.paired_comparison(alone, method, teacher=0.80)
    assert result["interval_excludes_zero"] and result["wins"] == 5
    assert result["difference_mean"] == pytest.approx(0.012)
    assert result["p_value"] == pytest.approx(stats.ttest_rel(method, alone).pvalue)
    assert result["gap_recovered"] == pytest.approx(0.012 / (0.80 - np.mean(alone)))
    # an unpaired view of the same numbers would not separate them
    assert statistics.t_interval(method)[1] < np.mean(alone)


def test_paired_comparison_reports_a_method_that_does_not_help():
    alone = [0.70, 0.72, 0.71]
    method = [0.71, 0.71, 0.71]
    result = statistics.paired_comparison(alone, method, teacher=0.9)
    assert not result["interval_excludes_zero"] and result["difference_low"] < 0 < result["difference_high"]


def test_paired_comparison_refuses_unpaired_or_single_seed_input():
    with pytest.raises(ValueError, match="one value per seed"):
        statistics.paired_comparison([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="at least 2 values"):
        statistics.paired_comparison([0.1], [0.2])
    with pytest.raises(ValueError, match="confidence"):
        statistics.t_interval([0.1, 0.2], confidence=95)
