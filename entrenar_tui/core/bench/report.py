"""`bench report`: a sweep written up (Summary, Methodology, Results, Statistical Analysis,
Recommendations) from the sweep directory alone.

The report is built once as a list of sections made of blocks (paragraphs, lists, tables,
code, charts); `markdown_report` and `html.html_report` only render those blocks."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import InvalidInputError
from .analysis import METRIC_NAMES, Analysis, analyze
from .spec import SweepSpec
from .sweepdir import SweepDir, read_results

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


def amount(value: float, signed: bool = False) -> str:
    """A difference or detectable size: 3 significant digits, thousands with separators."""
    if not math.isfinite(value):
        return "-"
    sign = "+" if signed else ""
    return f"{value:{sign},.0f}" if abs(value) >= 1000 else f"{value:{sign}.3g}"


def cell(summary, metric: str) -> str:
    """mean ± std in the metric's own format ("-" when nothing finished)."""
    if summary.n == 0 or not math.isfinite(summary.mean):
        return "-"
    text = _number(summary.mean, metric)
    if summary.n >= 2:
        text += f" ± {_number(summary.std, metric)}"
    return text + (" s" if metric == "wall_s" else "")


@dataclass
class Section:
    title: str
    blocks: list[tuple] = field(default_factory=list)  # ("p", text) ("list", items) ...


def results_rows(analysis: Analysis, best: str = " (best)") -> tuple[list[str], list[list[str]]]:
    header = ["setting", "seeds", *(SHORT_NAMES[m] for m in COLUMNS)]
    rows = []
    for row in analysis.rows:
        mark = best if row.label == analysis.best else ""
        seeds = f"{row.finished}" + (f" (+{row.failed} failed)" if row.failed else "")
        rows.append([row.label + mark, seeds, *(cell(row.summaries[m], m) for m in COLUMNS)])
    return header, rows


def p_text(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def comparison_rows(analysis: Analysis) -> tuple[list[str], list[list[str]]]:
    header = [
        "comparison",
        "difference",
        "Welch t",
        "p",
        "Holm p",
        "Hedges g",
        "detectable",
        "signif.",
    ]
    rows = [
        [
            f"{c.first} vs {c.second}",
            amount(c.difference, signed=True),
            f"{c.t:.2f}" if math.isfinite(c.t) else "-",
            p_text(c.p_value),
            p_text(c.p_adjusted),
            f"{c.hedges_g:+.2f}" if math.isfinite(c.hedges_g) else "-",
            amount(c.detectable_difference),
            "significant" if c.significant else "",
        ]
        for c in analysis.comparisons
    ]
    return header, rows


def build_report(target: str | Path, metric: str | None = None, charts=None) -> tuple:
    """(title, sections, analysis); `charts(sweep, spec, analysis)` adds ("chart", name, svg)
    blocks to Results (the HTML report passes one)."""
    sweep, spec, results = load_sweep(target)
    analysis = analyze(spec, results, metric)
    keys = {job.key for job in spec.jobs()}
    ended = [r for r in results.values() if r["key"] in keys]
    finished = sum(r["status"] == "finished" for r in ended)
    failed = sum(r["status"] == "failed" for r in ended)
    summary = [
        f"Sweep directory: {sweep.path}",
        f"Jobs: {len(keys)} ({len(spec.variants)} settings x {len(spec.seeds)} seeds); "
        f"{finished} finished, {failed} failed, {len(keys) - len(ended)} not run",
        f"Compared on: {METRIC_NAMES[analysis.metric]} ({analysis.metric})",
        f"Best: {analysis.best or '-'}; winner: {analysis.winner or 'none (see Recommendations)'}",
    ]
    results_blocks: list[tuple] = [("table", *results_rows(analysis))]
    if charts is not None:
        results_blocks += charts(sweep, spec, analysis)
    sections = [
        Section("Summary", [("list", summary), ("p", analysis.recommendation)]),
        Section("Methodology", _methodology(spec, provenance(sweep, spec))),
        Section("Results", results_blocks),
        Section("Statistical Analysis", _statistics(analysis)),
        Section("Recommendations", [("p", analysis.recommendation), *_failures(analysis)]),
    ]
    return f"Sweep report: bench {spec.command}", sections, analysis


def _methodology(spec: SweepSpec, facts: dict) -> list[tuple]:
    varied = [f"{label}: {json.dumps(overlay)}" for label, overlay in spec.variants]
    blocks: list[tuple] = [
        (
            "p",
            f"Each setting was trained once per seed ({', '.join(map(str, spec.seeds))}), each"
            " job a separate `entrenar distill run` in its own run directory under jobs/, from"
            " the same base config with one overlay:",
        ),
        ("list", varied),
    ]
    if spec.notes:
        blocks.append(("list", [f"Filled in: {note}" for note in spec.notes]))
    blocks += [
        (
            "p",
            "Metrics come from each run's last log line (final train loss) and its last"
            " held-out evaluation (loss, perplexity, top-1 agreement with the teacher). The"
            " train loss mixes the loss terms a setting uses, so settings are compared on"
            " held-out metrics.",
        ),
        ("p", "Base config:"),
        ("code", yaml.safe_dump(spec.base, sort_keys=False).rstrip()),
    ]
    if facts.get("hardware"):
        blocks.append(("p", f"Hardware: {json.dumps(facts['hardware'])}"))
    if facts.get("versions"):
        versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
        blocks.append(("p", f"Package versions: {versions}"))
    return blocks


def _statistics(analysis: Analysis) -> list[tuple]:
    if not analysis.comparisons:
        return [("p", "No comparisons: at least two settings need finished jobs.")]
    against = (
        f"each setting against the baseline {analysis.baseline}"
        if analysis.baseline
        else "every pair of settings"
    )
    text = (
        f"Welch's t-test on {METRIC_NAMES[analysis.metric]}, {against}; p-values corrected"
        f" with Holm-Bonferroni across the {len(analysis.comparisons)} comparisons. Hedges' g is"
        " the bias-corrected standardised difference; 'detectable' is the smallest difference"
        " each test could find with power 0.8 at the family-wise level, in the metric's units."
    )
    return [("p", text), ("table", *comparison_rows(analysis))]


def _failures(analysis: Analysis) -> list[tuple]:
    if not analysis.failures:
        return []
    items = [
        f"{failure['label']} seed {failure['seed']}: {(failure.get('error') or {}).get('message')}"
        for failure in analysis.failures
    ]
    return [("p", "Failed jobs (each retried once from its last checkpoint):"), ("list", items)]


def _markdown_block(block: tuple) -> str:
    kind = block[0]
    if kind == "p":
        return block[1]
    if kind == "list":
        return "\n".join(f"- {item}" for item in block[1])
    if kind == "code":
        return f"```yaml\n{block[1]}\n```"
    if kind == "table":
        header, rows = block[1], block[2]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    return ""  # charts are for the HTML report


def markdown_report(target: str | Path, metric: str | None = None) -> str:
    title, sections, _ = build_report(target, metric)
    parts = [f"# {title}", ""]
    for section in sections:
        parts += [f"## {section.title}", ""]
        parts += [text + "\n" for text in map(_markdown_block, section.blocks) if text]
    return "\n".join(parts)
