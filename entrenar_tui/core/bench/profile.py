"""`bench profile`: one run, trained as a one-job sweep, written up as an HTML page: where the
time and memory went (throughput percentiles, peak and timeline of memory, loss per term)."""

from __future__ import annotations

import statistics
from pathlib import Path

from ..errors import InvalidInputError
from ..runs.follow import read_metrics
from .html import render_html, svg, use_svg_backend
from .report import Section, load_sweep, provenance

LOSS_TERMS = ("loss", "loss_kd", "loss_ce", "loss_hidden", "loss_attention")
CHARTS = ("loss-curves", "memory-timeline", "throughput-histogram")


def _lines(run_dir: Path) -> tuple[list[dict], list[dict]]:
    lines = read_metrics(run_dir)
    train = [line for line in lines if line.get("kind") == "train"]
    evals = [line for line in lines if line.get("kind") == "eval"]
    return train, evals


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _summary(train: list[dict], evals: list[dict]) -> list[tuple]:
    speeds = [line["tokens_per_s"] for line in train if line.get("tokens_per_s")]
    memory = [line["memory_bytes"] for line in train if line.get("memory_bytes")]
    last = train[-1]
    rows = [
        ["steps", str(last["step"])],
        ["tokens", f"{last.get('tokens', 0):,}"],
        ["training time", f"{last.get('time_s', 0):.1f} s"],
        [
            "tokens/s (median, p10-p90)",
            f"{statistics.median(speeds):,.0f} ({_percentile(speeds, 0.1):,.0f}-"
            f"{_percentile(speeds, 0.9):,.0f})"
            if speeds
            else "-",
        ],
        ["peak memory", f"{max(memory) / 2**30:.2f} GiB" if memory else "-"],
        ["final train loss", f"{last['loss']:.4f}"],
    ]
    scored = [line for line in evals if line.get("step")]
    if scored:
        rows.append(["held-out ppl (last eval)", f"{scored[-1]['eval_ppl']:.3f}"])
        agreement = scored[-1].get("eval_top1_agreement")
        if agreement is not None:
            rows.append(["top-1 agreement", f"{agreement:.1%}"])
    return [("table", ["measure", "value"], rows)]


def _loss_chart(train: list[dict]) -> str:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 3.6))
    steps = [line["step"] for line in train]
    for term in LOSS_TERMS:
        values = [line.get(term) for line in train]
        if any(values):
            axes.plot(steps, [v if v is not None else float("nan") for v in values], label=term)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    return svg(figure)


def _memory_chart(train: list[dict]) -> str:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 3))
    points = [
        (line["step"], line["memory_bytes"] / 2**30) for line in train if line.get("memory_bytes")
    ]
    if points:
        axes.plot(*zip(*points, strict=True), color="#a44")
    axes.set_xlabel("step")
    axes.set_ylabel("memory (GiB)")
    axes.grid(alpha=0.3)
    return svg(figure)


def _throughput_chart(train: list[dict]) -> str:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 3))
    axes.hist([line["tokens_per_s"] for line in train if line.get("tokens_per_s")], bins=20)
    axes.set_xlabel("tokens/s per logged step")
    axes.set_ylabel("steps")
    return svg(figure)


def profile_report(target: str | Path, include: tuple[str, ...] = CHARTS) -> str:
    """The HTML profile of a one-job sweep directory (what `bench profile` ran)."""
    sweep, spec, _ = load_sweep(target)
    (job,) = spec.jobs()[:1] or [None]
    run_dir = sweep.job_dir(job) if job else None
    train, evals = _lines(run_dir) if run_dir else ([], [])
    if not train:
        raise InvalidInputError(
            f"{sweep.path} has no training metrics to profile", "check the job's console.log"
        )
    use_svg_backend()
    draw = {
        "loss-curves": ("Loss per term", _loss_chart),
        "memory-timeline": (
            "Memory per step (process RSS on CPU, allocated on CUDA)",
            _memory_chart,
        ),
        "throughput-histogram": ("Throughput per logged step", _throughput_chart),
    }
    charts = [("chart", draw[name][0], draw[name][1](train)) for name in include]
    facts = provenance(sweep, spec)
    machine = [("p", f"Hardware: {facts['hardware']}")] if facts.get("hardware") else []
    sections = [
        Section("Summary", [("p", f"Run directory: {run_dir}"), *_summary(train, evals)]),
        Section("Charts", charts or [("p", "No charts asked for.")]),
        Section(
            "Methodology",
            [*machine, ("p", "Base config and versions: see sweep.yaml and run.json.")],
        ),
    ]
    return render_html("Training profile", sections)
