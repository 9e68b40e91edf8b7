"""Tokens/s of our distillation trainer against the loops a user would otherwise run.

Sides (benchmarks/trainer_sides.py):
  ours    the whole `run_distillation` loop (step, metrics line and status file every
          --log-every steps), clocked at each iteration's end through its `should_stop` callback
  bare    a bare PyTorch KD loop with SDPA attention and the teacher in inference mode: the fair
          anchor (goal ours/bare >= 0.95)
  trl     TRL's GKDTrainer, off-policy with beta 0 (forward KL), on the same models, batch and
          loss (goal ours/trl >= 1.2); a benchmark-only dependency (`pip install trl`)
  before  our trainer as it ran before SDPA and the bf16 teacher (eager attention, fp32
          teacher): the speed-up over it is reported

All load the same teacher and student the same way (entrenar's loaders; the student is the
demo's 15 teacher layers) and compute alpha x T^2 x KL + (1 - alpha) x CE (default alpha 1,
T 1: GKD's loss is KD alone). ours, bare and before see the same batches in the same order (the
trainer's seed-and-epoch permutation), so their first-step losses agree. The timed window is the
steps after --warmup steps; the side order rotates between repeats, so background load hits all
alike.

Peak memory (ours and bare) is measured in a fresh child process per side (glibc told to return
freed memory, so the resident set follows live tensors; the high-water mark restarts when
training starts) and compared with `entrenar distill estimate`'s prediction.

    python benchmarks/bench_trainer.py [--steps 10] [--warmup 3] [--repeats 3] [--sides ...]
                                       [--quick] [--tiny] [--no-memory] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 0.95  # ours / the bare loop
TRL_GOAL = 1.2  # ours / TRL's GKD trainer
SIDES = ("ours", "bare", "trl", "before")


DEMO_LAYERS = "0,1,2,8,9,10,11,15,19,20,21,24,27,28,29"  # examples/demo.yaml


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- the two sides


def distill_config(args, steps: int, teacher_precision: str | None = None):
    from entrenar_tui.core.distill.config import DistillConfig

    teacher_precision = teacher_precision or args.teacher_precision
    return DistillConfig.model_validate(
        {
            "seed": args.seed,
            "device": args.device,
            "teacher": {"model_id": args.teacher, "precision": teacher_precision},
            "student": {
                "init_from_teacher": {"layers": args.layers},
                "precision": args.student_precision,
            },
            "distillation": {"temperature": args.temperature, "alpha": args.alpha},
            "training": {
                "max_steps": steps,
                "batch_size": args.batch,
                "learning_rate": 3e-4,
                "warmup_steps": 0,
                "max_grad_norm": 1.0,
                "log_every": args.log_every,
                "eval_every": None,
                "eval_max_blocks": 1,
            },
            "dataset": {
                "source": "builtin",
                "max_length": args.seq,
                "max_documents": args.max_documents,
            },
            "output": {"checkpoint_every": None},
        }
    )


def run_before(args, workdir: Path) -> dict:
    """Our trainer as it ran when this benchmark's issue was filed: eager attention for teacher
    and student and an fp32 teacher (the loop is today's, so the rest of its work is the same)."""
    from entrenar_tui.core.distill.config import DistillConfig

    today = DistillConfig.attention_implementation
    DistillConfig.attention_implementation = property(lambda self: "eager")
    try:
        return run_ours(args, workdir, teacher_precision="fp32")
    finally:
        DistillConfig.attention_implementation = today


def run_ours(args, workdir: Path, on_step=None, on_start=None, teacher_precision=None) -> dict:
    """The whole trainer. Each loop iteration (step, logging, status file) ends in its
    `should_stop` call, which is where the per-step clock marks are taken."""
    from entrenar_tui.core.distill.run import run_distillation

    steps = args.warmup + args.steps
    run_dir = Path(tempfile.mkdtemp(prefix="ours-", dir=workdir)) / "run"
    marks: list[float] = []
    clock = [0.0]

    def events(event: dict) -> None:
        if event["event"] == "start":
            if on_start:
                on_start()
            clock[0] = time.perf_counter()

    def step_done() -> bool:
        marks.append(time.perf_counter() - clock[0])
        if on_step:
            on_step()
        return False

    config = distill_config(args, steps, teacher_precision)
    result = run_distillation(config, run_dir, on_event=events, should_stop=step_done)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    train = [r for r in map(json.loads, lines) if r["kind"] == "train"]
    shutil.rmtree(run_dir.parent, ignore_errors=True)  # the saved student is ~0.2 GB
    assert len(marks) == steps == train[-1]["step"], (len(marks), steps)
    return {
        "marks": marks,
        "tokens": [(i + 1) * args.batch * args.seq for i in range(steps)],
        "first_loss": result.first_loss,
        "memory_bytes": max(r["memory_bytes"] for r in train),
    }


def window_rate(marks: list[float], tokens: list[int], warmup: int) -> float:
    """Tokens per second over the steps after warm-up (>= 1)."""
    return (tokens[-1] - tokens[warmup - 1]) / (marks[-1] - marks[warmup - 1])


def best_step_rate(marks: list[float], tokens: list[int], warmup: int) -> float:
    """Tokens per second of the fastest timed step: the one least slowed by other processes."""
    return max(
        (tokens[i] - tokens[i - 1]) / (marks[i] - marks[i - 1]) for i in range(warmup, len(marks))
    )


# ---------------------------------------------------------------------------------- memory


def resident() -> tuple[int, int]:
    """(current, peak) resident set in bytes."""
    status = Path("/proc/self/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def probe_main(args) -> None:
    """Child process: one side's training peak (`--probe ours|bare`), one JSON line on stdout."""
    import torch

    from entrenar_tui.core.distill.modeling import pick_device

    cuda = pick_device(args.device) == "cuda"
    mark: dict = {"baseline": torch.cuda.memory_allocated() if cuda else resident()[0]}

    def restart_peak() -> None:
        mark["built"] = torch.cuda.memory_allocated() if cuda else resident()[0]
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # restart the high-water mark

    def read_peak() -> None:
        mark["peak"] = torch.cuda.max_memory_allocated() if cuda else resident()[1]

    with tempfile.TemporaryDirectory(prefix="bench-trainer-probe-") as tmp:
        if args.probe == "ours":
            side = run_ours(args, Path(tmp), on_step=read_peak, on_start=restart_peak)
            mark["memory_bytes_max"] = side["memory_bytes"]
        else:
            from trainer_sides import run_bare

            run_bare(args, on_start=restart_peak)
            read_peak()
    mark["method"] = "max_memory_allocated" if cuda else "VmHWM"
    print(json.dumps(mark))


def measure_peak(side: str, argv: list[str]) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", TRANSFORMERS_VERBOSITY="error")
    cmd = [sys.executable, __file__, *argv, "--probe", side]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"memory probe ({side}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def estimate(args, device: str) -> dict:
    """What `entrenar distill estimate` predicts for this run (teacher inference, KD loss and
    the student's training step, from core/memory/)."""
    from entrenar_tui.core.distill.config import DistillConfig
    from entrenar_tui.core.distill.estimate import estimate_distillation

    cfg = DistillConfig.model_validate(
        {
            "teacher": {"model_id": args.teacher, "precision": args.teacher_precision},
            "student": {
                "init_from_teacher": {"layers": list(args.layers)},
                "precision": args.student_precision,
            },
            "training": {"batch_size": args.batch, "max_steps": 1},
            "dataset": {"max_length": args.seq},
        }
    )
    est = estimate_distillation(cfg, measure_steps=0, device=device)
    overhead = est.breakdown.get("student_overhead", 0)
    return {
        "total_bytes": est.total_bytes,
        "tensor_bytes": est.total_bytes - overhead,
        "breakdown": est.breakdown,
    }


# ---------------------------------------------------------------------------------- driver


def run_side(side: str, args, workdir: Path) -> dict:
    from trainer_sides import run_bare, run_trl

    if side == "ours":
        return run_ours(args, workdir)
    if side == "before":
        return run_before(args, workdir)
    return run_bare(args) if side == "bare" else run_trl(args, workdir)


def measure_speed(args, workdir: Path) -> dict:
    """Every side once per repeat, the order rotating so background load hits all alike."""
    rates: dict[str, list[float]] = {side: [] for side in args.sides}
    best_rates: dict[str, list[float]] = {side: [] for side in args.sides}
    first_loss: dict[str, float] = {}
    for repeat in range(args.repeats):
        shift = repeat % len(args.sides)
        for side in args.sides[shift:] + args.sides[:shift]:
            log(f"repeat {repeat + 1}/{args.repeats}: {side} ...")
            result = run_side(side, args, workdir)
            rates[side].append(window_rate(result["marks"], result["tokens"], args.warmup))
            best_rates[side].append(best_step_rate(result["marks"], result["tokens"], args.warmup))
            first_loss[side] = result["first_loss"]
            log(f"  {rates[side][-1]:.0f} tokens/s, fastest step {best_rates[side][-1]:.0f}")
    return {"rates": rates, "best_rates": best_rates, "first_loss": first_loss}


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


RATIOS = (  # (numerator, denominator, goal or None, what it says)
    ("ours", "bare", GOAL, "ours / bare PyTorch loop"),
    ("ours", "trl", TRL_GOAL, "ours / TRL GKDTrainer"),
    ("ours", "before", None, "speed-up over the trainer before (eager, fp32 teacher)"),
)


def speed_rows(rates: dict) -> dict:
    """Print the median and per-repeat rate of every side; return the ratios between them."""
    for name, values in rates.items():
        per_repeat = ", ".join(f"{v:.0f}" for v in values)
        print(f"    {name:6s} {statistics.median(values):8.0f}   {per_repeat}")
    ratios = {}
    for top, bottom, goal, what in RATIOS:
        if top in rates and bottom in rates:
            ratio = statistics.median(rates[top]) / statistics.median(rates[bottom])
            pairs = [a / b for a, b in zip(rates[top], rates[bottom], strict=True)]
            verdict = f" goal >= {goal}: {'met' if ratio >= goal else 'MISSED'}" if goal else ""
            print(
                f"    {what}: {ratio:.3f} (per repeat {', '.join(f'{p:.3f}' for p in pairs)}){verdict}"
            )
            ratios[f"{top}/{bottom}"] = {"ratio": ratio, "per_repeat": pairs, "goal": goal}
    return ratios


def report(args, speed: dict, memory: dict | None) -> dict:
    print(
        f"\n{args.label}: batch {args.batch} x {args.seq}, {args.steps} timed steps after "
        f"{args.warmup} warm-up, {args.repeats} repeats (rotating order); teacher "
        f"{args.teacher_precision}, student {args.student_precision}, T={args.temperature:g}, "
        f"alpha {args.alpha:g}"
    )
    out: dict = {"first_loss": speed["first_loss"]}
    for key, unit in (
        ("rates", "tokens/s over the timed steps"),
        ("best_rates", "tokens/s of the fastest step (the steadier one on a shared machine)"),
    ):
        print(f"  {unit}\n    {'side':6s} {'median':>8s}   per repeat")
        out[key] = {**speed[key], "ratios": speed_rows(speed[key])}
    losses = ", ".join(f"{side} {loss:.5f}" for side, loss in speed["first_loss"].items())
    print(f"first-step loss: {losses} (ours, bare and before see the same batch)")
    if memory:
        print_memory(memory)
        out["memory"] = memory
    return out


def print_memory(memory: dict) -> None:
    est, method = memory["estimate"], memory["ours"]["method"]
    print(f"\npeak memory during training ({method}; fresh process per side)")
    print(f"{'':26s} {'whole process':>14s} {'above baseline':>15s}")
    for side in ("ours", "bare"):
        m = memory[side]
        print(
            f"{'measured ' + side:26s} {mib(m['peak']):>14s} {mib(m['peak'] - m['baseline']):>15s}"
        )
    print(f"{'estimate':26s} {mib(est['total_bytes']):>14s} {mib(est['tensor_bytes']):>15s}")
    terms = sorted(est["breakdown"].items(), key=lambda item: -item[1])
    print("  = " + " + ".join(f"{name} {mib(size)}" for name, size in terms if size >= 2**20))
    m = memory["ours"]
    print(
        f"measured/estimate: {m['peak'] / est['total_bytes']:.2f} (whole process), "
        f"{(m['peak'] - m['baseline']) / est['tensor_bytes']:.2f} (tensors above baseline); "
        f"metrics.jsonl max memory_bytes (after-step RSS): {mib(m['memory_bytes_max'])}"
    )


def build_tiny_pair(root: Path) -> str:
    """A 4-layer LLaMA teacher with a trained BPE tokenizer (as tests/conftest.py builds one)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import torch
    import transformers

    from conftest import train_tiny_tokenizer

    tok_dir = train_tiny_tokenizer(root / "tok")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tok_dir)
    cfg = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        eos_token_id=0,
        bos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(1)
    transformers.LlamaForCausalLM(cfg).save_pretrained(root / "teacher")
    tokenizer.save_pretrained(root / "teacher")
    return str(root / "teacher")


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--teacher", default="smollm2-135m", help="teacher model reference")
    p.add_argument("--layers", default=DEMO_LAYERS, help="student layers (the demo's)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--alpha", type=float, default=1.0, help="1: KD alone, as TRL's GKD")
    p.add_argument("--teacher-precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--student-precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--sides", default=",".join(SIDES), help=f"comma list of {','.join(SIDES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10, help="our trainer's training.log_every")
    p.add_argument("--max-documents", type=int, default=None)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="smoke test: 3 timed steps, 2 repeats")
    p.add_argument("--tiny", action="store_true", help="a tiny 4-layer LLaMA pair instead")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--out", type=Path, help="write the numbers as JSON here")
    p.add_argument("--probe", choices=["ours", "bare"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = [a for a in (argv if argv is not None else sys.argv[1:])]
    if args.quick:
        args.steps, args.warmup, args.repeats = 3, 2, 2
        args.max_documents = args.max_documents or 300
    args.layers = [int(x) for x in str(args.layers).split(",")]
    args.sides = [side.strip() for side in args.sides.split(",") if side.strip()]
    if unknown := [side for side in args.sides if side not in SIDES]:
        p.error(f"unknown side(s) {unknown}; choose from {list(SIDES)}")
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be >= 1 (the first step pays one-time costs)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.probe:
        return probe_main(args)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        workdir = Path(tmp)
        child_argv = [a for a in args.argv if a not in ("--tiny", "--quick")]
        if args.quick:
            child_argv += [
                "--steps",
                "3",
                "--warmup",
                "2",
                "--max-documents",
                str(args.max_documents),
            ]
        if args.tiny:
            args.teacher, args.layers = build_tiny_pair(workdir / "tiny"), [0, 2]
            child_argv += ["--teacher", args.teacher, "--layers", "0,2"]
        args.label = f"teacher {args.teacher}, student layers {args.layers}"
        speed = measure_speed(args, workdir)
        memory = None
        if not args.no_memory:
            from entrenar_tui.core.distill.modeling import pick_device

            device = pick_device(args.device)
            memory = {side: measure_peak(side, child_argv) for side in ("ours", "bare")}
            memory["estimate"] = estimate(args, "cuda" if device == "cuda" else "cpu")
        result = report(args, speed, memory)
    print(f"\ntook {(time.perf_counter() - started) / 60:.1f} min")
    if args.out:
        from entrenar_tui.core.fsutil import write_json_atomic

        settings = {k: v for k, v in vars(args).items() if k not in ("out", "argv")}
        write_json_atomic(args.out, {"settings": settings, **result})


if __name__ == "__main__":
    main()
