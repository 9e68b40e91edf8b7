"""The app in a real pseudo-terminal against a minimal Textual app, timed in the same run.

Figures (goal in brackets), each next to the anchor:
- time to first frame, process start to the first screen (<= 1.5x the minimal app);
- key press to frame while a distillation trains beside it: screen switches, whose frame
  carries the new screen's title (p95 <= 100 ms);
- CPU of the app while it follows the live run on the Runs screen over 60 s (<= 5% of a core);
- resident memory at the first frame;
- exit after the terminal goes away (the pty closes: SIGHUP), with the run going on;
- event-loop stalls (the app's own 20 ms tick, ENTRENAR_TUI_STALLS) over a tour of the screens.

    python benchmarks/bench_tui.py [--seconds 60] [--presses 40] [--size 120x40]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import textwrap
import time
from pathlib import Path

import psutil

MINIMAL_APP = textwrap.dedent(
    """
    from textual.app import App
    from textual.screen import Screen
    from textual.widgets import Footer, Header, Static

    class Page(Screen):
        def __init__(self, name):
            super().__init__()
            self.page = name
        def compose(self):
            yield Header()
            yield Static("benchmark page " + self.page)
            yield Footer()
        def on_mount(self):
            self.sub_title = self.page

    class Minimal(App):
        MODES = {"one": lambda: Page("One"), "two": lambda: Page("Two")}
        DEFAULT_MODE = "one"
        BINDINGS = [("1", "switch_mode('one')", "One"), ("2", "switch_mode('two')", "Two"),
                    ("q", "quit", "Quit")]

    Minimal().run()
    """
)


class Terminal:
    """A child process on its own pseudo-terminal; output is read and searched as it comes."""

    def __init__(self, argv: list[str], size: tuple[int, int], cwd: str, env=None) -> None:
        self.started = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:  # the child: its stdin/stdout/stderr are the pty
            os.chdir(cwd)
            os.environ.update(env or {})
            os.execv(argv[0], argv)
        self.pid, self.fd = pid, fd
        columns, rows = size
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.buffer = b""

    def read_for(self, seconds: float) -> bytes:
        data, deadline = b"", time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                break
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            data += chunk
        return data

    def wait_for(self, marker: bytes, timeout: float = 120.0) -> float:
        """Seconds until `marker` appears in new output; the search starts from now."""
        start = time.perf_counter()
        self.buffer = b""
        while marker not in self.buffer:
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"no {marker!r} after {timeout:.0f} s")
            ready, _, _ = select.select([self.fd], [], [], 0.5)
            if ready:
                try:
                    self.buffer = self.buffer[-4096:] + os.read(self.fd, 65536)
                except OSError as exc:
                    raise TimeoutError(f"terminal closed before {marker!r}") from exc
        return time.perf_counter() - start

    def press(self, key: str, marker: bytes) -> float:
        self.read_for(0.05)  # drain what a timer refresh wrote before the key
        os.write(self.fd, key.encode())
        return self.wait_for(marker, timeout=30)

    def rss(self) -> int:
        return psutil.Process(self.pid).memory_info().rss

    def close_terminal(self) -> float:
        """Close the pty (what an SSH drop does) and time the app's exit."""
        start = time.perf_counter()
        os.close(self.fd)
        deadline = start + 30
        while time.perf_counter() < deadline:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return time.perf_counter() - start
            time.sleep(0.02)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        return float("inf")


def start_training(workdir: Path, steps: int) -> tuple[subprocess.Popen, Path]:
    """The demo distillation, long enough to outlast the measurements, as a separate process."""
    run_dir = workdir / "runs" / "bench"
    command = [sys.executable, "-m", "entrenar_tui.cli.main", "distill", "run", "--config"]
    command += ["demo", "--output", str(run_dir), "--set", f"training.max_steps={steps}"]
    command += ["--set", "training.log_every=1", "--json"]
    log = open(workdir / "training.log", "wb")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    deadline = time.monotonic() + 600
    while not (run_dir / "metrics.jsonl").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the demo run did not start; see {workdir / 'training.log'}")
        time.sleep(1)
    return process, run_dir


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def first_frames(argv: list[str], marker: bytes, args, workdir) -> tuple[list[float], int]:
    """Process start to the first frame, `args.starts` times (an idle machine); RSS there."""
    times, rss = [], 0
    for _ in range(args.starts):
        terminal = Terminal(argv, args.size, str(workdir))
        terminal.wait_for(marker, timeout=180)
        times.append(time.perf_counter() - terminal.started)
        rss = terminal.rss()
        terminal.close_terminal()
    return times, rss


def interactive(name, argv, first_marker, switches, args, workdir) -> dict:
    """Beside a training run: key latency (alternating two screens), CPU, exit time."""
    terminal = Terminal(argv, args.size, str(workdir))
    terminal.wait_for(first_marker, timeout=180)
    terminal.read_for(2.0)  # let start-up work settle
    latencies = []
    for index in range(args.presses):
        key, marker = switches[index % 2]
        latencies.append(terminal.press(key, marker))
    terminal.read_for(1.0)  # an even number of presses ends on the second screen of the pair
    cpu = _cpu_while_reading(terminal, args.seconds)
    exit_s = terminal.close_terminal()
    print(
        f"{name:9s} key p50 {statistics.median(latencies) * 1000:5.1f} ms p95 "
        f"{percentile(latencies, 0.95) * 1000:5.1f} ms max {max(latencies) * 1000:5.1f} ms  "
        f"cpu {cpu:6.2%}  exit {exit_s:5.2f} s",
        flush=True,
    )
    return {"latencies": latencies, "cpu": cpu, "exit_s": exit_s}


def stalls(argv: list[str], args, workdir: Path) -> dict:
    """Event-loop lateness (the app's own 20 ms tick) on an idle machine over two tours of every
    screen: model info read in a worker, a validation child, the planner, a followed run. The
    first tour composes each screen (Textual re-parses its stylesheet when a screen brings new
    widget types); the second is the steady state."""
    report = workdir / "stalls.json"
    terminal = Terminal(argv, args.size, str(workdir), {"ENTRENAR_TUI_STALLS": str(report)})
    terminal.wait_for(b"Models", timeout=180)
    terminal.read_for(3.0)
    tours = []
    for _ in range(2):
        started = time.perf_counter() - terminal.started
        for key in (b"\x1b[B", b"\x1b[B", b"v"):  # minilm-l6's info, then validate it
            os.write(terminal.fd, key)
            terminal.read_for(1.5)
        for key, marker in (("2", b"Memory"), ("3", b"Runs"), ("4", b"Adapters"), ("5", b"Sweeps")):
            terminal.press(key, marker)
            terminal.read_for(2.0)
        terminal.press("6", b"Shell")
        terminal.press("1", b"Models")
        terminal.read_for(1.0)
        tours.append((started, time.perf_counter() - terminal.started))
    os.write(terminal.fd, b"q")
    deadline = time.monotonic() + 30
    while not report.exists() and time.monotonic() < deadline:
        terminal.read_for(0.2)
    terminal.close_terminal()
    summary = json.loads(report.read_text())
    # The app's clock starts at its first tick, a little after the process: compare loosely.
    offset = summary["first_frame_s"] or 0.0
    summary["tours"] = [
        [late for when, late in summary["long"] if start <= when + offset < end]
        for start, end in tours
    ]
    return summary


def _cpu_while_reading(terminal: Terminal, seconds: float) -> float:
    """CPU share over `seconds`, draining the pty meanwhile (an unread pty blocks the app)."""
    process = psutil.Process(terminal.pid)
    before = process.cpu_times()
    terminal.read_for(seconds)
    after = process.cpu_times()
    return (after.user + after.system - before.user - before.system) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="CPU sampling window")
    parser.add_argument("--presses", type=int, default=40, help="an even number")
    parser.add_argument("--starts", type=int, default=5, help="first-frame repeats")
    parser.add_argument("--size", default="120x40")
    parser.add_argument("--steps", type=int, default=2000, help="the training run's max_steps")
    args = parser.parse_args()
    args.size = tuple(int(v) for v in args.size.split("x"))
    minimal_argv = [sys.executable, "minimal.py"]
    entrenar_argv = [sys.executable, "-m", "entrenar_tui.cli.main", "tui"]
    with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp:
        workdir = Path(tmp)
        (workdir / "minimal.py").write_text(MINIMAL_APP)
        start_minimal, rss_minimal = first_frames(minimal_argv, b"benchmark page", args, workdir)
        start_ours, rss_ours = first_frames(entrenar_argv, b"Models", args, workdir)
        stall = stalls(entrenar_argv, args, workdir)
        print("starting the demo distillation beside the apps...", flush=True)
        training, run_dir = start_training(workdir, args.steps)
        try:
            minimal = interactive(
                "minimal",
                minimal_argv,
                b"benchmark page",
                (("2", b"Two"), ("1", b"One")),
                args,
                workdir,
            )
            ours = interactive(
                "entrenar",
                [*entrenar_argv, "--attach", str(run_dir)],
                b"Runs",
                (("2", b"Memory"), ("3", b"Runs")),
                args,
                workdir,
            )
        finally:
            alive = training.poll() is None
            training.send_signal(signal.SIGTERM)
            training.wait(timeout=300)
    print(f"\nthe training run was {'still running' if alive else 'NOT running'} after the apps")
    ratio = statistics.median(start_ours) / statistics.median(start_minimal)
    print(
        f"first frame (median of {args.starts}): {statistics.median(start_ours) * 1000:.0f} ms vs "
        f"{statistics.median(start_minimal) * 1000:.0f} ms = {ratio:.2f}x (goal <= 1.5x)"
    )
    p95 = percentile(ours["latencies"], 0.95)
    print(
        f"key to frame p95: {p95 * 1000:.1f} ms (goal <= 100 ms), minimal app "
        f"{percentile(minimal['latencies'], 0.95) * 1000:.1f} ms"
    )
    print(
        f"CPU following the run: {ours['cpu']:.2%} of a core (goal <= 5%), minimal app "
        f"{minimal['cpu']:.2%}"
    )
    print(
        f"exit after the terminal closed: {ours['exit_s']:.2f} s (goal <= 5 s), minimal app "
        f"{minimal['exit_s']:.2f} s"
    )
    print(f"RSS at first frame: {rss_ours / 2**20:.1f} MiB vs {rss_minimal / 2**20:.1f} MiB")
    first, second = stall["tours"]
    print(
        f"event-loop stalls (20 ms tick, {stall['ticks']} ticks): p99 {stall['p99_ms']:.0f} ms; "
        f"over 50 ms: first tour {len(first)} (max {max(first, default=0):.0f} ms), second tour "
        f"{len(second)} (max {max(second, default=0):.0f} ms) (goal: none over 50 ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
