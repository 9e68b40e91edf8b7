"""Our distillation trainer vs a bare PyTorch KD loop: tokens/s (goal >= 0.95x) and peak memory.

Both sides load the same teacher and student the same way (entrenar's loaders; the student is
the teacher's every third layer), see the same batches in the same order (the trainer's
seed-and-epoch permutation of the same packed blocks) and compute the same loss
(alpha x T^2 x KL + (1 - alpha) x CE), so their first-step losses must agree. The timed window
is the steps after --warmup steps; repeats alternate which side goes first, so background load
hits both alike. Ours is the whole `run_distillation` loop (step, metrics line and status file
every --log-every steps, default 10 as in the demo config), clocked at each iteration's end
through its `should_stop` callback.

Peak memory is measured in a fresh child process per side (glibc told to return freed memory,
so the resident set follows live tensors; the high-water mark restarts when training starts)
and compared with `entrenar_tui.core.memory.estimate_memory` for the student's training step
plus the teacher's weights and logits (the estimator has no teacher-inference term yet).

    python benchmarks/bench_trainer.py [--steps 10] [--warmup 3] [--repeats 3] [--quick] [--tiny]
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

GOAL = 0.95


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- the two sides


def distill_config(args, steps: int):
    from entrenar_tui.core.distill.config import DistillConfig

    return DistillConfig.model_validate(
        {
            "seed": args.seed,
            "device": args.device,
            "teacher": {"model_id": args.teacher},
            "student": {"init_from_teacher": {"layers": args.layers}},
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


def run_ours(args, workdir: Path, on_step=None, on_start=None) -> dict:
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

    result = run_distillation(
        distill_config(args, steps), run_dir, on_event=events, should_stop=step_done
    )
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


def bare_setup(args):
    """Teacher, student, blocks and device exactly as the trainer's `build` makes them."""
    import torch

    from entrenar_tui.core.distill.data import build_dataset, load_documents
    from entrenar_tui.core.distill.modeling import (
        load_causal_lm,
        load_tokenizer,
        pick_device,
        student_from_teacher,
    )

    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    tokenizer = load_tokenizer(args.teacher)
    teacher = load_causal_lm(args.teacher, device).eval().requires_grad_(False)
    student = student_from_teacher(teacher, args.layers).to(device)
    docs = load_documents("builtin", None, None, "train", "text", False, args.max_documents)
    blocks = build_dataset(docs, tokenizer, args.seq, 0.05).train
    return teacher, student, blocks, device


def run_bare(args, on_start=None) -> dict:
    """The loop a PyTorch user writes: the reference for speed."""
    import torch
    import torch.nn.functional as F

    teacher, student, blocks, device = bare_setup(args)
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-4, weight_decay=0.0)
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(args.seed * 1000))
    T, alpha, B = args.temperature, args.alpha, args.batch
    student.train()
    if on_start:
        on_start()
    marks, tokens, losses, clock = [], [], [], time.perf_counter()
    for step in range(args.warmup + args.steps):
        chosen = order[step * B : (step + 1) * B].tolist()
        ids = torch.tensor([blocks[i] for i in chosen], dtype=torch.long, device=device)
        with torch.no_grad():
            t_logits = teacher(input_ids=ids).logits[:, :-1].float()
        s_logits = student(input_ids=ids).logits[:, :-1].float()
        vocab = s_logits.size(-1)
        s_flat, t_flat = s_logits.reshape(-1, vocab), t_logits.reshape(-1, vocab)
        kd = F.kl_div(
            F.log_softmax(s_flat / T, -1),
            F.log_softmax(t_flat / T, -1),
            reduction="batchmean",
            log_target=True,
        )
        ce = F.cross_entropy(s_flat, ids[:, 1:].reshape(-1))
        loss = alpha * T * T * kd + (1 - alpha) * ce
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())  # a sync, as the trainer's logging does
        marks.append(time.perf_counter() - clock)
        tokens.append((step + 1) * ids.numel())
    return {"marks": marks, "tokens": tokens, "first_loss": losses[0]}


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
            "teacher": {"model_id": args.teacher},
            "student": {"init_from_teacher": {"layers": list(args.layers)}},
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


def measure_speed(args, workdir: Path) -> dict:
    rates: dict[str, list[float]] = {"ours": [], "bare": []}
    best_rates: dict[str, list[float]] = {"ours": [], "bare": []}
    first_loss: dict[str, float] = {}
    for repeat in range(args.repeats):
        order = ("ours", "bare") if repeat % 2 == 0 else ("bare", "ours")
        for side in order:
            log(f"repeat {repeat + 1}/{args.repeats}: {side} ...")
            result = run_ours(args, workdir) if side == "ours" else run_bare(args)
            rates[side].append(window_rate(result["marks"], result["tokens"], args.warmup))
            best_rates[side].append(best_step_rate(result["marks"], result["tokens"], args.warmup))
            first_loss[side] = result["first_loss"]
            log(f"  {rates[side][-1]:.0f} tokens/s, fastest step {best_rates[side][-1]:.0f}")
    return {"rates": rates, "best_rates": best_rates, "first_loss": first_loss}


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def speed_rows(rates: dict) -> tuple[float, list[float]]:
    """Print one table (median and per repeat, per side); return the median ratio and pairs."""
    ours, bare = rates["ours"], rates["bare"]
    for name, values in (("ours", ours), ("bare", bare)):
        per_repeat = ", ".join(f"{v:.0f}" for v in values)
        print(f"    {name:6s} {statistics.median(values):8.0f}   {per_repeat}")
    ratio = statistics.median(ours) / statistics.median(bare)
    return ratio, [o / b for o, b in zip(ours, bare, strict=True)]


def report(args, speed: dict, memory: dict | None) -> dict:
    print(
        f"\n{args.label}: batch {args.batch} x {args.seq}, {args.steps} timed steps after "
        f"{args.warmup} warm-up, {args.repeats} repeats (alternating order)"
    )
    out: dict = {"first_loss": speed["first_loss"]}
    for key, unit in (
        ("rates", "tokens/s over the timed steps"),
        ("best_rates", "tokens/s of the fastest step"),
    ):
        print(f"  {unit}\n    {'side':6s} {'median':>8s}   per repeat")
        ratio, pairs = speed_rows(speed[key])
        print(
            f"    ratio ours/bare: {ratio:.3f} (per repeat {', '.join(f'{p:.3f}' for p in pairs)})"
        )
        out[key] = {**speed[key], "ratio": ratio, "ratio_per_repeat": pairs}
    ratio = out["rates"]["ratio"]
    print(
        f"goal ours/bare >= {GOAL}: {'met' if ratio >= GOAL else 'MISSED'} ({ratio:.3f} over the timed steps); "
        "on a shared machine the fastest-step ratio is the steadier one"
    )
    fl = speed["first_loss"]
    print(f"first-step loss: ours {fl['ours']:.5f}, bare {fl['bare']:.5f} (same work if equal)")
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
    print(
        f"  = student step {mib(est['student_step']['total_bytes'])} + teacher weights "
        f"{mib(est['teacher_weights'])} + teacher logits {mib(est['teacher_logits'])}"
    )
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
    p.add_argument("--layers", default=",".join(map(str, range(0, 30, 3))), help="student layers")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--alpha", type=float, default=0.7)
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
