"""Paired multi-seed statistics: does a method beat the student alone, by how much, and how sure are we?

For each seed, the student alone and each method start from the same initial
weights and see the same data order, so the per-seed difference removes most of
the seed-to-seed noise that both share. A method's gain is the mean of those
paired differences with a two-sided 95 % confidence interval from Student's t
distribution with n - 1 degrees of freedom; the share of the teacher-student gap
it recovers is `(method - alone) / (teacher - alone)` on the means.

Example:
    >>> alone = [0.780, 0.776, 0.781, 0.779, 0.774]
    >>> kd = [0.792, 0.789, 0.790, 0.795, 0.786]
    >>> result = paired_comparison(alone, kd, teacher=0.90)
    >>> round(100 * result["difference_mean"], 2), result["interval_excludes_zero"]
    (1.24, True)
    >>> round(result["gap_recovered"], 3)
    0.102
"""

from __future__ import annotations

import math
import statistics as _statistics
from typing import Sequence

from scipy import stats as _scipy_stats

__all__ = ["mean_std", "t_interval", "paired_comparison"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (divisor n - 1; 0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value.")
    return _statistics.fmean(values), (_statistics.stdev(values) if len(values) > 1 else 0.0)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """`(mean, low, high)`: the two-sided confidence interval of the mean from Student's t.

    Raises:
        ValueError: with fewer than two values (no spread to estimate) or a confidence outside (0, 1).
    """
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"A confidence interval needs at least 2 values (seeds), received {len(values)}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), received {confidence!r}.")
    mean, std = mean_std(values)
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return mean, mean - half, mean + half


def paired_comparison(
    alone: Sequence[float], method: Sequence[float], teacher: float | None = None, confidence: float = 0.95
) -> dict:
    """Compares a method with the student alone, seed by seed.

    Args:
        alone: the student alone's score per seed.
        method: the method's score per seed, in the same seed order.
        teacher: the teacher's score, for the share of the gap recovered.
        confidence: of the interval of the mean difference.

    Returns:
        A dict with `method_mean`, `method_std`, `alone_mean`, `differences`,
        `difference_mean`, `difference_low`, `difference_high`,
        `interval_excludes_zero`, `wins` (seeds where the method scored higher),
        `p_value` (two-sided paired t-test) and, with a teacher, `gap_recovered`.

    Raises:
        ValueError: when the two lists differ in length or hold fewer than 2 seeds.
    """
    if len(alone) != len(method):
        raise ValueError(
            f"Paired scores need one value per seed on both sides: {len(alone)} for the student alone, {len(method)} for the method."
        )
    differences = [float(m) - float(a) for a, m in zip(alone, method)]
    mean, low, high = t_interval(differences, confidence)
    method_mean, method_std = mean_std(method)
    alone_mean, alone_std = mean_std(alone)
    std = mean_std(differences)[1]
    if std > 0:
        p_value = float(2 * _scipy_stats.t.sf(abs(mean) / (std / math.sqrt(len(differences))), len(differences) - 1))
    else:
        p_value = 0.0 if mean != 0 else 1.0
    result = {
        "seeds": len(differences),
        "method_mean": method_mean,
        "method_std": method_std,
        "alone_mean": alone_mean,
        "alone_std": alone_std,
        "differences": differences,
        "difference_mean": mean,
        "difference_low": low,
        "difference_high": high,
        "interval_excludes_zero": low > 0 or high < 0,
        "wins": sum(d > 0 for d in differences),
        "p_value": p_value,
    }
    if teacher is not None:
        gap = float(teacher) - alone_mean
        result["gap_recovered"] = (method_mean - alone_mean) / gap if gap > 0 else float("nan")
    return result
