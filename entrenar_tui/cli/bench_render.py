"""A sweep's result in the terminal: the results table (best marked), the corrected
comparisons, a plotext chart of the compared metric, and the recommendation."""

from __future__ import annotations

import math

from . import render

TITLES = {"temperature": "Temperature Sweep Results", "compare": "Strategy Comparison"}


def show_sweep(result) -> None:
    from ..core.bench.report import COLUMNS, SHORT_NAMES, cell

    outcome, analysis = result
    title = TITLES.get(analysis.command, "Ablation Results")
    seeds = len(outcome.spec.seeds)
    columns = ["setting", "seeds", *(SHORT_NAMES[m] for m in COLUMNS)]
    rows = []
    for row in analysis.rows:
        mark = " ★" if row.label == analysis.best else ""
        count = f"{row.finished}" + (f" +{row.failed} failed" if row.failed else "")
        rows.append([row.label + mark, count, *(cell(row.summaries[m], m) for m in COLUMNS)])
    heading = f"{title} ({seeds} seed{'s' * (seeds > 1)} each, mean ± std)"
    render.show(render.table(heading, columns, rows, right=set(range(1, len(columns)))))
    _show_comparisons(analysis)
    _chart(analysis)
    render.line("")
    render.line(f"Recommendation: {analysis.recommendation}")
    for failure in analysis.failures:
        message = (failure.get("error") or {}).get("message")
        render.line(f"failed: {failure['label']} seed {failure['seed']}: {message}")
    render.err_line(f"sweep directory: {outcome.path} (entrenar bench report {outcome.path})")


def _show_comparisons(analysis) -> None:
    from ..core.bench.report import amount, p_text

    if not analysis.comparisons:
        return
    rows = [
        [
            f"{c.first} vs {c.second}",
            amount(c.difference, signed=True),
            p_text(c.p_value),
            p_text(c.p_adjusted),
            f"{c.hedges_g:+.2f}" if math.isfinite(c.hedges_g) else "-",
            amount(c.detectable_difference),
            "yes" if c.significant else "no",
        ]
        for c in analysis.comparisons
    ]
    columns = ["comparison", "difference", "p", "Holm p", "Hedges g", "detectable", "signif."]
    title = f"Statistical Analysis (Welch's t-test on {analysis.metric}, Holm-corrected)"
    render.show(render.table(title, columns, rows, right=set(range(1, 6))))


def _chart(analysis) -> None:
    """The compared metric per setting, mean with the seeds' spread, as a terminal chart."""
    import plotext

    scored = [row for row in analysis.rows if row.values[analysis.metric]]
    if len(scored) < 2 or not render.console().is_terminal:
        return
    plotext.clear_figure()
    means = [row.summaries[analysis.metric].mean for row in scored]
    positions = list(range(1, len(scored) + 1))
    plotext.plot(positions, means, marker="braille")
    plotext.scatter(positions, means, marker="●")
    plotext.xticks(positions, [row.label for row in scored])
    plotext.title(f"{analysis.metric} per setting (mean over seeds)")
    plotext.plotsize(min(100, render.console().width), 15)
    plotext.theme("clear")
    render.line(plotext.build())
