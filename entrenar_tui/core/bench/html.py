"""`bench report --format html`: one self-contained page (no script, no network) with static
SVG charts of the sweep's own data drawn by matplotlib."""

from __future__ import annotations

import html
import io
from pathlib import Path

from ..runs.follow import read_metrics
from .analysis import METRIC_NAMES
from .report import build_report

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { border-bottom: 2px solid #446; } h2 { margin-top: 1.6em; color: #335; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #eef; } pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
"""


def svg(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: inline in HTML


def _metric_chart(analysis) -> str:
    """Each seed's value per setting, with the mean and one sd."""
    import matplotlib.pyplot as plt

    rows = [row for row in analysis.rows if row.values[analysis.metric]]
    figure, axes = plt.subplots(figsize=(8, 3.6))
    for index, row in enumerate(rows):
        values = row.values[analysis.metric]
        summary = row.summaries[analysis.metric]
        axes.scatter(
            [index] * len(values), values, color="#99a", s=18, zorder=2, gid=f"seeds-{row.label}"
        )
        axes.errorbar(index, summary.mean, yerr=summary.std, fmt="o", color="#c33", capsize=5)
    axes.set_xticks(range(len(rows)), [row.label for row in rows], rotation=20)
    axes.set_ylabel(METRIC_NAMES[analysis.metric])
    axes.grid(axis="y", alpha=0.3)
    return svg(figure)


def _curves(sweep, spec) -> dict[str, list[list[tuple[int, float]]]]:
    """Per setting, each finished job's (step, loss_ce) curve from its metrics.jsonl."""
    curves: dict[str, list] = {}
    for job in spec.jobs():
        lines = read_metrics(sweep.job_dir(job))
        points = [
            (line["step"], line["loss_ce"])
            for line in lines
            if line.get("kind") == "train" and isinstance(line.get("loss_ce"), (int, float))
        ]
        if points:
            curves.setdefault(job.label, []).append(points)
    return curves


def _loss_chart(curves) -> str:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 3.6))
    for index, (label, runs) in enumerate(curves.items()):
        color = plt.cm.viridis(index / max(1, len(curves) - 1))
        for number, points in enumerate(runs):
            steps, losses = zip(*points, strict=True)
            axes.plot(steps, losses, color=color, alpha=0.7, label=label if number == 0 else None)
    axes.set_xlabel("step")
    axes.set_ylabel("student cross-entropy (train)")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    return svg(figure)


def _throughput_chart(analysis) -> str:
    import matplotlib.pyplot as plt

    rows = [row for row in analysis.rows if row.values["tokens_per_s"]]
    figure, axes = plt.subplots(figsize=(8, 3))
    for index, row in enumerate(rows):
        summary = row.summaries["tokens_per_s"]
        axes.bar(index, summary.mean, yerr=summary.std, color="#68a", capsize=4)
    axes.set_xticks(range(len(rows)), [row.label for row in rows], rotation=20)
    axes.set_ylabel("tokens/s")
    return svg(figure)


def use_svg_backend() -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # labels stay text: searchable, small
    matplotlib.rcParams["svg.hashsalt"] = "entrenar"  # the same sweep gives the same page


def charts(sweep, spec, analysis) -> list[tuple]:
    use_svg_backend()
    blocks = []
    if any(row.values[analysis.metric] for row in analysis.rows):
        caption = f"{METRIC_NAMES[analysis.metric]} per setting: each seed, mean ± sd"
        blocks.append(("chart", caption, _metric_chart(analysis)))
    curves = _curves(sweep, spec)
    if curves:
        blocks.append(("chart", "Loss curves: student cross-entropy per step", _loss_chart(curves)))
    if any(row.values["tokens_per_s"] for row in analysis.rows):
        blocks.append(("chart", "Throughput per setting", _throughput_chart(analysis)))
    return blocks


def _block(block: tuple) -> str:
    kind = block[0]
    if kind == "p":
        return f"<p>{html.escape(block[1])}</p>"
    if kind == "list":
        return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block[1]) + "</ul>"
    if kind == "code":
        lines = block[1].count("\n") + 1
        summary = f"<summary>{lines} lines</summary>"
        return f"<details>{summary}<pre>{html.escape(block[1])}</pre></details>"
    if kind == "table":
        head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in block[2]
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if kind == "chart":
        return f"<figure>{block[2]}<figcaption>{html.escape(block[1])}</figcaption></figure>"
    return ""


def html_report(target: str | Path, metric: str | None = None) -> str:
    title, sections, _ = build_report(target, metric, charts=charts)
    return render_html(title, sections)


def render_html(title: str, sections) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [_block(block) for block in section.blocks]
    parts.append("</body></html>")
    return "\n".join(parts)
