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
from .config import DistillConfig, parse_config
from .evaluate import evaluate, greedy_samples
from .rundir import FollowerRunDir, RunDir
from .trainer import Event, Progress, RunResult, Setup, _unwrap, build, train_step


def peak_memory_bytes(device: str) -> int:
    """Peak memory since the last call: CUDA's allocator peak (then reset), or on CPU the
    process's resident high-water mark (VmHWM; monotone, it includes model loading)."""
    if device.startswith("cuda"):
        peak = int(torch.cuda.max_memory_allocated())
        torch.cuda.reset_peak_memory_stats()
        return peak
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ------------------------------------------------------------------------------ evaluation


def _eval_record(s: Setup, step: int, with_samples: bool) -> dict:
    t = s.config.training
    result = evaluate(_unwrap(s.student), s.eval_blocks, t.batch_size, s.device, teacher=s.teacher)
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
        record["samples"] = greedy_samples(_unwrap(s.student), s.tokenizer, s.device)
    return record


# ------------------------------------------------------------------------------ the run


def _prepare(
    config: DistillConfig | None, run_dir: Path, resume: bool, command: list[str]
) -> tuple[DistillConfig, RunDir]:
    leader = int(os.environ.get("RANK", 0)) == 0
    run = RunDir(run_dir) if leader else FollowerRunDir(run_dir)
    if resume:
        config, problems = parse_config(run.read_config())
        if problems:
            raise InvalidInputError(
                f"{run_dir}/config.yaml no longer validates: {problems[0].path}: {problems[0].message}",
                "fix the file or start a new run",
            )
        return config, run
    # The launcher (core/runs/launch.py) writes launch.json and console.log before the run starts.
    if leader and run_dir.exists() and any(p.name not in LAUNCH_FILES for p in run_dir.iterdir()):
        raise InvalidInputError(
            f"output directory {run_dir} already exists and is not empty",
            f"use --resume {run_dir} to continue it, or another --output",
        )
    run.start(config.model_dump(mode="json"), config.config_hash(), command)
    return config, run


def run_distillation(
    config: DistillConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    command: list[str] | None = None,
    on_event: Event | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RunResult:
    """Start (config given) or resume (resume=True) a run in `run_dir`; returns when it ends."""
    follower = int(os.environ.get("RANK", 0)) != 0
    emit = on_event if on_event is not None and not follower else (lambda e: None)
    run_dir = Path(run_dir)
    config, run = _prepare(config, run_dir, resume, command or [])
    started = time.perf_counter()
    run.write_status("running", 0, 0)
    try:
        s = build(config)
        result = _loop(s, run, resume, emit, should_stop, started)
        if s.world_size > 1:
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
    return result


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
    s: Setup, run: RunDir, resume: bool, emit: Event
) -> tuple[Progress, Path | None, dict]:
    checkpoint = run.latest_checkpoint() if resume else None
    if checkpoint is not None:
        p = load_checkpoint(s, checkpoint)
        run.truncate_metrics_after(p.step)
        run.log(f"resumed from {checkpoint.name}")
        emit({"event": "resume", "step": p.step, "checkpoint": str(checkpoint)})
        return p, checkpoint, _baseline_from_metrics(run)
    if not s.eval_blocks:
        message = (
            "no held-out blocks (dataset.eval_fraction is 0, or the dataset is tiny): no evaluation"
        )
        run.log(message)
        emit({"event": "note", "message": message})
        return Progress(), None, {}
    before = _eval_record(s, 0, with_samples=False)  # one teacher pass: agreement and its ppl
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
    import json

    path = run.path / "metrics.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        record = json.loads(line)
        if record.get("kind") == "eval" and record.get("step") == 0:
            teacher = {
                "eval_loss": record.get("teacher_eval_loss"),
                "eval_ppl": record.get("teacher_eval_ppl"),
            }
            return {"teacher": teacher, "student_before": record}
    return {}


def _loop(
    s: Setup, run: RunDir, resume: bool, emit: Event, should_stop, started: float
) -> RunResult:
    t, out = s.config.training, s.config.output
    leader = s.rank == 0
    p, last_ckpt, baseline = _start_or_resume(s, run, resume, emit)
    emit({"event": "start", "total_steps": s.total_steps, "step": p.step, "run_dir": str(run.path)})
    run.write_status("running", p.step, s.total_steps)
    clock = time.perf_counter()
    s.student.train()
    cache_noted = False
    while p.step < s.total_steps:
        tokens_before, step_start = p.tokens, time.perf_counter()
        terms = train_step(s, p, last_ckpt)
        if leader and s.cache_coverage is not None and not cache_noted:
            cache_noted = True
            _note_cache_coverage(s, run, emit)
        p.last_loss = terms["loss"]
        p.first_loss = p.first_loss if p.first_loss is not None else terms["loss"]
        now = time.perf_counter()
        if leader and (p.step % t.log_every == 0 or p.step == s.total_steps):
            record = {
                "kind": "train",
                "step": p.step,
                "epoch": p.micro
                * s.config.training.batch_size
                * s.world_size
                / max(1, len(s.train_blocks)),
                "time_s": p.elapsed + now - clock,
                "tokens": p.tokens,
                **terms,
                "tokens_per_s": (p.tokens - tokens_before) / max(now - step_start, 1e-9),
                "memory_bytes": peak_memory_bytes(s.device),
            }
            run.append_metrics(record)
            run.write_status("running", p.step, s.total_steps)
            emit({"event": "train", **record})
        periodic = t.eval_every and p.step % t.eval_every == 0 and p.step < s.total_steps
        if leader and periodic and s.eval_blocks:
            record = _eval_record(s, p.step, with_samples=True)
            run.append_metrics(record)
            emit({"event": "eval", **record})
        stopping = should_stop()
        if leader and ((out.checkpoint_every and p.step % out.checkpoint_every == 0) or stopping):
            p.elapsed += time.perf_counter() - clock
            clock = time.perf_counter()
            last_ckpt = save_checkpoint(s, p, run)
            emit({"event": "checkpoint", "step": p.step, "path": str(last_ckpt)})
        if stopping:
            run.write_status("stopped", p.step, s.total_steps)
            run.log(f"stopped at step {p.step} on request")
            emit({"event": "end", "state": "stopped", "step": p.step})
            return RunResult(
                str(run.path),
                "stopped",
                p.step,
                s.total_steps,
                None,
                time.perf_counter() - started,
                p.tokens,
                p.first_loss,
                p.last_loss,
            )
    return _finish(s, run, p, baseline, emit, started)


def _note_cache_coverage(s: Setup, run: RunDir, emit: Event) -> None:
    """Say how lossy the teacher cache is: a flat teacher (high T) keeps little in its top k."""
    d = s.config.distillation
    message = (
        f"teacher cache: the top {d.teacher_cache.top_k} tokens hold {s.cache_coverage:.1%} of "
        f"the teacher's probability at T={d.temperature:g}; the rest is kept as an even tail"
    )
    if s.cache_coverage < 0.5:
        message += (
            " (under half: the cached target differs from the teacher's; raise top_k or lower T)"
        )
    run.log(message)
    emit({"event": "note", "message": message})


def _finish(
    s: Setup, run: RunDir, p: Progress, baseline: dict, emit: Event, started: float
) -> RunResult:
    final_eval = _eval_record(s, p.step, with_samples=True) if s.rank == 0 and s.eval_blocks else {}
    if final_eval:
        run.append_metrics(final_eval)
        emit({"event": "eval", **final_eval})
    if s.rank == 0:
        save_final(s, run)
        run.write_status("finished", p.step, s.total_steps)
        ppl = f", final eval ppl {final_eval['eval_ppl']:.2f}" if final_eval else ""
        run.log(f"finished: {p.step} steps{ppl}")
    result = RunResult(
        str(run.path), "finished", p.step, s.total_steps, str(run.final), time.perf_counter() - started, p.tokens, p.first_loss, p.last_loss,
        teacher_eval=baseline.get("teacher"), student_eval_before=baseline.get("student_before"), student_eval_after=final_eval or None,
    )  # fmt: skip
    emit({"event": "end", "state": "finished", **result.to_dict()})
    return result
