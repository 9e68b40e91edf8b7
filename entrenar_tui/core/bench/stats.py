"""The statistics of a sweep: a few seeds per setting, read the way a reviewer would.

Each setting is summarised by mean, sample std and a bootstrap confidence interval of the
mean; settings are compared with Welch's t-test (unequal variances, the safe default for a
handful of seeds), p-values are corrected across every comparison a report makes (Holm), and
each comparison carries Hedges' g and the smallest effect the sweep could have detected at its
number of seeds with power 0.8, so that "not significant" is not read as "no difference".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

ALPHA = 0.05
POWER = 0.8


@dataclass
class Summary:
    n: int
    mean: float
    std: float  # sample std (ddof 1); 0 with one value
    ci_low: float | None  # 95% bootstrap interval of the mean; None below 2 values
    ci_high: float | None

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self, digits: int = 3) -> str:
        if self.n < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def summarize(values: list[float], *, seed: int = 0) -> Summary:
    """Mean, std and a 95% BCa bootstrap interval of the mean (percentile when BCa is undefined,
    as when every value is equal)."""
    import numpy as np
    from scipy import stats

    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if data.size == 0:
        return Summary(0, math.nan, math.nan, None, None)
    mean, std = float(data.mean()), float(data.std(ddof=1)) if data.size > 1 else 0.0
    if data.size < 2 or std == 0.0:
        bound = mean if data.size >= 2 else None
        return Summary(int(data.size), mean, std, bound, bound)
    rng = np.random.default_rng(seed)
    result = stats.bootstrap((data,), np.mean, confidence_level=0.95, random_state=rng)
    low, high = result.confidence_interval
    if not (math.isfinite(low) and math.isfinite(high)):
        result = stats.bootstrap(
            (data,), np.mean, confidence_level=0.95, method="percentile", random_state=rng
        )
        low, high = result.confidence_interval
    return Summary(int(data.size), mean, std, float(low), float(high))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def pooled_sd(first: list[float], second: list[float]) -> float:
    """The two samples' pooled standard deviation (ddof 1 each); nan below two values a side."""
    n1, n2 = len(first), len(second)
    if n1 < 2 or n2 < 2:
        return math.nan
    mean1, mean2 = _mean(first), _mean(second)
    squares = sum((v - mean1) ** 2 for v in first) + sum((v - mean2) ** 2 for v in second)
    return math.sqrt(squares / (n1 + n2 - 2))


def hedges_g(first: list[float], second: list[float]) -> float:
    """Standardised mean difference (first - second) over the pooled sd, bias-corrected for
    small samples (Hedges 1981); nan when it is undefined."""
    sd = pooled_sd(first, second)
    if math.isnan(sd):
        return math.nan
    difference = _mean(first) - _mean(second)
    if sd == 0:
        return math.nan if difference == 0 else math.copysign(math.inf, difference)
    return difference / sd * (1 - 3 / (4 * (len(first) + len(second)) - 9))


def welch(first: list[float], second: list[float]) -> tuple[float, float]:
    """Welch's t statistic and two-sided p-value; (nan, nan) below two values per side or when
    both sides have no spread."""
    from scipy import stats

    if len(first) < 2 or len(second) < 2:
        return math.nan, math.nan
    result = stats.ttest_ind(first, second, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (nan stays nan and is not counted).

    Written here because scipy has only Benjamini-Hochberg (`false_discovery_control`), which
    controls the false discovery rate, not the family-wise error a "winner" claim needs."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    count = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(indexed):
        running = max(running, min(1.0, (count - rank) * p))
        adjusted[index] = running
    return adjusted


def power(effect: float, n1: int, n2: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided two-sample t-test at standardised effect `effect` (noncentral t)."""
    from scipy import stats

    df = n1 + n2 - 2
    critical = stats.t.ppf(1 - alpha / 2, df)
    noncentrality = effect * math.sqrt(n1 * n2 / (n1 + n2))
    value = float(
        stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality)
    )
    if math.isnan(value):  # scipy's nct fails far in the tail (few df, huge noncentrality)
        return 1.0 if noncentrality > critical else 0.0
    return min(1.0, value)


def detectable_effect(n1: int, n2: int, alpha: float = ALPHA, target: float = POWER) -> float:
    """The smallest standardised effect (in pooled sd) detected with power `target` at level
    `alpha` by a two-sided t-test with n1 and n2 seeds; inf below two seeds per side."""
    from scipy.optimize import brentq

    if n1 < 2 or n2 < 2:
        return math.inf
    high = 1.0
    while power(high, n1, n2, alpha) < target:
        high *= 2
        if high > 1e6:
            return math.inf
    return float(brentq(lambda d: power(d, n1, n2, alpha) - target, 0.0, high, xtol=1e-6))


@dataclass
class Comparison:
    """`first` against `second` on one metric (difference = first - second)."""

    first: str
    second: str
    metric: str
    difference: float
    t: float
    p_value: float
    p_adjusted: float
    hedges_g: float
    detectable_g: float  # smallest |g| this comparison could detect (power 0.8, family level)
    detectable_difference: float  # the same in the metric's units (times the pooled sd)
    significant: bool

    def to_dict(self) -> dict:
        return asdict(self)


def compare_groups(
    groups: dict[str, list[float]], pairs: list[tuple[str, str]], metric: str
) -> list[Comparison]:
    """Welch's test for each pair, Holm-corrected over all of them; the detectable effect is
    taken at the family's strictest level (alpha / number of comparisons), since that is what
    the first Holm step requires of the biggest difference."""
    raw = [welch(groups[a], groups[b]) for a, b in pairs]
    adjusted = holm([p for _, p in raw])
    family_alpha = ALPHA / max(1, len(pairs))
    comparisons = []
    for (a, b), (t_stat, p), p_adj in zip(pairs, raw, adjusted, strict=True):
        first, second = groups[a], groups[b]
        detectable = detectable_effect(len(first), len(second), family_alpha)
        sd = pooled_sd(first, second)
        difference = _mean(first) - _mean(second) if first and second else math.nan
        comparisons.append(
            Comparison(
                first=a,
                second=b,
                metric=metric,
                difference=difference,
                t=t_stat,
                p_value=p,
                p_adjusted=p_adj,
                hedges_g=hedges_g(first, second),
                detectable_g=detectable,
                detectable_difference=detectable * sd if math.isfinite(sd) else math.nan,
                significant=bool(p_adj < ALPHA) if not math.isnan(p_adj) else False,
            )
        )
    return comparisons
