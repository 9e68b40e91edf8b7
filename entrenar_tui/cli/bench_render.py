"""A sweep's result in the terminal: the results table (best marked), the corrected
comparisons, a plotext chart of the compared metric, and the recommendation."""

from __future__ import annotations

from . import render

TITLES = {"temperature": "Temperature Sweep Results", "compare": "Strategy Comparison"}


def show_sweep(result) -> None:
    from ..core.bench.report import comparison_rows, results_rows

    outcome, analysis = result
    title = TITLES.get(analysis.command, "Ablation Results")
    seeds = len(outcome.spec.seeds)
    columns, rows = results_rows(analysis, best=" ★")
    heading = f"{title} ({seeds} seed{'s' * (seeds > 1)} each, mean ± std)"
    render.show(render.table(heading, columns, rows, right=set(range(1, len(columns)))))
    if analysis.comparisons:
        columns, rows = comparison_rows(analysis)
        title = f"Statistical Analysis (Welch's t-test on {analysis.metric}, Holm-corrected)"
        render.show(render.table(title, columns, rows, right=set(range(1, 7))))
    _chart(analysis)
    render.line("")
    render.line(f"Recommendation: {analysis.recommendation}")
    for failure in analysis.failures:
        message = (failure.get("error") or {}).get("message")
        render.line(f"failed: {failure['label']} seed {failure['seed']}: {message}")
    render.err_line(f"sweep directory: {outcome.path} (entrenar bench report {outcome.path})")


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
