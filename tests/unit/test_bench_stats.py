"""The sweep statistics against independent arithmetic and simulation, with sample sizes that
give the power each claim needs (Welch at d = 0.5 with 10 seeds has power ~0.19, not 0.95)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from entrenar_tui.core.bench import stats

SIMULATIONS = 4000


def test_hedges_g_by_hand():
    # pooled sd 1, difference -1, small-sample correction 1 - 3 / (4 * 6 - 9) = 0.8
    assert stats.hedges_g([1, 2, 3], [2, 3, 4]) == pytest.approx(-0.8)
    assert math.isnan(stats.hedges_g([1.0], [2.0, 3.0]))


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_welch_detects_a_large_effect_at_the_size_that_gives_it_power(seed):
    """d = 2.5 with 12 seeds a side: power > 0.9999, so a miss is a bug, not bad luck."""
    assert stats.power(2.5, 12, 12) > 0.9999
    rng = np.random.default_rng(seed)
    first, second = rng.normal(0, 1, 12), rng.normal(2.5, 1, 12)
    _, p_value = stats.welch(list(first), list(second))
    assert p_value < 0.05


def test_welch_keeps_its_false_positive_rate_under_the_null():
    rng = np.random.default_rng(0)
    samples = rng.normal(0, 1, (SIMULATIONS, 2, 5))
    p_values = [stats.welch(list(a), list(b))[1] for a, b in samples]
    rate = np.mean(np.array(p_values) < 0.05)
    assert 0.035 < rate < 0.065  # binomial sd at 4000 trials is 0.0034


@pytest.mark.parametrize(("n", "alpha"), [(6, 0.05), (4, 0.05 / 3), (15, 0.05)])
def test_the_detectable_effect_is_detected_with_power_0_8(n, alpha):
    effect = stats.detectable_effect(n, n, alpha)
    rng = np.random.default_rng(n)
    first = rng.normal(0, 1, (SIMULATIONS, n))
    second = rng.normal(effect, 1, (SIMULATIONS, n))
    p_values = scipy_stats.ttest_ind(first, second, axis=1).pvalue  # the pooled test it models
    assert np.mean(p_values < alpha) == pytest.approx(0.8, abs=0.03)


def test_the_known_detectable_effects():
    # textbook values for a two-sided two-sample t-test at power 0.8, alpha 0.05
    assert stats.detectable_effect(10, 10) == pytest.approx(1.325, abs=0.005)
    assert stats.detectable_effect(30, 30) == pytest.approx(0.736, abs=0.005)
    assert stats.detectable_effect(1, 5) == math.inf
    assert math.isfinite(stats.detectable_effect(2, 2, 0.05 / 6))  # scipy's nct tail: no NaN


def _holm_rejections(p_values: list[float], alpha: float) -> set[int]:
    """Holm's step-down procedure as published: reject in order while p_(i) <= alpha/(m-i)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = set()
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected.add(index)
    return rejected


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12), st.sampled_from([0.01, 0.05, 0.1]))
def test_holm_adjusted_p_values_reject_what_the_step_down_procedure_rejects(p_values, alpha):
    adjusted = stats.holm(p_values)
    assert all(a >= p for a, p in zip(adjusted, p_values, strict=True))
    assert {i for i, a in enumerate(adjusted) if a <= alpha} == _holm_rejections(p_values, alpha)


def test_holm_ignores_missing_p_values():
    assert stats.holm([0.01, math.nan, 0.04]) == [0.02, pytest.approx(math.nan, nan_ok=True), 0.04]


@given(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=10))
@settings(max_examples=30, deadline=None)
def test_the_bootstrap_interval_brackets_the_mean_within_the_data(values):
    summary = stats.summarize(values)
    assert summary.n == len(values)
    assert summary.mean == pytest.approx(float(np.mean(values)), abs=1e-9)
    if summary.std > 0:
        assert min(values) - 1e-9 <= summary.ci_low <= summary.ci_high <= max(values) + 1e-9


def test_compare_groups_corrects_across_every_pair():
    groups = {"a": [1.0, 1.1, 0.9, 1.0], "b": [2.0, 2.1, 1.9, 2.0], "c": [1.0, 1.2, 0.8, 1.0]}
    pairs = [("b", "a"), ("c", "a")]
    compared = stats.compare_groups(groups, pairs, "eval_ppl")
    raw = [scipy_stats.ttest_ind(groups[x], groups[y], equal_var=False).pvalue for x, y in pairs]
    assert [c.p_value for c in compared] == pytest.approx(raw)
    assert compared[0].significant and not compared[1].significant
    assert compared[0].difference == pytest.approx(1.0)
    assert compared[0].detectable_g == pytest.approx(stats.detectable_effect(4, 4, 0.025))
