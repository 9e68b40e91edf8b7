"""`entrenar bench`: temperature, compare, ablation and report over distillation sweeps."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from ..core.errors import EntrenarError
from . import render
from .common import DebugOpt, JsonOpt, run

app = typer.Typer(help="Benchmark sweeps with honest statistics.", no_args_is_help=True)

ConfigOpt = Annotated[
    str, typer.Option("--config", "-c", help="Base distill.yaml, or a packaged example (demo).")
]
BaseConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Base distill.yaml or a packaged example (demo)."),
]
TeacherOpt = Annotated[
    str | None, typer.Option("--teacher", help="Teacher model (overrides the config's).")
]
StudentOpt = Annotated[
    str | None,
    typer.Option("--student", help="Student model (default: every third teacher layer)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a base config field: --set training.max_steps=50."),
]
SeedsOpt = Annotated[
    int, typer.Option("--seeds", "--runs", help="Seeds per setting (3+ for statistics).")
]
WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers",
        help="Jobs run at once (on CUDA: one GPU each); 0 with --storage: only enqueue.",
    ),
]
ShareOpt = Annotated[
    bool,
    typer.Option(
        "--share-teacher/--no-share-teacher",
        help="Jobs needing only the teacher's logits share its exact cached outputs (computed once).",
    ),
]
HeartbeatOpt = Annotated[
    int,
    typer.Option(
        "--heartbeat", help="Seconds between a worker's heartbeats; silent 3x this = presumed dead."
    ),
]
StorageOpt = Annotated[
    str | None, typer.Option("--storage", help="Optuna storage URL shared by many machines.")
]
StudyOpt = Annotated[str | None, typer.Option("--study", help="Optuna study name.")]
SweepDirOpt = Annotated[
    str | None,
    typer.Option("--sweep-dir", help="Sweep directory (default runs/sweeps/COMMAND-TIME)."),
]
OutputOpt = Annotated[
    str | None,
    typer.Option("--output", "-o", help="Also write the results here (.csv, .md or .html)."),
]
MetricOpt = Annotated[
    str, typer.Option("--metric", help="What settings are compared on (lower ppl is better).")
]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Training steps per job.")]
EpochsOpt = Annotated[
    int | None, typer.Option("--epochs", help="Epochs per job (clears training.max_steps).")
]


class SweepInterrupted(EntrenarError):
    exit_code = 130


def _overrides(overrides: list[str] | None, steps: int | None, epochs: int | None) -> list[str]:
    extra = list(overrides or [])
    if epochs is not None:
        extra += [f"training.epochs={epochs}", "training.max_steps=null"]
    if steps is not None:
        extra.append(f"training.max_steps={steps}")
    return extra


def _sweep(command: str, build, options: dict) -> None:
    """Build the spec, run it with progress on stderr (or events on stdout), analyse it."""
    json_out = options["json_out"]

    def call():
        from ..core.bench.analysis import analyze
        from ..core.bench.executor import LocalExecutor
        from ..core.bench.sweep import run_sweep
        from ..core.bench.sweepdir import METRICS, default_sweep_dir
        from ..core.errors import InvalidInputError

        if options["metric"] not in METRICS:
            raise InvalidInputError(
                f"unknown metric {options['metric']!r}", f"choose from {', '.join(METRICS)}"
            )
        if bool(options["storage"]) != bool(options["study"]):
            raise InvalidInputError(
                "--storage and --study go together",
                "pass both, e.g. --storage sqlite:///sweeps.db --study temperature-demo",
            )
        spec = build()
        spec.metric = options["metric"]
        if options["share_teacher"]:
            spec.share_teacher_targets()
        target = options["sweep_dir"] or default_sweep_dir(command)
        from .bench_progress import SweepProgress

        executor = LocalExecutor(workers=options["workers"])
        if options["storage"]:
            from ..core.bench.distributed import StudyExecutor

            executor = StudyExecutor(
                options["storage"], options["study"], options["workers"], options["heartbeat"]
            )
        try:
            with SweepProgress(json_out) as progress:
                outcome = run_sweep(spec, target, executor=executor, emit=progress.on_event)
        except KeyboardInterrupt:
            raise SweepInterrupted(
                f"interrupted: every running job stopped at its last checkpoint in {target}",
                "run the same command again (with --sweep-dir "
                f"{target}) to continue: finished jobs are skipped, stopped ones resume",
            ) from None
        analysis = analyze(outcome.spec, outcome.results, options["metric"])
        if options["output"]:
            _write_output(options["output"], outcome.path, analysis)
        if json_out:
            render.emit_json({"event": "result", **outcome.to_dict(), **analysis.to_dict()})
        return outcome, analysis

    from .bench_render import show_sweep

    run(call, json_out=json_out, debug=options["debug"], show=show_sweep, stream=True)


def render_report(target, report_format: str, metric: str | None) -> str:
    from ..core.errors import InvalidInputError

    if report_format == "md":
        from ..core.bench.report import markdown_report

        return markdown_report(target, metric)
    if report_format == "html":
        from ..core.bench.html import html_report

        return html_report(target, metric)
    raise InvalidInputError(f"--format {report_format}: unknown", "use --format md or html")


def _write_output(output: str, sweep_dir: Path, analysis) -> None:
    from ..core.bench.export import write_csv
    from ..core.errors import InvalidInputError
    from ..core.fsutil import write_text_atomic

    path = Path(output)
    if path.suffix == ".csv":
        write_csv(path, sweep_dir)
    elif path.suffix in (".md", ".html"):
        write_text_atomic(path, render_report(sweep_dir, path.suffix[1:], analysis.metric))
    else:
        raise InvalidInputError(
            f"--output {output}: unknown kind of file", "use a .csv, .md or .html file name"
        )


# What every sweep command takes, added to each one's own options by `sweep_command`.
SWEEP_OPTIONS = {
    "seeds": (SeedsOpt, 3),
    "steps": (StepsOpt, None),
    "epochs": (EpochsOpt, None),
    "overrides": (SetOpt, None),
    "workers": (WorkersOpt, 1),
    "storage": (StorageOpt, None),
    "study": (StudyOpt, None),
    "heartbeat": (HeartbeatOpt, 30),
    "share_teacher": (ShareOpt, True),
    "sweep_dir": (SweepDirOpt, None),
    "output": (OutputOpt, None),
    "metric": (MetricOpt, "eval_ppl"),
    "json_out": (JsonOpt, False),
    "debug": (DebugOpt, False),
}


def sweep_command(name: str):
    """Register `build(own options..., overrides=, seeds=) -> SweepSpec` as `bench NAME` with
    the shared sweep options appended to its signature (Typer reads `__signature__`)."""

    def register(build):
        own = [
            param
            for param in inspect.signature(build, eval_str=True).parameters.values()
            if param.name not in ("overrides", "seeds")
        ]
        shared = [
            inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=value)
            for key, (kind, value) in SWEEP_OPTIONS.items()
        ]

        def command(**values) -> None:
            options = {key: values.pop(key) for key in SWEEP_OPTIONS}
            overrides = _overrides(options["overrides"], options["steps"], options["epochs"])
            spec = lambda: build(**values, overrides=overrides, seeds=options["seeds"])  # noqa: E731
            _sweep(name, spec, options)

        command.__signature__ = inspect.Signature([*own, *shared])
        command.__doc__, command.__name__ = build.__doc__, build.__name__
        app.command(name)(command)
        return build

    return register


@sweep_command("temperature")
def temperature(
    config: BaseConfigOpt = None,
    teacher: TeacherOpt = None,
    student: StudentOpt = None,
    value_range: Annotated[
        str, typer.Option("--range", help="Temperatures low..high, both included.")
    ] = "1.0..8.0",
    step: Annotated[float, typer.Option("--step", help="Spacing of the temperatures.")] = 0.5,
    baseline: Annotated[
        float | None,
        typer.Option(
            "--baseline", help="Temperature the others are tested against (default: low)."
        ),
    ] = None,
    *,
    overrides: list[str],
    seeds: int,
):
    """Sweep distillation.temperature; mark the best and test it against the baseline."""
    from ..core.bench.overlays import parse_range
    from ..core.bench.sweep import BaseRef, temperature_spec

    values = parse_range(value_range, step)
    return temperature_spec(BaseRef(config, teacher, student), overrides, values, seeds, baseline)


@sweep_command("compare")
def compare(
    config: BaseConfigOpt = None,
    teacher: TeacherOpt = None,
    student: StudentOpt = None,
    strategies: Annotated[
        str,
        typer.Option(
            "--strategies", help="Comma-separated: kd-only,progressive,attention,combined."
        ),
    ] = "kd-only,progressive,attention,combined",
    *,
    overrides: list[str],
    seeds: int,
):
    """Compare distillation strategies (ce-only is always added as the baseline)."""
    from ..core.bench.sweep import BaseRef, strategy_spec

    names = [name.strip() for name in strategies.split(",") if name.strip()]
    return strategy_spec(BaseRef(config, teacher, student), overrides, names, seeds)


@sweep_command("ablation")
def ablation(
    base_config: Annotated[
        str, typer.Option("--base-config", "--config", "-c", help="The config ablated from.")
    ],
    ablate: Annotated[
        str, typer.Option("--ablate", help='Factors: "progressive.enabled,temperature,alpha".')
    ],
    values: Annotated[
        list[str] | None,
        typer.Option("--values", help='Values for a factor: --values "temperature=1,4".'),
    ] = None,
    *,
    overrides: list[str],
    seeds: int,
):
    """Change one factor at a time against the base config (booleans flipped, numbers halved
    and doubled within the field's bounds)."""
    from ..core.bench.overlays import parse_values
    from ..core.bench.sweep import ablation_spec

    factors = [name.strip() for name in ablate.split(",") if name.strip()]
    return ablation_spec(base_config, overrides, factors, parse_values(values or []), seeds)


@app.command("report")
def report(
    target: Annotated[str, typer.Argument(help="A sweep directory or its results.jsonl.")],
    report_format: Annotated[
        str, typer.Option("--format", help="md, or html (static SVG charts, works offline).")
    ] = "md",
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write here (default SWEEP/report.md).")
    ] = None,
    metric: MetricOpt = "eval_ppl",
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write the sweep up: Summary, Methodology, Results, Statistical Analysis, Recommendations."""

    def call():
        from ..core.bench.report import load_sweep
        from ..core.fsutil import write_text_atomic

        sweep, _, _ = load_sweep(target)
        text = render_report(target, report_format, metric)
        path = Path(output) if output else sweep.path / f"report.{report_format}"
        write_text_atomic(path, text)
        return {"report": str(path), "format": report_format, "text": text}

    def show(result: dict) -> None:
        if result["format"] == "md":
            render.line(result["text"])
        render.err_line(f"written: {result['report']}")

    run(call, json_out=json_out, debug=debug, show=show)


@app.command("profile")
def profile(
    config: ConfigOpt,
    output: Annotated[str, typer.Option("--output", "-o", help="The HTML report to write.")],
    loss_curves: Annotated[
        bool, typer.Option("--include-loss-curves", help="Loss per term over the steps.")
    ] = False,
    memory_timeline: Annotated[
        bool, typer.Option("--include-memory-timeline", help="Memory at each logged step.")
    ] = False,
    throughput_histogram: Annotated[
        bool, typer.Option("--include-throughput-histogram", help="Tokens/s distribution.")
    ] = False,
    steps: StepsOpt = None,
    epochs: EpochsOpt = None,
    overrides: SetOpt = None,
    sweep_dir: SweepDirOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train one run and write its profile: throughput, memory, loss per term (all three
    charts unless some --include-... flags pick them)."""

    def call():
        from ..core.bench.executor import LocalExecutor
        from ..core.bench.profile import CHARTS, profile_report
        from ..core.bench.sweep import profile_spec, run_sweep
        from ..core.bench.sweepdir import default_sweep_dir
        from ..core.fsutil import write_text_atomic
        from .bench_progress import SweepProgress

        picked = [loss_curves, memory_timeline, throughput_histogram]
        include = tuple(name for name, on in zip(CHARTS, picked, strict=True) if on) or CHARTS
        spec = profile_spec(config, _overrides(overrides, steps, epochs))
        target = sweep_dir or default_sweep_dir("profile")
        with SweepProgress(json_out) as progress:
            outcome = run_sweep(spec, target, executor=LocalExecutor(), emit=progress.on_event)
        write_text_atomic(output, profile_report(outcome.path, include))
        result = {"report": output, "sweep_dir": str(outcome.path), "charts": list(include)}
        if json_out:
            render.emit_json({"event": "result", **result})
        return result

    def show(result: dict) -> None:
        render.line(f"profile written: {result['report']} ({', '.join(result['charts'])})")

    run(call, json_out=json_out, debug=debug, show=show, stream=True)


@app.command("worker")
def worker(
    storage: Annotated[str, typer.Option("--storage", help="The sweep's Optuna storage URL.")],
    study: Annotated[str, typer.Option("--study", help="The sweep's study name.")],
    workers: Annotated[int, typer.Option("--workers", help="Jobs this machine runs at once.")] = 1,
    heartbeat: HeartbeatOpt = 30,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Take a sweep's jobs from its Optuna storage until none is left (run it on every machine
    that sees the sweep directory at the same path)."""

    def call():
        from ..core.bench.distributed import worker_main
        from .bench_progress import SweepProgress

        with SweepProgress(json_out) as progress:
            result = worker_main(storage, study, workers, heartbeat, progress.on_event)
        if json_out:
            render.emit_json({"event": "result", **result})
        return result

    def show(result: dict) -> None:
        render.line(f"worker done: {result['trials']} trials of study {result['study']}")

    run(call, json_out=json_out, debug=debug, show=show, stream=True)
