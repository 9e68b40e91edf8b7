"""The Shell pane runs `entrenar shell`'s evaluator: the CLI's output in a log, errors that never
leave the screen, the dry run's question, history and completion, a saved session the terminal
shell resumes, and the app's shared model and run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tuihelp import make_app, settle, wait_until
from typer.testing import CliRunner

pytestmark = pytest.mark.anyio


def log_text(screen) -> str:
    return "\n".join(line.text for line in screen.query_one("#shell-log").lines)


async def submit(pilot, text: str, typed: bool = False) -> None:
    """A line at the prompt, then Enter; waits until the command (and its save) is done."""
    prompt = pilot.app.screen.query_one("#shell-input")
    if typed:
        await pilot.press(*("space" if char == " " else char for char in text))
    else:
        prompt.value = text
    await pilot.press("enter")
    await settle(pilot)


async def open_shell(pilot):
    await pilot.press("6")
    await settle(pilot)
    screen = pilot.app.screen
    assert type(screen).__name__ == "ShellScreen"
    assert pilot.app.focused is screen.query_one("#shell-input")
    return screen


async def test_fetch_and_memory_show_the_cli_output(tui_env):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_shell(pilot)
        await submit(pilot, "fetch smollm2-135m", typed=True)
        text = log_text(screen)
        assert "entrenar> fetch smollm2-135m" in text
        assert "✓ Fetched smollm2-135m (94 MB, gguf)" in text
        assert "Architecture: LLaMA, Layers: 30" in text
        await submit(pilot, "memory --batch 2 --seq 32")
        text = log_text(screen)
        assert "Memory Estimate: smollm2-135m" in text and "batch 2 x 32" in text
        assert "┃ Precision" in text and "│ fp32" in text and "│ nf4 + LoRA" in text
        assert str(screen.query_one("#shell-status").content).startswith("ready")


async def test_an_error_shows_its_hint_and_the_prompt_goes_on(tui_env):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_shell(pilot)
        await submit(pilot, "fetchh smollm2-135m")
        text = log_text(screen)
        assert "error: unknown command 'fetchh'" in text
        assert "hint: did you mean `fetch`?" in text
        await submit(pilot, "fetch no/such-model-here; help")  # an evaluator error, then more
        text = log_text(screen)
        assert "error: " in text.split("entrenar> fetch no/such-model-here")[1]
        assert "what it does" in text  # `help` still ran after the error
        assert app.screen is screen and app.focused is screen.query_one("#shell-input")
        history = [item["status"] for item in screen.session.history]
        assert history == ["error", "ok"]  # the parse error never reached the evaluator
        await pilot.press("ctrl+l")
        assert log_text(screen) == ""


async def test_while_a_command_runs_the_prompt_is_busy_and_lines_wait(tui_env):
    import threading

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_shell(pilot)
        gate, evaluate = threading.Event(), screen.evaluator.run

        def held(command):  # the real evaluator, held back until the test lets it go
            gate.wait(30)
            return evaluate(command)

        screen.evaluator.run = held
        prompt = screen.query_one("#shell-input")
        prompt.value = "fetch smollm2-135m"
        await pilot.press("enter")
        status = screen.query_one("#shell-status")
        assert str(status.content).startswith("running: fetch smollm2-135m")
        assert "runs to its end once started" in str(status.content)  # no mid-call cancel
        assert screen.query_one("#shell-prompt-row").has_class("-busy")
        assert app.focused is prompt  # still typing
        prompt.value = "config"
        await pilot.press("enter")
        assert "waiting until `fetch smollm2-135m` is done" in log_text(screen)
        assert "1 waiting" in str(status.content)
        gate.set()
        await wait_until(pilot, lambda: screen.running is None and not screen.queue, 30, "both")
        await settle(pilot)
        text = log_text(screen)
        assert text.index("✓ Fetched smollm2-135m") < text.index("┃ setting")
        assert str(status.content).startswith("ready")
        assert not screen.query_one("#shell-prompt-row").has_class("-busy")


async def test_a_dry_run_asks_and_no_starts_nothing(tui_env, tiny_lm_pair):
    teacher, student = tiny_lm_pair
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_shell(pilot)
        await submit(
            pilot, f"set teacher {teacher}; set student {student}; set seq 32; set eval_blocks 2"
        )
        screen.query_one("#shell-input").value = "set batch 2; distill --dry-run --steps 2"
        await pilot.press("enter")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "ConfirmModal", 60, "ask")
        assert "Dry run configuration:" in log_text(screen)
        await pilot.press("n")
        await settle(pilot)
        text = log_text(screen)
        assert "Proceed with training? [y/N]: n" in text and "Not started." in text
        assert not Path("runs").exists() and app.selected_run is None


async def test_yes_starts_a_run_the_runs_screen_lists_and_watch_follows(tui_env, tiny_lm_pair):
    teacher, student = tiny_lm_pair
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_shell(pilot)
        setup = f"set teacher {teacher}; set student {student}; set seq 32; set batch 2"
        await submit(pilot, f"{setup}; set eval_blocks 2; set device cpu")
        await submit(pilot, "distill --dry-run --steps 3 --output runs/pane")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "ConfirmModal", 60, "ask")
        await pilot.press("y")
        await settle(pilot)
        assert "✓ Training in the background: runs/pane" in log_text(screen)
        assert app.selected_run == str(Path("runs/pane").resolve())
        screen.query_one("#shell-input").value = "watch"
        await pilot.press("enter")  # the watch streams in its own worker until the run ends
        await wait_until(pilot, lambda: "watching runs/pane" in log_text(screen), 30, "watch")
        await wait_until(
            pilot, lambda: "runs/pane: finished at step 3" in log_text(screen), 120, "the run"
        )
        assert "step 1: loss" in log_text(screen) and screen.watching is None
        await pilot.press("escape", "3")  # leave the prompt, then the Runs screen
        await wait_until(pilot, lambda: type(app.screen).__name__ == "RunsScreen", 10, "runs")
        table = app.screen.query_one("#runs-table")
        await wait_until(pilot, lambda: app.selected_run in table.rows, 10, "the run listed")


async def test_up_recalls_history_and_tab_completes(tui_env):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_shell(pilot)
        prompt = screen.query_one("#shell-input")
        await submit(pilot, "set batch 2")
        await submit(pilot, "set seq 32")
        await pilot.press("up")
        assert prompt.value == "set seq 32"
        await pilot.press("up", "up")  # stays on the oldest
        assert prompt.value == "set batch 2"
        await pilot.press("down", "down")
        assert prompt.value == ""  # back to what was being typed
        await pilot.press("m", "e", "tab")
        assert prompt.value == "memory "
        await pilot.press("minus", "minus", "b", "tab")
        assert prompt.value == "memory --batch "
        prompt.value = "h"
        await pilot.press("tab")  # history, help: listed in the log
        assert "history  help" in log_text(screen) or "help  history" in log_text(screen)
        await pilot.press("tab")
        assert prompt.value in ("history ", "help ")
        prompt.value = "set batch "
        prompt.cursor_position = len(prompt.value)
        await pilot.press("3")  # typed: the line is not empty
        assert prompt.value == "set batch 3" and app.screen is screen
        prompt.value = ""
        await pilot.press("2")  # on an empty prompt a digit is the app's: the Memory screen
        assert type(app.screen).__name__ == "MemoryScreen"


async def test_the_session_is_saved_and_the_terminal_shell_resumes_it(tui_env):
    from entrenar_tui.cli.main import app as cli

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_shell(pilot)
        first = screen.session.id
        await submit(pilot, "fetch minilm-l6")
        assert app.selected_model == "minilm-l6"  # the other screens follow the shell
        await submit(pilot, "set batch 3")
        saved = tui_env / ".entrenar" / "sessions" / f"{first}.json"
        session = json.loads(saved.read_text())
        assert session["model"] == "minilm-l6" and session["settings"]["batch"] == 3
        assert [item["command"] for item in session["history"]] == [
            "fetch minilm-l6",
            "set batch 3",
        ]
        await submit(pilot, "quit")
        assert app.is_running and screen.session.id != first  # a new session, same app
        words = "".join(log_text(screen).split())  # the long path wraps in the log
        assert "".join(f"Session {first} saved to {saved}".split()) in words
        assert screen.session.model == "minilm-l6"  # the new session takes the app's model
    result = CliRunner().invoke(cli, ["shell", "--resume", first, "-c", "config"])
    assert result.exit_code == 0, result.output
    assert "minilm-l6" in result.output and f"Session {first}" in result.output


def write_live_run(root: Path) -> Path:
    """A run directory whose run is alive (its pid is this test's) and has logged one step."""
    import os
    import socket

    run = root / "runs" / "live"
    run.mkdir(parents=True)
    status = {
        "state": "running",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "step": 1,
        "total_steps": 10,
        "started_at": "2026-12-01T10:00:00Z",
        "updated_at": "2026-12-01T10:00:01Z",
        "error": None,
    }
    (run / "status.json").write_text(json.dumps(status))
    line = {"kind": "train", "step": 1, "loss": 4.25, "tokens_per_s": 100.0}
    (run / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    return run


async def test_escape_stops_watching_while_the_run_goes_on(tui_env):
    run = write_live_run(tui_env)
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_shell(pilot)
        screen.query_one("#shell-input").value = "watch runs/live"
        await pilot.press("enter")
        await wait_until(pilot, lambda: "step 1: loss 4.2500" in log_text(screen), 30, "a line")
        assert "watching runs/live" in str(screen.query_one("#shell-status").content)
        await pilot.press("escape")
        assert "stopped watching runs/live (the run goes on)" in log_text(screen)
        assert screen.watching is None and app.focused is screen.query_one("#shell-input")
        with (run / "metrics.jsonl").open("a") as metrics:  # the run logs on, unwatched
            metrics.write(json.dumps({"kind": "train", "step": 2, "loss": 3.0}) + "\n")
        await settle(pilot)  # the stopped follower ends at that line
        assert "step 2" not in log_text(screen)
        await pilot.press("escape")  # nothing is watched: escape leaves the prompt
        assert app.focused is None


QUIT_WHILE_WATCHING = """
import asyncio, sys
sys.path.insert(0, {helpers!r})
from tuihelp import make_app, settle, wait_until

async def main():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("6")
        await settle(pilot)
        app.screen.query_one("#shell-input").value = "watch runs/live"
        await pilot.press("enter")
        log = app.screen.query_one("#shell-log")
        await wait_until(pilot, lambda: any("step 1" in line.text for line in log.lines), 30)

asyncio.run(main())
print("exited")
"""


def test_quitting_the_app_while_watching_does_not_wait_for_the_run(tui_env):
    """The follower waits inside core for the run's next write; the app's exit must not."""
    import subprocess
    import sys

    write_live_run(tui_env)  # alive and quiet: it never writes again
    script = QUIT_WHILE_WATCHING.format(helpers=str(Path(__file__).parent))
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0 and "exited" in out.stdout, out.stderr[-2000:]
