"""Fuzz every reader in-process with mutated real files; count what escapes as a bug.

    .venv/bin/python benchmarks/fuzz_readers.py --inputs 100000 --workers 2

Seeds are real files: the packaged models' headers (smollm2-135m GGUF metadata, minilm-l6
safetensors header and config.json, shrunk to tiny data), tiny models written by transformers,
a PEFT adapter folder, APR and pth files written by `entrenar convert`, crafted pth files (meta,
sparse, requires-grad and stride-0 tensors), the packaged distill configs and a run directory.
Each input is one mutation of one seed, fed to the reader and the commands built on it.

Outcomes per input: ok (returned, or raised the project's own EntrenarError), CRASH (any other
exception), HANG (over --time-limit seconds, by SIGALRM) and MEMORY (MemoryError under an
RLIMIT_AS of the worker's size + 1 GiB, or resident growth over 1 GiB). Workers are forked per
chunk, so a worker that dies (a segfault) is counted as a CRASH of the input it was running
and the chunk goes on in a new worker. The table and the first example of each crash class
(exception type and where it was raised) are printed; failing inputs are kept in --findings.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fuzz_mutators as mut  # noqa: E402  (benchmarks/fuzz_mutators.py)
import fuzz_seeds as seeds  # noqa: E402  (benchmarks/fuzz_seeds.py)

from entrenar_tui.core.errors import EntrenarError  # noqa: E402

GIB = 1 << 30


class Hang(BaseException):
    """Raised by SIGALRM; a BaseException so `except Exception` in a reader cannot swallow it."""


def _on_alarm(signum, frame):
    raise Hang()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _memory_cause(exc: BaseException) -> bool:
    """MemoryError itself, or one the reader wrapped (allocation must be bounded before it)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, MemoryError):
            return True
        text = str(exc)
        if "can't allocate memory" in text or "Cannot allocate memory" in text:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "entrenar_tui" in f.filename]
    frame = (ours or frames or [None])[-1]
    if frame is None:
        return "?"
    return f"{Path(frame.filename).name}:{frame.lineno}"


def classify(run_one, workdir: Path, budget_s: float) -> tuple[str, str, str]:
    """(outcome, crash class, detail) for one input."""
    start_rss = _rss_bytes()
    signal.setitimer(signal.ITIMER_REAL, budget_s)
    try:
        run_one(workdir)
        outcome, klass, detail = "ok", "", ""
    except Hang:
        outcome, klass, detail = "HANG", "hang", f"over {budget_s:g} s"
    except EntrenarError as exc:
        if _memory_cause(exc):
            outcome, klass, detail = "MEMORY", "MemoryError (wrapped)", exc.message[:200]
        else:
            outcome, klass, detail = "ok", "", ""
    except Exception as exc:  # noqa: BLE001 - counting these is the point
        if _memory_cause(exc):
            outcome, klass = "MEMORY", f"{type(exc).__name__} at {_where(exc)}"
        else:
            outcome, klass = "CRASH", f"{type(exc).__name__} at {_where(exc)}"
        detail = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if outcome == "ok" and _rss_bytes() - start_rss > GIB:
        outcome, klass, detail = "MEMORY", "rss growth", "resident memory grew by over 1 GiB"
    return outcome, klass, detail


def _keep_finding(findings: Path, reader: str, klass: str, workdir: Path) -> str:
    slug = "".join(c if c.isalnum() else "_" for c in f"{reader}-{klass}")[:100]
    target = findings / slug
    if not target.exists():
        shutil.copytree(workdir, target, symlinks=True, ignore_dangling_symlinks=True)
    return str(target)


def run_chunk(args, reader: str, first: int, count: int, progress, results) -> None:
    """Worker body: inputs first..first+count-1 of one reader."""
    import gc

    warnings.filterwarnings("ignore")  # numpy overflow warnings on mutated values are expected
    limit = _vm_bytes() + GIB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _on_alarm)
    seedset = seeds.load(Path(args.seeds))
    counts, examples = Counter(), {}
    scratch = Path(tempfile.mkdtemp(prefix=f"fuzz-{reader}-", dir=args.scratch))
    for index in range(first, first + count):
        progress.value = index
        rng = random.Random(f"{args.seed}:{reader}:{index}")
        workdir = scratch / "case"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir()
        try:
            runner = mut.make_case(reader, seedset, rng, workdir)
        except Exception as exc:  # noqa: BLE001 - a broken mutator, not a reader bug
            counts["mutator_error"] += 1
            examples.setdefault("mutator", f"{type(exc).__name__}: {exc}")
            continue
        outcome, klass, detail = classify(runner, workdir, args.time_limit)
        counts[outcome] += 1
        if outcome != "ok":
            key = f"{outcome}|{klass}"
            counts["class:" + key] += 1
            if key not in examples:
                kept = _keep_finding(Path(args.findings), reader, klass, workdir)
                examples[key] = f"{detail} (input kept in {kept})"
        if index % 50 == 0:
            gc.collect()
    shutil.rmtree(scratch, ignore_errors=True)
    results.put((reader, dict(counts), examples))


def _spawn(ctx, args, reader, first, count, results):
    progress = ctx.Value("q", first)
    proc = ctx.Process(target=run_chunk, args=(args, reader, first, count, progress, results))
    proc.start()
    return proc, progress


class Tally:
    def __init__(self) -> None:
        self.counts: dict[str, Counter] = {r: Counter() for r in mut.READERS}
        self.examples: dict[str, dict[str, str]] = {r: {} for r in mut.READERS}

    def add(self, reader: str, counts: dict, examples: dict) -> None:
        self.counts[reader].update(counts)
        for key, text in examples.items():
            self.examples[reader].setdefault(key, text)

    def dead(self, reader: str, index: int, exitcode: int) -> None:
        key = f"CRASH|worker died (exit {exitcode})"
        self.counts[reader].update({"CRASH": 1, "class:" + key: 1})
        self.examples[reader].setdefault(key, f"input {index} of {reader}")

    def inputs(self, reader: str) -> int:
        c = self.counts[reader]
        return c["ok"] + c["CRASH"] + c["HANG"] + c["MEMORY"]

    def table(self) -> str:
        rows = ["| reader | inputs | CRASH | HANG | MEMORY |", "|---|---|---|---|---|"]
        total = Counter()
        for reader in mut.READERS:
            c = self.counts[reader]
            n = self.inputs(reader)
            total.update({"n": n, "CRASH": c["CRASH"], "HANG": c["HANG"], "MEMORY": c["MEMORY"]})
            label = mut.READERS[reader]
            rows.append(f"| {label} | {n:,} | {c['CRASH']:,} | {c['HANG']:,} | {c['MEMORY']:,} |")
        rows.append(
            f"| **all** | {total['n']:,} | {total['CRASH']:,} | {total['HANG']:,} | {total['MEMORY']:,} |"
        )
        return "\n".join(rows)

    def classes(self) -> str:
        lines = []
        for reader in mut.READERS:
            for key, count in sorted(self.counts[reader].items()):
                if key.startswith("class:"):
                    klass = key.removeprefix("class:")
                    lines.append(
                        f"- {reader}: {klass} x{count}\n    first: {self.examples[reader].get(klass, '?')}"
                    )
        return "\n".join(lines) or "(no failures)"


def _jobs(args) -> list[tuple[str, int, int]]:
    readers = args.readers or list(mut.READERS)
    per_reader = -(-args.inputs // len(readers))
    jobs = []
    for reader in readers:
        for first in range(0, per_reader, args.chunk):
            jobs.append((reader, first, min(args.chunk, per_reader - first)))
    random.Random(args.seed).shuffle(jobs)
    return jobs


def _finish(proc, progress, job, tally, results, pending) -> None:
    reader, first, count = job
    if proc.exitcode == 0:
        return
    index = progress.value
    tally.dead(reader, index, proc.exitcode)
    rest = first + count - index - 1
    if rest > 0:
        pending.insert(0, (reader, index + 1, rest))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--inputs", type=int, default=100_000, help="total inputs, split evenly over readers"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=250, help="inputs per forked worker")
    parser.add_argument(
        "--time-limit", type=float, default=5.0, help="seconds per input before HANG"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readers", nargs="*", choices=list(mut.READERS))
    parser.add_argument("--seeds", default=str(Path(tempfile.gettempdir()) / "entrenar-fuzz-seeds"))
    parser.add_argument("--scratch", default=tempfile.gettempdir())
    parser.add_argument(
        "--findings", default=str(Path(tempfile.gettempdir()) / "entrenar-fuzz-findings")
    )
    args = parser.parse_args(argv)
    Path(args.findings).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    seeds.build(Path(args.seeds))
    mut.warm_imports()
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    tally = Tally()
    pending = _jobs(args)
    running: list = []
    done = 0
    while pending or running:
        while pending and len(running) < args.workers:
            job = pending.pop(0)
            running.append((*_spawn(ctx, args, *job, results), job))
        while not results.empty():
            tally.add(*results.get())
        for entry in list(running):
            proc, progress, job = entry
            if not proc.is_alive():
                proc.join()
                while not results.empty():
                    tally.add(*results.get())
                _finish(proc, progress, job, tally, results, pending)
                running.remove(entry)
                done += 1
                if done % 20 == 0:
                    total = sum(tally.inputs(r) for r in mut.READERS)
                    print(f"[{time.perf_counter() - started:7.0f} s] {total:,} inputs", flush=True)
        time.sleep(0.05)
    while not results.empty():
        tally.add(*results.get())
    print(f"\n{tally.table()}\n\nfailure classes (first example of each):\n{tally.classes()}")
    print(f"\n{time.perf_counter() - started:.0f} s with {args.workers} workers")
    summary = {r: dict(c) for r, c in tally.counts.items()}
    (Path(args.findings) / "summary.json").write_text(json.dumps(summary, indent=1))
    failures = sum(tally.counts[r][k] for r in mut.READERS for k in ("CRASH", "HANG", "MEMORY"))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
