"""Does distillation beat plain training? KD vs CE-only over seeds, at equal steps and equal time.

The setting is the embedded `demo` config as it ships (examples/demo.yaml): the packaged
SmolLM2-135M teaches a student made of 15 of its 30 layers (chosen by measurement, initialised
from the teacher), bf16 teacher and student, on the built-in Python-docstring corpus, batch
4 x 128, its steps, warmup, learning rate, temperature and held-out blocks. Arms:

  kd              the demo as it is (alpha 0.7: KD + 0.3 CE)
  ce              alpha 0.0: CE only; the trainer skips the teacher's forward (checked first)
  kd_cache        kd with the top-64 teacher cache
  kd_hidden       kd with the exact hidden-state cache (the head's input; logits recomputed):
                  with --max-documents, several epochs, all but the first from the cache
  kd_progressive  kd plus hidden-state transfer, student block i -> the teacher block it copies
  ce_wall         CE only, given as many steps as fit in kd's measured training time

KD's training time includes every teacher forward (and, with a cache, its filling), so
`ce_wall` is plain training at KD's whole cost. Its step budget is computed from the equal-step
runs (CE's first step and median step time against KD's training seconds, metrics.jsonl
`time_s`) rather than by stopping a long run with `should_stop`: a stopped run leaves its
cosine schedule unfinished and has no final eval. Reported per arm: held-out student perplexity
after training (RunResult.student_eval_after), mean +- std over seeds, and Welch's t-test p
(scipy, equal_var=False) against CE.

    python benchmarks/bench_kd_vs_ce.py [--steps N] [--seeds 3] [--arms kd,ce,ce_wall]
                                        [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def demo_settings() -> dict:
    from entrenar_tui.core.distill.config import load_config

    config = load_config("demo", [])
    return {
        "layers": list(config.student.init_from_teacher.layers),
        "steps": config.training.max_steps,
        "warmup": config.training.warmup_steps,
        "eval_blocks": config.training.eval_max_blocks,
    }


DEMO = demo_settings()
ARMS = {
    "kd": [],
    "ce": ["distillation.alpha=0.0"],
    "kd_cache": ["distillation.teacher_cache.enabled=true", "distillation.teacher_cache.top_k=64"],
    "kd_hidden": [
        "distillation.teacher_cache.enabled=true",
        "distillation.teacher_cache.kind=hidden",
    ],
    "kd_progressive": [
        "distillation.progressive.enabled=true",
        "distillation.progressive.layer_mapping="
        + json.dumps([[i, layer] for i, layer in enumerate(DEMO["layers"])]),
    ],
    "ce_wall": ["distillation.alpha=0.0"],
}
DEFAULT_ARMS = "kd,ce,ce_wall"
HELD_OUT_BLOCKS = 107  # the built-in corpus' held-out 128-token blocks (Python 3.11), for estimates


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def base_overrides(args, seed: int, steps: int) -> list[str]:
    """The demo config at this seed and length; no mid-run evals or checkpoints (timing)."""
    out = [
        f"seed={seed}",
        f"training.max_steps={steps}",
        "training.eval_every=null",
        "training.log_every=1",  # time_s at every step, for the per-step times
        f"training.eval_max_blocks={args.eval_blocks}",
        f"training.warmup_steps={args.warmup}",
        "output.checkpoint_every=null",
        f"device={args.device}",
    ]
    if args.max_documents:
        out.append(f"dataset.max_documents={args.max_documents}")
    return out


def check_ce_skips_teacher(args) -> dict:
    """alpha 0 must mean no teacher forward in training: count calls during one real step."""
    import torch

    from entrenar_tui.core.distill.config import load_config
    from entrenar_tui.core.distill.trainer import Progress, build, train_step

    config = load_config("demo", base_overrides(args, 0, 1) + ARMS["ce"] + args.set)
    s = build(config)
    calls = []
    s.teacher.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    train_step(s, Progress(), None)
    during_step = len(calls)
    with torch.no_grad():  # prove the hook counts: one direct call must register
        s.teacher(input_ids=torch.tensor([s.train_blocks[0][:8]], device=s.device))
    result = {
        "needs_teacher_logits": bool(s.loss_fn.needs_teacher_logits),
        "teacher_calls_in_ce_step": during_step,
        "hook_counted_direct_call": len(calls) - during_step == 1,
    }
    ok = (
        not result["needs_teacher_logits"]
        and during_step == 0
        and result["hook_counted_direct_call"]
    )
    result["ok"] = ok
    del s
    return result


def train_times(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["time_s"] for r in map(json.loads, lines) if r["kind"] == "train"]


def run_arm(arm: str, seed: int, steps: int, args, workdir: Path) -> dict:
    from entrenar_tui.core.distill.config import load_config
    from entrenar_tui.core.distill.run import run_distillation

    config = load_config("demo", base_overrides(args, seed, steps) + ARMS[arm] + args.set)
    run_dir = workdir / f"{arm}-seed{seed}-steps{steps}"
    log(f"[{arm} seed {seed}] {steps} steps ...")

    def progress(event: dict) -> None:
        if event["event"] == "train" and (event["step"] % 10 == 0 or event["step"] == steps):
            log(f"  step {event['step']}/{steps} loss {event['loss']:.3f} t {event['time_s']:.0f}s")

    result = run_distillation(config, run_dir, on_event=progress)
    times = train_times(run_dir)
    after = result.student_eval_after or {}
    record = {
        "arm": arm,
        "seed": seed,
        "steps": result.step,
        "eval_ppl": after.get("eval_ppl"),
        "eval_loss": after.get("eval_loss"),
        "eval_top1_agreement": after.get("eval_top1_agreement"),
        "student_ppl_before": (result.student_eval_before or {}).get("eval_ppl"),
        "teacher_ppl": (result.teacher_eval or {}).get("eval_ppl"),
        "train_s": times[-1],
        "first_step_s": times[0],
        "median_step_s": statistics.median(b - a for a, b in zip(times, times[1:], strict=False))
        if len(times) > 1
        else times[0],
        "run_s": result.seconds,
        "first_loss": result.first_loss,
        "last_loss": result.last_loss,
    }
    log(f"  -> ppl {record['eval_ppl']:.2f}, {record['train_s']:.1f}s training")
    shutil.rmtree(run_dir, ignore_errors=True)  # the saved student is ~0.2 GB per run
    return record


def wall_clock_steps(runs: list[dict], seeds: list[int], of: str = "kd") -> int:
    """Steps CE fits into the `of` arm's training time: first step, then its median step."""
    budgets = []
    for seed in seeds:
        kd = next(r for r in runs if r["arm"] == of and r["seed"] == seed)
        ce = next(r for r in runs if r["arm"] == "ce" and r["seed"] == seed)
        extra = max(0.0, kd["train_s"] - ce["first_step_s"])
        budgets.append(1 + extra / max(ce["median_step_s"], 1e-9))
    return max(1, round(statistics.median(budgets)))


def welch_p(a: list[float], b: list[float]) -> float:
    if len(a) < 2 or len(b) < 2:
        return math.nan
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False).pvalue)


def summarise(runs: list[dict], arms: list[str], wall_of: str = "kd") -> dict:
    ce = [r["eval_ppl"] for r in runs if r["arm"] == "ce"]
    table = {}
    for arm in arms:
        values = [r["eval_ppl"] for r in runs if r["arm"] == arm]
        if not values:
            continue
        table[arm] = {
            "steps": sorted({r["steps"] for r in runs if r["arm"] == arm}),
            "n": len(values),
            "ppl_mean": statistics.fmean(values),
            "ppl_std": statistics.stdev(values) if len(values) > 1 else math.nan,
            "train_s_mean": statistics.fmean(r["train_s"] for r in runs if r["arm"] == arm),
            "median_step_s": statistics.median(r["median_step_s"] for r in runs if r["arm"] == arm),
            "welch_p_vs_ce": welch_p(values, ce) if arm not in ("ce", "ce_wall") else None,
        }
    kd = [r["eval_ppl"] for r in runs if r["arm"] == wall_of]
    ce_wall = [r["eval_ppl"] for r in runs if r["arm"] == "ce_wall"]
    comparisons = {
        "kd_arm": wall_of,
        "equal_steps_kd_vs_ce_p": welch_p(kd, ce) if kd and ce else None,
        "equal_wall_clock_kd_vs_ce_wall_p": welch_p(kd, ce_wall) if kd and ce_wall else None,
    }
    return {"arms": table, "comparisons": comparisons}


def fmt(value, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    return "n/a" if isinstance(value, float) and math.isnan(value) else format(value, spec)


def print_table(summary: dict, runs: list[dict]) -> None:
    teacher = next((r["teacher_ppl"] for r in runs if r["teacher_ppl"]), None)
    before = next((r["student_ppl_before"] for r in runs if r["student_ppl_before"]), None)
    print(
        f"\nheld-out perplexity: teacher {fmt(teacher, '.2f')}, student before training {fmt(before, '.2f')}"
    )
    print(
        f"{'arm':15s} {'steps':>6s} {'n':>2s} {'ppl mean':>11s} {'± std':>10s} {'train s':>8s} {'s/step':>7s} {'Welch p vs ce':>14s}"
    )
    for arm, row in summary["arms"].items():
        steps = ",".join(map(str, row["steps"]))
        print(
            f"{arm:15s} {steps:>6s} {row['n']:2d} {fmt(row['ppl_mean'], '.2f'):>11s} {fmt(row['ppl_std'], '.2f'):>10s} "
            f"{row['train_s_mean']:8.1f} {row['median_step_s']:7.2f} {fmt(row['welch_p_vs_ce'], '.4f'):>14s}"
        )
    arms = summary["arms"]
    c = summary["comparisons"]
    kd_arm = c["kd_arm"]
    if "ce_wall" in arms and kd_arm in arms:
        got, want = arms["ce_wall"]["train_s_mean"], arms[kd_arm]["train_s_mean"]
        print(
            f"ce_wall trained {got:.1f} s on average against {kd_arm}'s {want:.1f} s ({got / want:.2f}x); "
            "far from 1x means the machine's load changed between runs"
        )
    print(
        f"\nequal steps:      {kd_arm} vs CE       Welch p = {fmt(c['equal_steps_kd_vs_ce_p'], '.4f')}"
    )
    print(
        f"equal wall-clock: {kd_arm} vs CE(wall) Welch p = {fmt(c['equal_wall_clock_kd_vs_ce_wall_p'], '.4f')}"
    )


def estimate_full(runs: list[dict], args, steps: int = DEMO["steps"], seeds: int = 3) -> float:
    """Seconds a run at `steps`/`seeds` with every held-out block would take at the measured step
    times: steps + each run's measured overhead (build, evals, saving) + the evaluation batches
    this run skipped (three evals per run of about 0.5 KD step each: teacher, before, after)."""
    step_s = {
        a: statistics.median(r["median_step_s"] for r in runs if r["arm"] == a)
        for a in {r["arm"] for r in runs}
    }
    step_s["ce_wall"] = step_s.get("ce", 0.0)  # the same work as ce; its own runs came later
    kd, ce = step_s.get("kd", 0.0), step_s.get("ce", 0.0)
    overhead = statistics.median(r["run_s"] - r["train_s"] for r in runs)
    skipped_batches = max(0, math.ceil(HELD_OUT_BLOCKS / 4) - math.ceil(args.eval_blocks / 4))
    overhead += 3 * 0.5 * kd * skipped_batches
    total = 0.0
    for arm in args.arm_list:
        n = steps * kd / ce if arm == "ce_wall" and ce else steps
        total += n * step_s.get(arm, kd) + overhead
    return total * seeds


def json_ready(value):
    """NaN (a p-value from one seed) becomes null: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value if isinstance(value, int | float | str | bool | type(None)) else str(value)


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=DEMO["steps"], help="steps per equal-step run (the demo's)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per arm")
    parser.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma list of {','.join(ARMS)}")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 3 steps, 2 seeds, tiny eval"
    )
    parser.add_argument(
        "--eval-blocks",
        type=int,
        default=DEMO["eval_blocks"],
        help="held-out blocks (the demo's; 0: all)",
    )
    parser.add_argument("--warmup", type=int, default=DEMO["warmup"], help="lr warmup steps")
    parser.add_argument("--max-documents", type=int, default=None, help="cap the corpus")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--wall-of",
        default="kd",
        help="the KD arm whose training time ce_wall gets (kd_cache: "
        "with --max-documents, several epochs, most of them from the cache)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="config override k=v, applied after the arm's own",
    )
    parser.add_argument("--out", type=Path, help="write the raw numbers as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.warmup = min(args.steps, 3), min(args.seeds, 2), 0
        args.eval_blocks = min(args.eval_blocks or 4, 4)
        args.max_documents = args.max_documents or 300
    args.eval_blocks = args.eval_blocks or 100_000  # the trainer slices: every held-out block
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
    if "ce_wall" in arms:  # its budget comes from a KD arm's and ce's equal-step runs
        arms = list(dict.fromkeys([args.wall_of, "ce", *arms]))
    args.arm_list = arms
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    seeds = list(range(args.seeds))
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-kd-vs-ce-") as tmp:
        workdir = Path(tmp)
        check = check_ce_skips_teacher(args) if "ce" in args.arm_list else None
        if check is not None:
            log(f"CE-only check: {check}")
            if not check["ok"]:
                raise SystemExit(f"CE-only arm runs the teacher during training: {check}")
        equal_step_arms = [a for a in args.arm_list if a != "ce_wall"]
        for seed in seeds:  # seeds outermost: background load drifts over all arms alike
            runs += [run_arm(arm, seed, args.steps, args, workdir) for arm in equal_step_arms]
        wall_steps = None
        if "ce_wall" in args.arm_list:
            wall_steps = wall_clock_steps(runs, seeds, args.wall_of)
            log(f"CE steps that fit in {args.wall_of}'s training time: {wall_steps}")
            runs += [run_arm("ce_wall", seed, wall_steps, args, workdir) for seed in seeds]
    summary = summarise(runs, args.arm_list, args.wall_of)
    print_table(summary, runs)
    elapsed = time.perf_counter() - started
    full = estimate_full(runs, args)
    print(
        f"\nthis run took {elapsed / 60:.1f} min; the full run (--steps {DEMO['steps']} --seeds 3, arms "
        f"{','.join(args.arm_list)}) would take about {full / 60:.0f} min at these step times, all held-out blocks"
    )
    if args.out:
        from entrenar_tui.core.fsutil import write_json_atomic

        payload = {
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "ce_check": check,
            "ce_wall_steps": wall_steps,
            "runs": runs,
            "summary": summary,
            "seconds": elapsed,
            "estimated_full_seconds": full,
        }
        write_json_atomic(args.out, json_ready(payload))
        print(f"raw numbers: {args.out}")


if __name__ == "__main__":
    main()
