"""`entrenar distill`: run, validate, init, estimate, export."""

from __future__ import annotations

import os
import signal
from typing import Annotated

import typer

from . import render
from .common import DebugOpt, JsonOpt, run

app = typer.Typer(help="Knowledge distillation: teacher -> student.", no_args_is_help=True)

ConfigOpt = Annotated[
    str, typer.Option("--config", "-c", help="distill.yaml, or a packaged example name (demo).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a field: --set training.max_steps=50 (repeatable)."),
]


class StopOnSignal:
    """First SIGINT/SIGTERM: finish the step, checkpoint, stop. Second SIGINT: stop now (the run
    marks itself stopped at its last checkpoint); later ones are ignored, so that bookkeeping
    is not cut short in turn. Before training starts (loading models and data, the first
    evaluation: minutes on a big teacher) there is no step to finish: the first signal stops
    at once."""

    def __init__(self) -> None:
        self.requested = False
        self.aborted = False
        # set by the run's "start" event; under torchrun every rank stops with the others at a
        # step (one rank leaving early would block the rest in a collective)
        self.training = int(os.environ.get("WORLD_SIZE", 1)) > 1

    def on_event(self, event: dict) -> None:
        if event.get("event") == "start":
            self.training = True

    def __enter__(self) -> StopOnSignal:
        self._old = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        return self

    def _handle(self, signum, frame) -> None:
        if self.aborted:
            return
        if not self.training or (self.requested and signum == signal.SIGINT):
            self.aborted = True
            raise KeyboardInterrupt
        self.requested = True
        render.err_line(
            "stopping: finishing this step and writing a checkpoint (Ctrl-C again to abort)"
        )

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


@app.command("run")
def run_cmd(
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="distill.yaml or a packaged example name (demo)."),
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Run directory (default: output.dir).")
    ] = None,
    overrides: SetOpt = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Continue the run in this directory.")
    ] = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Distil a student from a teacher; writes a run directory; resumable."""
    run_or_resume(config, output, overrides, resume, json_out, debug)


def parent_gone() -> bool:
    """A sweep job stops at a checkpoint when the worker that started it dies (so a job is
    never left training on its own while another worker retries it)."""
    import os

    from ..core.runs.launch import STOP_WITH_PARENT

    parent = os.environ.get(STOP_WITH_PARENT)
    return bool(parent) and parent.isdigit() and os.getppid() != int(parent)


def run_or_resume(config, output, overrides, resume, json_out: bool, debug: bool) -> None:
    """`distill run` and `tui --run`: one code path, so the headless twin is the same job."""
    import sys

    from ..core.distill.config import default_run_dir, load_config
    from ..core.errors import InvalidInputError
    from .progress import RunProgress

    def call():
        from ..core.distill.run import run_distillation

        if resume is None and config is None:
            raise InvalidInputError(
                "give --config F to start a run or --resume DIR to continue one",
                "try: entrenar distill run --config demo",
            )
        if resume is not None:
            _refuse_with_resume(resume, config, output)
        cfg = load_config(config, overrides) if resume is None else None
        target = resume or output or default_run_dir(config, cfg)
        with StopOnSignal() as stop, RunProgress(json_out) as progress:
            return run_distillation(
                cfg,
                target,
                resume=resume is not None,
                command=sys.argv,
                on_event=lambda event: (stop.on_event(event), progress.on_event(event)),
                should_stop=lambda: stop.requested or parent_gone(),
                overrides=overrides if resume is not None else None,
            )

    run(call, json_out=json_out, debug=debug, show=show_run, stream=True)


def _refuse_with_resume(resume: str, config: str | None, output: str | None) -> None:
    """A resume continues the run with its own config.yaml in its own folder."""
    from pathlib import Path

    from ..core.distill.resume import RESUMABLE
    from ..core.errors import InvalidInputError

    if config is not None:
        raise InvalidInputError(
            "--config cannot be used with --resume: the run continues with "
            f"{Path(resume) / 'config.yaml'}",
            f"change what a resume may change with --set ({', '.join(RESUMABLE)}); "
            "for anything else start a new run with --config F --output NEW_DIR",
        )
    if output is not None and Path(output).resolve() != Path(resume).resolve():
        raise InvalidInputError(
            "--output cannot be used with --resume: a resumed run stays in its folder",
            f"drop --output; the run continues in {resume}",
        )


def show_run(result) -> None:
    rows = [
        ("run directory", result.run_dir),
        ("state", result.state),
        ("steps", f"{result.step}/{result.total_steps}"),
        ("tokens", f"{result.tokens:,}"),
        ("time", f"{result.seconds:.1f} s"),
    ]
    if result.teacher_eval:
        rows.append(("teacher held-out ppl", f"{result.teacher_eval['eval_ppl']:.2f}"))
    if result.student_eval_before:
        rows.append(("student ppl before", f"{result.student_eval_before['eval_ppl']:.2f}"))
    if result.student_eval_after:
        rows.append(("student ppl after", f"{result.student_eval_after['eval_ppl']:.2f}"))
        rows.append(("top-1 agreement", f"{result.student_eval_after['eval_top1_agreement']:.1%}"))
    if result.final_dir:
        rows.append(("student", result.final_dir))
    render.show(render.kv_table("distillation", rows))
    for sample in (result.student_eval_after or {}).get("samples", []):
        render.line(f"sample: {sample['prompt']!r} -> {sample['completion']!r}")


@app.command()
def validate(
    config: ConfigOpt, overrides: SetOpt = None, json_out: JsonOpt = False, debug: DebugOpt = False
) -> None:
    """Check a config: every problem at once, with its field path and a fix. Exit 2 if any."""
    from ..core.distill.validate import validate_config

    report = run(
        lambda: validate_config(config, overrides),
        json_out=json_out,
        debug=debug,
        show=show_validate,
    )
    if not report.ok:
        raise typer.Exit(2)


def show_validate(r) -> None:
    for p in r.problems:
        value = (
            f" (got {p.value!r})" if p.value is not None and not isinstance(p.value, dict) else ""
        )
        render.line(
            f"{p.severity}: {p.path}: {p.message}{value}" + (f"; hint: {p.hint}" if p.hint else "")
        )
    render.line(f"{'ok' if r.ok else 'invalid'}: {r.config_path} ({len(r.problems)} problem(s))")


@app.command()
def init(
    teacher: Annotated[
        str, typer.Option("--teacher", help="Teacher model reference.")
    ] = "smollm2-135m",
    output: Annotated[str, typer.Option("--output", "-o")] = "distill.yaml",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    student_layers: Annotated[
        int | None,
        typer.Option(
            "--student-layers",
            min=1,
            help="Keep N teacher layers, chosen by measurement (block influence vs greedy).",
        ),
    ] = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write a commented starter config."""
    from ..core.distill.starter import write_starter

    def call() -> dict:
        path, choice = write_starter(output, teacher, force, student_layers)
        return {"written": str(path), "layers": choice.to_dict() if choice else None}

    def show(result: dict) -> None:
        if result["layers"]:
            for name, candidate in result["layers"]["candidates"].items():
                render.line(
                    f"{name}: layers {candidate['layers']}, held-out loss"
                    f" {candidate['heldout_loss']:.3f}"
                )
            render.line(f"kept {result['layers']['layers']} ({result['layers']['method']} wins)")
        render.line(f"wrote {result['written']}")

    run(call, json_out=json_out, debug=debug, show=show)


@app.command()
def export(
    input_path: Annotated[
        str,
        typer.Option(
            "--input", "-i", help="Run directory, its final/ or a checkpoints/step-N folder."
        ),
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help="safetensors | gguf | pth | apr")],
    output: Annotated[str, typer.Option("--output", "-o")],
    quantize: Annotated[
        str | None, typer.Option("--quantize", "-q", help="f32|f16|bf16; q8_0|q4_0 for gguf.")
    ] = None,
    adapter: Annotated[
        bool,
        typer.Option("--adapter", help="LoRA students: export the adapter instead of merging it."),
    ] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Export the student through the inspect converters (verified after writing)."""
    from ..core.distill.export import export_run

    run(
        lambda: export_run(input_path, fmt, output, quantize, merge=not adapter),
        json_out=json_out,
        debug=debug,
        show=show_export,
    )


def show_export(result) -> None:
    rows = [
        ("exported", result.source),
        ("format", result.format + (f" ({result.quantize})" if result.quantize else "")),
        ("output", result.output),
        ("adapter merged", result.merged_adapter),
    ]
    if result.conversion:
        rows += [
            ("tensors", result.conversion.get("tensors")),
            ("size", render.human_bytes(result.conversion.get("file_size_bytes"))),
            ("verified", result.conversion.get("verified")),
        ]
    render.show(render.kv_table("distill export", rows))


@app.command()
def estimate(
    teacher: Annotated[
        str | None, typer.Option("--teacher", help="Teacher model (or take it from --config).")
    ] = None,
    student: Annotated[
        str | None,
        typer.Option("--student", help="Student model (default: every third teacher layer)."),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            "-b",
            min=1,
            help="Micro-batch per step (training.batch_size).",
            show_default="4, or the config's",
        ),
    ] = None,
    sequence_length: Annotated[
        int | None,
        typer.Option(
            "--sequence-length",
            "-s",
            min=8,
            help="Tokens per sample (dataset.max_length).",
            show_default="128, or the config's",
        ),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="Start from this config.")
    ] = None,
    steps: Annotated[
        int, typer.Option("--steps", min=0, help="Real steps to time (0: memory only).")
    ] = 2,
    overrides: SetOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Memory (teacher inference + student training) and time per step, measured here."""
    from ..core.distill.estimate import estimate_config, estimate_distillation

    def call():
        cfg = estimate_config(
            teacher, student, batch_size, sequence_length, config, overrides or []
        )
        return estimate_distillation(cfg, steps)

    run(call, json_out=json_out, debug=debug, show=show_estimate)


def show_estimate(result) -> None:
    total = result.total_bytes or 1
    rows = [
        [k, render.human_bytes(v), f"{100 * v / total:.1f}%"]
        for k, v in result.breakdown.items()
        if v
    ]
    rows.append(["total", render.human_bytes(result.total_bytes), "100%"])
    render.show(
        render.table(
            f"distillation memory ({result.device}): {result.teacher} -> {result.student}",
            ["term", "bytes", "share"],
            rows,
            right={1, 2},
        )
    )
    render.line(
        f"teacher {result.teacher_parameters:,} parameters; student {result.student_parameters:,}; batch {result.batch_size} x {result.sequence_length} tokens"
    )
    if result.seconds_per_step:
        eta = (
            f"; {result.total_steps} steps take about {result.estimated_seconds / 60:.1f} min"
            if result.estimated_seconds
            else ""
        )
        render.line(
            f"measured: {result.seconds_per_step:.2f} s/step, {result.tokens_per_second:,.0f} tokens/s{eta}"
        )
    for note in result.notes:
        render.line(f"note: {note}")
