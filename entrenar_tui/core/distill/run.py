"""`distill run`: a run directory around the trainer's loop: start or resume, log, evaluate,
checkpoint, stop cleanly on request, save the final student."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import EntrenarError, InvalidInputError
from ..runs.follow import LAUNCH_FILES
from .checkpoint import load_checkpoint, save_checkpoint, save_final
from .config import DistillConfig
from .data import check_batch_fits
from .evaluate import evaluate, greedy_samples
from .resume import ResumePlan, checkpoint_step, plan_resume, resumed_config, schedule_note
from .rundir import FollowerRunDir, RunDir, utc_now
from .trainer import Event, Progress, RunResult, Setup, _unwrap, build, train_step

EXIT_INTERRUPTED = 130


class RunInterrupted(EntrenarError):
    """A second Ctrl-C: the step in flight is abandoned; the run stops at its last checkpoint."""

    exit_code = EXIT_INTERRUPTED


def peak_memory_bytes(device: str) -> int:
    """Peak memory since the last call: CUDA's allocator peak (then reset), or on CPU the
    process's resident high-water mark (VmHWM; monotone, it includes model loading)."""
    if device.startswith("cuda"):
        peak = int(torch.cuda.max_memory_allocated())
        torch.cuda.reset_peak_memory_stats()
        return peak
    try:
        with open("/proc/self/status", encoding="ascii") as status_file:
            for line in status_file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ------------------------------------------------------------------------------ evaluation


def _eval_record(setup: Setup, step: int, with_samples: bool) -> dict:
    training = setup.config.training
    result = evaluate(
        _unwrap(setup.student),
        setup.eval_blocks,
        training.batch_size,
        setup.device,
        teacher=setup.teacher,
    )
    record = {
        "kind": "eval",
        "step": step,
        "eval_loss": result.eval_loss,
        "eval_ppl": result.eval_ppl,
        "eval_top1_agreement": result.eval_top1_agreement,
        "teacher_eval_loss": result.teacher_loss,
        "teacher_eval_ppl": math.exp(min(result.teacher_loss, 50.0)),
        "samples": [],
    }
    if with_samples:
        record["samples"] = greedy_samples(_unwrap(setup.student), setup.tokenizer, setup.device)
    return record


# ------------------------------------------------------------------------------ the run


def _prepare(
    config: DistillConfig | None,
    run_dir: Path,
    resume: bool,
    command: list[str],
    overrides: list[str],
) -> tuple[DistillConfig, RunDir, ResumePlan | None]:
    leader = int(os.environ.get("RANK", 0)) == 0
    run = RunDir(run_dir) if leader else FollowerRunDir(run_dir)
    if resume and not leader:  # rank 0 checks and records the resume
        return resumed_config(run, overrides), run, None
    if resume:
        plan = plan_resume(run, overrides)
        entry = {"at": utc_now(), **plan.record(), "command": command}
        run.record_resume(plan.config.model_dump(mode="json"), plan.config.config_hash(), entry)
        return plan.config, run, plan
    # The launcher (core/runs/launch.py) writes launch.json and console.log before the run starts.
    if leader and run_dir.exists() and any(p.name not in LAUNCH_FILES for p in run_dir.iterdir()):
        raise InvalidInputError(
            f"output directory {run_dir} already exists and is not empty",
            f"use --resume {run_dir} to continue it, or another --output",
        )
    run.start(config.model_dump(mode="json"), config.config_hash(), command)
    return config, run, None


def _resolve_layers(config: DistillConfig):
    """`init_from_teacher: {count: N}`: the layers chosen by measurement (layers.py), written
    into the config the run records, so a resume and an export rebuild the same student."""
    init = config.student.init_from_teacher
    if init is None or init.layers is not None:
        return config, None
    from .layers import choose_for_config

    choice = choose_for_config(config, init.count, init.select)
    chosen = init.model_copy(update={"layers": choice.layers, "count": None})
    student = config.student.model_copy(update={"init_from_teacher": chosen})
    return config.model_copy(update={"student": student}), choice


def run_distillation(
    config: DistillConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    command: list[str] | None = None,
    on_event: Event | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    overrides: list[str] | None = None,
) -> RunResult:
    """Start (config given) or resume (resume=True, with `overrides` of the fields a resume may
    change) a run in `run_dir`; returns when it ends."""
    follower = int(os.environ.get("RANK", 0)) != 0
    emit = on_event if on_event is not None and not follower else (lambda e: None)
    run_dir = Path(run_dir)
    choice = None
    if config is not None:  # settings this device cannot run: refused before the run exists
        from .modeling import pick_device
        from .trainer import check_device

        check_device(config, pick_device(config.device))
        config, choice = _resolve_layers(config)
    config, run, plan = _prepare(config, run_dir, resume, command or [], overrides or [])
    if choice is not None:
        run.log(choice.summary())
        emit({"event": "note", "message": choice.summary()})
    started = time.perf_counter()
    previous = run.status() if resume else {}
    run.write_status(
        "running", plan.from_step if plan else 0, int(previous.get("total_steps") or 0)
    )
    try:
        _note_resume(plan, run, emit)
        setup = build(config)
        check_batch_fits(
            len(setup.train_blocks), config.training.batch_size, config.dataset.max_length
        )
        result = _loop(setup, run, resume, emit, should_stop, started)
        if setup.world_size > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
    except EntrenarError as exc:
        _mark_failed(run, exc.message, exc.hint)
        emit({"event": "end", "state": "failed", "error": exc.to_dict()})
        raise
    except Exception as exc:
        _mark_failed(run, f"{type(exc).__name__}: {exc}", "see events.log; rerun with --debug")
        raise
    except KeyboardInterrupt:
        raise _mark_interrupted(run, emit) from None
    return result


def _note_resume(plan: ResumePlan | None, run: RunDir, emit: Event) -> None:
    notes = [schedule_note(plan)] if plan else []
    if plan and plan.changes:
        changed = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in plan.changes.items())
        notes.insert(0, f"resumed with {changed} (recorded in run.json)")
    for message in filter(None, notes):
        run.log(message)
        emit({"event": "note", "message": message})


def _mark_interrupted(run: RunDir, emit: Event) -> RunInterrupted:
    """The step in flight is lost: the run stands at its last checkpoint, which a resume
    continues from, so status.json says `stopped` at that step."""
    checkpoint = run.latest_checkpoint()
    step = checkpoint_step(checkpoint)
    run.write_status("stopped", step, int(run.status().get("total_steps") or 0))
    if checkpoint is not None:
        message = f"interrupted: the run stops at its last checkpoint, {checkpoint} (step {step})"
        hint = f"continue it with: entrenar distill run --resume {run.path}"
    else:
        message = "interrupted before the first checkpoint: no training step was kept"
        hint = f"entrenar distill run --resume {run.path} starts it again from step 0"
    run.log(message)
    error = RunInterrupted(message, hint)
    emit({"event": "end", "state": "stopped", "step": step, "error": error.to_dict()})
    return error


def _mark_failed(run: RunDir, message: str, hint: str) -> None:
    status = run.status()
    run.write_status(
        "failed",
        status.get("step", 0),
        status.get("total_steps", 0),
        {"message": message, "hint": hint},
    )
    run.log(f"failed: {message}")


def _start_or_resume(
    setup: Setup, run: RunDir, resume: bool, emit: Event
) -> tuple[Progress, Path | None, dict]:
    checkpoint = run.latest_checkpoint() if resume else None
    if checkpoint is not None:
        progress = load_checkpoint(setup, checkpoint)
        run.truncate_metrics_after(progress.step)
        run.log(f"resumed from {checkpoint.name}")
        emit({"event": "resume", "step": progress.step, "checkpoint": str(checkpoint)})
        return progress, checkpoint, _baseline_from_metrics(run)
    if resume:  # killed before its first checkpoint: start again, as if new
        run.truncate_metrics_after(-1)
        message = f"no checkpoint in {run.path}: restarting from step 0"
        run.log(message)
        emit({"event": "note", "message": message})
    if not setup.eval_blocks:
        message = (
            "no held-out blocks (dataset.eval_fraction is 0, or the dataset is tiny): no evaluation"
        )
        run.log(message)
        emit({"event": "note", "message": message})
        return Progress(), None, {}
    before = _eval_record(setup, 0, with_samples=False)  # one teacher pass: agreement and its ppl
    teacher = {"eval_loss": before["teacher_eval_loss"], "eval_ppl": before["teacher_eval_ppl"]}
    baseline = {"teacher": teacher, "student_before": before}
    run.append_metrics(before)
    emit(
        {
            "event": "baseline",
            "teacher_ppl": baseline["teacher"]["eval_ppl"],
            "student_ppl": baseline["student_before"]["eval_ppl"],
        }
    )
    return Progress(), None, baseline


def _baseline_from_metrics(run: RunDir) -> dict:
    """The step-0 evaluation a resumed run already wrote, so its summary still shows it."""
    for record in run.metric_records():
        if record.get("kind") == "eval" and record.get("step") == 0:
            teacher = {
                "eval_loss": record.get("teacher_eval_loss"),
                "eval_ppl": record.get("teacher_eval_ppl"),
            }
            return {"teacher": teacher, "student_before": record}
    return {}


def _loop(
    setup: Setup, run: RunDir, resume: bool, emit: Event, should_stop, started: float
) -> RunResult:
    training, out = setup.config.training, setup.config.output
    leader = setup.rank == 0
    progress, last_ckpt, baseline = _start_or_resume(setup, run, resume, emit)
    emit(
        {
            "event": "start",
            "total_steps": setup.total_steps,
            "step": progress.step,
            "run_dir": str(run.path),
        }
    )
    run.write_status("running", progress.step, setup.total_steps)
    clock = time.perf_counter()
    setup.student.train()
    cache_noted, last_eval = False, {}
    while progress.step < setup.total_steps:
        tokens_before, step_start = progress.tokens, time.perf_counter()
        # the ranks agree inside the step (one all-reduce) on its losses and on stopping
        terms = train_step(setup, progress, last_ckpt, should_stop)
        stopping = terms.pop("stop")
        cache_measured = setup.cache_coverage is not None or setup.cache_head_error is not None
        if leader and cache_measured and not cache_noted:
            cache_noted = True
            _note_cache_coverage(setup, run, emit)
        progress.last_loss = terms["loss"]
        progress.first_loss = (
            progress.first_loss if progress.first_loss is not None else terms["loss"]
        )
        now = time.perf_counter()
        if leader and (
            progress.step % training.log_every == 0 or progress.step == setup.total_steps
        ):
            record = {
                "kind": "train",
                "step": progress.step,
                "epoch": progress.micro
                * setup.config.training.batch_size
                * setup.world_size
                / max(1, len(setup.train_blocks)),
                "time_s": progress.elapsed + now - clock,
                "tokens": progress.tokens,
                **terms,
                "tokens_per_s": (progress.tokens - tokens_before) / max(now - step_start, 1e-9),
                "memory_bytes": peak_memory_bytes(setup.device),
            }
            run.append_metrics(record)
            run.write_status("running", progress.step, setup.total_steps)
            emit({"event": "train", **record})
        # evaluate before checkpointing, so a step's eval line comes before its checkpoint;
        # the last step's evaluation is the run's final one (_finish reuses it)
        periodic = training.eval_every and progress.step % training.eval_every == 0
        if leader and setup.eval_blocks and (periodic or progress.step == setup.total_steps):
            last_eval = _eval_record(setup, progress.step, with_samples=True)
            run.append_metrics(last_eval)
            emit({"event": "eval", **last_eval})
        if leader and (
            (out.checkpoint_every and progress.step % out.checkpoint_every == 0) or stopping
        ):
            progress.elapsed += time.perf_counter() - clock
            clock = time.perf_counter()
            last_ckpt = save_checkpoint(setup, progress, run)
            emit({"event": "checkpoint", "step": progress.step, "path": str(last_ckpt)})
        if stopping:
            run.write_status("stopped", progress.step, setup.total_steps)
            run.log(f"stopped at step {progress.step} on request")
            emit({"event": "end", "state": "stopped", "step": progress.step})
            return RunResult(
                str(run.path),
                "stopped",
                progress.step,
                setup.total_steps,
                None,
                time.perf_counter() - started,
                progress.tokens,
                progress.first_loss,
                progress.last_loss,
            )
    return _finish(setup, run, progress, baseline, emit, started, last_eval)


FINAL_SUFFIXES = {"gguf": ".gguf", "pth": ".pth", "apr": ".apr"}


def _export_final(setup: Setup, run: RunDir, emit: Event) -> None:
    """`output.format`: the final student also as `final.<format>`, through `distill export`
    (a LoRA student is merged into its base). safetensors is final/ itself."""
    fmt = setup.config.output.format
    if fmt == "safetensors":
        return
    from .export import export_run

    target = run.path / f"final{FINAL_SUFFIXES[fmt]}"
    try:
        export_run(run.path, fmt, target)
    except EntrenarError as exc:
        raise InvalidInputError(
            f"final/ was saved, but exporting it as {fmt} (output.format) failed: {exc.message}",
            exc.hint,
        ) from exc
    run.log(f"exported the final student as {fmt}: {target}")
    emit({"event": "note", "message": f"final student exported as {fmt}: {target}"})


def _note_cache_coverage(setup: Setup, run: RunDir, emit: Event) -> None:
    """Say how lossy the teacher cache is: a flat teacher (high T) keeps little in its top k;
    the hidden-state cache is exact up to the head's rounding, and says by how much."""
    distillation = setup.config.distillation
    if setup.cache_head_error is not None:
        message = (
            "teacher cache: exact (the output head's input is kept and the logits recomputed; "
            f"they differ from the forward's by at most {setup.cache_head_error:.2g})"
        )
    else:
        message = (
            f"teacher cache: the top {distillation.teacher_cache.top_k} tokens hold "
            f"{setup.cache_coverage:.1%} of the teacher's probability at "
            f"T={distillation.temperature:g}; the rest is kept as an even tail"
        )
        if setup.cache_coverage < 0.5:
            message += " (under half: the cached target differs from the teacher's; raise top_k or lower T)"
    run.log(message)
    emit({"event": "note", "message": message})


def _finish(
    setup: Setup,
    run: RunDir,
    progress: Progress,
    baseline: dict,
    emit: Event,
    started: float,
    last_eval: dict | None = None,
) -> RunResult:
    final_eval = last_eval if last_eval and last_eval["step"] == progress.step else {}
    if not final_eval and setup.rank == 0 and setup.eval_blocks:  # resumed at the last step
        final_eval = _eval_record(setup, progress.step, with_samples=True)
        run.append_metrics(final_eval)
        emit({"event": "eval", **final_eval})
    if setup.teacher_store is not None:
        store = setup.teacher_store
        run.log(
            f"teacher targets: {store.read} blocks read from {store.path}, {store.written} written"
        )
    if setup.rank == 0:
        save_final(setup, run)
        _export_final(setup, run, emit)
        run.write_status("finished", progress.step, setup.total_steps)
        ppl = f", final eval ppl {final_eval['eval_ppl']:.2f}" if final_eval else ""
        run.log(f"finished: {progress.step} steps{ppl}")
    result = RunResult(
        str(run.path),
        "finished",
        progress.step,
        setup.total_steps,
        str(run.final),
        time.perf_counter() - started,
        progress.tokens,
        progress.first_loss,
        progress.last_loss,
        teacher_eval=baseline.get("teacher"),
        student_eval_before=baseline.get("student_before"),
        student_eval_after=final_eval or None,
    )
    emit({"event": "end", "state": "finished", **result.to_dict()})
    return result
