"""`bench report`: a sweep written up as Markdown (Summary, Methodology, Results, Statistical
Analysis, Recommendations), from the sweep directory alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from ..errors import InvalidInputError
from .analysis import METRIC_NAMES, Analysis, analyze
from .spec import SweepSpec
from .sweepdir import METRICS, SweepDir, read_results

COLUMNS = ("eval_ppl", "eval_loss", "final_loss", "eval_top1_agreement", "tokens_per_s", "wall_s")
SHORT_NAMES = {
    "eval_ppl": "eval ppl",
    "eval_loss": "eval loss",
    "final_loss": "train loss",
    "eval_top1_agreement": "top-1 agree",
    "tokens_per_s": "tok/s",
    "wall_s": "train time",
}


def load_sweep(target: str | Path) -> tuple[SweepDir, SweepSpec, dict[str, dict]]:
    """A sweep directory, or its results.jsonl (the spec is read from beside it)."""
    path = Path(target)
    if path.is_file():
        path = path.parent
    if not path.exists():
        raise InvalidInputError(f"no such sweep: {target}", "pass a sweep directory")
    sweep = SweepDir(path)
    spec = sweep.read_spec()
    return sweep, spec, read_results(sweep.results_path)


def provenance(sweep: SweepDir, spec: SweepSpec) -> dict:
    """Hardware and package versions, from the first job that wrote its run.json."""
    for job in spec.jobs():
        try:
            run = json.loads((sweep.job_dir(job) / "run.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(run, dict):
            return {"hardware": run.get("hardware"), "versions": run.get("versions")}
    return {}


def _number(value: float, metric: str) -> str:
    if metric == "eval_top1_agreement":
        return f"{value:.1%}"
    if metric == "tokens_per_s":
        return f"{value:,.0f}"
    if metric == "wall_s":
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def cell(summary, metric: str) -> str:
    """mean ± std in the metric's own format ("-" when nothing finished)."""
    if summary.n == 0 or not math.isfinite(summary.mean):
        return "-"
    text = _number(summary.mean, metric)
    if summary.n >= 2:
        text += f" ± {_number(summary.std, metric)}"
    return text + (" s" if metric == "wall_s" else "")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(analysis: Analysis) -> str:
    header = ["setting", "seeds", *(SHORT_NAMES[m] for m in COLUMNS)]
    rows = []
    for row in analysis.rows:
        mark = " (best)" if row.label == analysis.best else ""
        seeds = f"{row.finished}" + (f" (+{row.failed} failed)" if row.failed else "")
        rows.append([row.label + mark, seeds, *(cell(row.summaries[m], m) for m in COLUMNS)])
    return _table(header, rows)


def _p(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def comparisons_table(analysis: Analysis) -> str:
    header = ["comparison", "difference", "Welch t", "p", "Holm p", "Hedges g", "detectable", ""]
    rows = [
        [
            f"{c.first} vs {c.second}",
            f"{c.difference:+.4g}",
            f"{c.t:.2f}" if math.isfinite(c.t) else "-",
            _p(c.p_value),
            _p(c.p_adjusted),
            f"{c.hedges_g:+.2f}" if math.isfinite(c.hedges_g) else "-",
            f"{c.detectable_difference:.3g}" if math.isfinite(c.detectable_difference) else "-",
            "significant" if c.significant else "",
        ]
        for c in analysis.comparisons
    ]
    return _table(header, rows)


def markdown_report(target: str | Path, metric: str | None = None) -> str:
    sweep, spec, results = load_sweep(target)
    analysis = analyze(spec, results, metric)
    facts = provenance(sweep, spec)
    ended = [r for r in results.values() if r["key"] in {j.key for j in spec.jobs()}]
    parts = [
        f"# Sweep report: `bench {spec.command}`",
        "",
        "## Summary",
        "",
        f"- Sweep directory: `{sweep.path}`",
        f"- Jobs: {len(spec.jobs())} ({len(spec.variants)} settings x {len(spec.seeds)} seeds);"
        f" {sum(r['status'] == 'finished' for r in ended)} finished,"
        f" {sum(r['status'] == 'failed' for r in ended)} failed,"
        f" {len(spec.jobs()) - len(ended)} not run",
        f"- Compared on: {METRIC_NAMES[analysis.metric]} (`{analysis.metric}`)",
        f"- Best: {analysis.best or '-'}; winner: {analysis.winner or 'none (see Recommendations)'}",
        "",
        "## Methodology",
        "",
        *_methodology(spec, facts),
        "",
        "## Results",
        "",
        results_table(analysis),
        "",
        "## Statistical Analysis",
        "",
        *_statistics_text(analysis),
        "",
        "## Recommendations",
        "",
        analysis.recommendation,
        *_failures(analysis),
        "",
    ]
    return "\n".join(parts)


def _methodology(spec: SweepSpec, facts: dict) -> list[str]:
    varied = [f"- `{label}`: `{json.dumps(overlay)}`" for label, overlay in spec.variants]
    lines = [
        f"Each setting was trained once per seed ({', '.join(map(str, spec.seeds))}), each job a"
        " separate `entrenar distill run` in its own run directory under `jobs/`, from the same"
        " base config with one overlay:",
        "",
        *varied,
        "",
        *(f"- Filled in: {note}" for note in spec.notes),
        "Metrics come from each run's last log line (final train loss) and its last held-out"
        " evaluation (loss, perplexity, top-1 agreement with the teacher). The train loss mixes"
        " the loss terms a setting uses, so settings are compared on held-out metrics.",
        "",
        "Base config:",
        "",
        "```yaml",
        yaml.safe_dump(spec.base, sort_keys=False).rstrip(),
        "```",
    ]
    if facts.get("hardware"):
        lines += ["", f"Hardware: `{json.dumps(facts['hardware'])}`"]
    if facts.get("versions"):
        versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
        lines += ["", f"Package versions: {versions}"]
    return lines


def _statistics_text(analysis: Analysis) -> list[str]:
    if not analysis.comparisons:
        return ["No comparisons: at least two settings need finished jobs."]
    against = (
        f"each setting against the baseline {analysis.baseline}"
        if analysis.baseline
        else "every pair of settings"
    )
    return [
        f"Welch's t-test on {METRIC_NAMES[analysis.metric]}, {against}; p-values corrected"
        f" with Holm-Bonferroni across the {len(analysis.comparisons)} comparisons. Hedges' g is"
        " the bias-corrected standardised difference; 'detectable' is the smallest difference"
        " each test could find with power 0.8 at the family-wise level, in the metric's units.",
        "",
        comparisons_table(analysis),
    ]


def _failures(analysis: Analysis) -> list[str]:
    if not analysis.failures:
        return []
    lines = ["", "Failed jobs (each retried once from its last checkpoint):", ""]
    for failure in analysis.failures:
        error = failure.get("error") or {}
        lines.append(f"- {failure['label']} seed {failure['seed']}: {error.get('message')}")
    return lines


__all__ = ["METRICS", "markdown_report", "load_sweep", "results_table", "comparisons_table"]
