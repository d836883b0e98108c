"""The numbers a growth team takes to a meeting: rates with intervals, lift over holdout.

Rates are Wilson score intervals (95 %): unlike the plain normal interval
they stay inside [0, 1] and behave at 0 clicks or 3 impressions. Lift is the
ratio of an arm's rate to the holdout's, minus one, with the Katz log
interval for a ratio of two proportions (0.5 added to each count when one is
zero, so a night with no conversions still has an interval, a wide one).
No scipy: both are closed forms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    value: Optional[float]
    low: Optional[float]
    high: Optional[float]


NONE = Interval(None, None, None)


def wilson(successes: int, trials: int, z: float = Z95) -> Interval:
    """``successes / trials`` with its Wilson interval; no trials, no rate."""
    if trials <= 0:
        return NONE
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def lift(
    arm_successes: int, arm_trials: int, base_successes: int, base_trials: int, z: float = Z95
) -> Interval:
    """The arm's rate over the baseline's (the holdout's), minus one, with the Katz
    log interval. None when either side has no trials."""
    if arm_trials <= 0 or base_trials <= 0:
        return NONE
    a, n1, c, n2 = arm_successes, arm_trials, base_successes, base_trials
    if a == 0 or c == 0:
        a, n1, c, n2 = a + 0.5, n1 + 0.5, c + 0.5, n2 + 0.5
    ratio = (a / n1) / (c / n2)
    se = math.sqrt(max(1 / a - 1 / n1 + 1 / c - 1 / n2, 0.0))
    value = (arm_successes / arm_trials) / (base_successes / base_trials) - 1 if base_successes else None
    return Interval(value, ratio * math.exp(-z * se) - 1, ratio * math.exp(z * se) - 1)
