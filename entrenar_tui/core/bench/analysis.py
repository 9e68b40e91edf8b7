"""From a sweep's results to its verdict: per-setting summaries, corrected comparisons, and a
recommendation that names a winner only when the data support one."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .spec import SweepSpec
from .stats import ALPHA, POWER, Comparison, Summary, compare_groups, summarize
from .sweepdir import LOWER_IS_BETTER, METRICS

METRIC_NAMES = {
    "final_loss": "final train loss",
    "eval_loss": "held-out loss",
    "eval_ppl": "held-out perplexity",
    "eval_top1_agreement": "top-1 agreement with the teacher",
    "tokens_per_s": "tokens/s",
    "peak_memory_bytes": "peak memory",
    "wall_s": "wall time",
}


@dataclass
class Row:
    label: str
    finished: int
    failed: int
    summaries: dict[str, Summary]
    values: dict[str, list[float]]  # per metric, one per finished seed (seed order)

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "finished": self.finished,
            "failed": self.failed,
            "summaries": {k: v.to_dict() for k, v in self.summaries.items()},
            "values": self.values,
        }


@dataclass
class Analysis:
    command: str
    metric: str
    baseline: str | None
    rows: list[Row]
    comparisons: list[Comparison]
    best: str | None
    winner: str | None  # best AND significantly better than what it is compared with
    recommendation: str
    failures: list[dict] = field(default_factory=list)

    def row(self, label: str) -> Row:
        return next(row for row in self.rows if row.label == label)

    def to_dict(self) -> dict:
        return {
            "command": self.command,
            "metric": self.metric,
            "baseline": self.baseline,
            "best": self.best,
            "winner": self.winner,
            "recommendation": self.recommendation,
            "rows": [row.to_dict() for row in self.rows],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "failures": self.failures,
        }


def _rows(spec: SweepSpec, results: dict[str, dict]) -> list[Row]:
    by_label: dict[str, list[dict]] = {label: [] for label, _ in spec.variants}
    for job in spec.jobs():
        if job.key in results:
            by_label[job.label].append(results[job.key])
    rows = []
    for label, records in by_label.items():
        finished = [r for r in records if r.get("status") == "finished"]
        values = {
            metric: [
                r["metrics"][metric]
                for r in finished
                if isinstance(r.get("metrics", {}).get(metric), (int, float))
            ]
            for metric in METRICS
        }
        summaries = {metric: summarize(vals) for metric, vals in values.items()}
        rows.append(Row(label, len(finished), len(records) - len(finished), summaries, values))
    return rows


def _pairs(spec: SweepSpec, rows: list[Row]) -> list[tuple[str, str]]:
    labels = [row.label for row in rows if row.finished]
    if spec.baseline and spec.baseline in labels:
        return [(label, spec.baseline) for label in labels if label != spec.baseline]
    return [(a, b) for index, a in enumerate(labels) for b in labels[index + 1 :]]


def _better(difference: float, lower_is_better: bool) -> bool:
    return difference < 0 if lower_is_better else difference > 0


def analyze(spec: SweepSpec, results: dict[str, dict], metric: str | None = None) -> Analysis:
    metric = metric or spec.metric
    lower = LOWER_IS_BETTER[metric]
    rows = _rows(spec, results)
    groups = {row.label: row.values[metric] for row in rows}
    comparisons = compare_groups(groups, _pairs(spec, rows), metric)
    scored = [row for row in rows if row.values[metric]]
    best = None
    if scored:
        best_row = (min if lower else max)(scored, key=lambda row: row.summaries[metric].mean)
        best = best_row.label
    winner = _winner(best, comparisons, lower)
    failures = [
        {"key": r["key"], "label": r.get("label"), "seed": r.get("seed"), "error": r.get("error")}
        for r in results.values()
        if r.get("status") == "failed"
    ]
    analysis = Analysis(spec.command, metric, spec.baseline, rows, comparisons, best, winner, "")
    analysis.failures = failures
    analysis.recommendation = recommend(analysis)
    return analysis


def _involving(best: str, comparisons: list[Comparison]) -> list[tuple[Comparison, float]]:
    """The comparisons with `best`, each with the difference oriented as best - other."""
    found = []
    for c in comparisons:
        if c.first == best:
            found.append((c, c.difference))
        elif c.second == best:
            found.append((c, -c.difference))
    return found


def _winner(best: str | None, comparisons: list[Comparison], lower: bool) -> str | None:
    """The best setting, if it beats everything it was compared with, significantly."""
    if best is None:
        return None
    involving = _involving(best, comparisons)
    if not involving:
        return None
    if all(c.significant and _better(diff, lower) for c, diff in involving):
        return best
    return None


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def recommend(analysis: Analysis) -> str:
    """Plain words: the winner and why, or why there is none and what would settle it."""
    name = METRIC_NAMES[analysis.metric]
    if analysis.best is None:
        return f"No job finished with a {name}: nothing to recommend (see the failures)."
    best = analysis.row(analysis.best).summaries[analysis.metric]
    involving = _involving(analysis.best, analysis.comparisons)
    if analysis.winner:
        strongest = max(c.p_adjusted for c, _ in involving)
        against = analysis.baseline or "every other setting"
        return (
            f"{analysis.winner} is best on {name} ({best.text()}), significantly better than "
            f"{against} after Holm correction (adjusted p <= {_fmt(strongest)}, alpha {ALPHA})."
        )
    if analysis.baseline == analysis.best:
        lead = f"The baseline {analysis.best} has the best {name} ({best.text()}); nothing beat it."
        worse = [_other(c, analysis.best) for c, _ in involving if c.significant]
        if worse:
            lead += f" Significantly worse after Holm correction: {', '.join(worse)}."
    else:
        lead = f"{analysis.best} has the best mean {name} ({best.text()}), but no winner is named:"
        weak = [c for c, diff in involving if not c.significant]
        if weak:
            lead += f" its difference from {_other(weak[0], analysis.best)} is not significant"
            lead += f" after Holm correction (adjusted p = {_fmt(weak[0].p_adjusted)})."
    return lead + _power_note(involving, name)


def _other(comparison: Comparison, label: str) -> str:
    return comparison.second if comparison.first == label else comparison.first


def _power_note(involving: list[tuple[Comparison, float]], name: str) -> str:
    sizes = [c for c, _ in involving if math.isfinite(c.detectable_difference)]
    if not sizes:
        return " Too few seeds to test anything: run at least 2 seeds per setting (3+ is better)."
    smallest = min(sizes, key=lambda c: c.detectable_difference)
    return (
        f" With these seeds the sweep could detect only differences of about "
        f"{_fmt(smallest.detectable_difference)} in {name} (|g| >= {smallest.detectable_g:.2f},"
        f" power {POWER}); smaller real differences would go unseen, so run more seeds"
        " before concluding there is none."
    )
