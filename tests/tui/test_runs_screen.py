"""The Runs screen with real runs: started from the screen, stopped and resumed, attached after a
headless start, and a failed run's error. Each run is a real `entrenar distill run` child."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tuihelp import make_app, settle, wait_until

from conftest import write_config
from entrenar_tui.core.runs.follow import read_run

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def tiny_config(path, teacher, student, **training):
    """The distill tests' tiny config, 16 steps with two evaluations unless told otherwise."""
    return write_config(path, teacher, student, **{"max_steps": 16, "eval_every": 8, **training})


def runs_screen(app):
    from entrenar_tui.screens.runs import RunsScreen

    assert isinstance(app.screen, RunsScreen)
    return app.screen


def plotted(screen, plot_id: str) -> int:
    """Points drawn in a plot (the curves' y values), read back from the widget."""
    from entrenar_tui.widgets.plot import CurvePlot

    return sum(len(s.y) for s in screen.query_one(plot_id, CurvePlot)._series)


async def test_start_from_the_screen_follows_the_run_to_the_end(tui_env, tiny_lm_pair):
    teacher, student = tiny_lm_pair
    config = tiny_config(tui_env / "tiny.yaml", teacher, student)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause()
        dialog = app.screen
        assert type(dialog).__name__ == "NewRunScreen", type(app.screen).__name__
        dialog.query_one("#config-ref").value = str(config)
        await pilot.click("#load")
        await pilot.pause()
        assert "teacher" in dialog.query_one("#config-text").text
        dialog.query_one("#output").value = str(tui_env / "runs" / "from-screen")
        await pilot.click("#start")
        screen = runs_screen(app)
        run_dir = tui_env / "runs" / "from-screen"
        await wait_until(pilot, lambda: plotted(screen, "#loss-plot") >= 2, what="a plotted loss")
        progress = screen.query_one("#run-progress")
        await wait_until(pilot, lambda: read_run(run_dir).state == "finished", what="finished")
        await wait_until(pilot, lambda: progress.progress == 16, what="progress 16/16")
        info = lambda: str(screen.query_one("#run-info").render())  # noqa: E731
        await wait_until(pilot, lambda: info().startswith("finished"), what="finished shown")
        assert plotted(screen, "#loss-plot") >= 16
        assert plotted(screen, "#eval-plot") >= 2
        assert "held-out ppl" in info()


async def test_stop_then_resume_from_the_screen(tui_env, tiny_lm_pair):
    teacher, student = tiny_lm_pair
    config = tiny_config(tui_env / "long.yaml", teacher, student, max_steps=400, eval_every=None)
    run_dir = tui_env / "runs" / "long"
    app = make_app(start=str(config), output=str(run_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = runs_screen(app)
        await wait_until(pilot, lambda: read_run(run_dir).state == "running", what="running")
        await wait_until(pilot, lambda: plotted(screen, "#loss-plot") >= 1, what="a loss point")
        await pilot.press("t")
        await wait_until(pilot, lambda: read_run(run_dir).state == "stopped", what="stopped")
        stopped_at = read_run(run_dir).step
        assert 0 < stopped_at < 400
        assert (run_dir / "checkpoints" / f"step-{stopped_at:06d}").is_dir()
        await pilot.press("r")
        await wait_until(
            pilot, lambda: read_run(run_dir).step > stopped_at, what="resumed training"
        )
        await pilot.press("t")
        await wait_until(pilot, lambda: read_run(run_dir).state == "stopped", what="stopped again")
    steps = [
        json.loads(line)["step"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "train"
    ]
    assert len(steps) == len(set(steps)), "each step once after a resume"


async def test_attach_to_a_run_started_headless(tui_env, tiny_lm_pair):
    teacher, student = tiny_lm_pair
    config = tiny_config(tui_env / "headless.yaml", teacher, student)
    run_dir = tui_env / "elsewhere" / "headless"
    done = subprocess.run(
        [sys.executable, "-m", "entrenar_tui.cli.main", "tui", "--run", str(config)]
        + ["--output", str(run_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line)["event"] for line in done.stdout.splitlines()]
    assert events[-1] == "end" and "train" in events
    app = make_app(attach=str(run_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = runs_screen(app)
        await settle(pilot)
        await wait_until(pilot, lambda: plotted(screen, "#loss-plot") >= 16, what="the curve")
        assert app.selected_run == str(run_dir.resolve())
        assert "finished" in str(screen.query_one("#run-info").render())


async def test_a_failed_run_shows_its_error_and_hint(tui_env, tiny_lm_pair):
    teacher, _ = tiny_lm_pair
    config = tiny_config(tui_env / "bad.yaml", teacher, tui_env / "no-such-student")
    run_dir = tui_env / "runs" / "bad"
    app = make_app(start=str(config), output=str(run_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = runs_screen(app)
        await wait_until(pilot, lambda: read_run(run_dir).state == "failed", what="failed")
        await wait_until(
            pilot, lambda: "error:" in str(screen.query_one("#run-info").render()), what="error"
        )
        info = str(screen.query_one("#run-info").render())
        assert "no-such-student" in info and "hint:" in info
        await pilot.press("1")
        await pilot.press("3")
        assert app.is_running


async def test_attaching_a_run_under_runs_shows_it_once(tui_env):
    """`entrenar tui --attach runs/a` on a run the screen also finds under ./runs: one row, and
    it is the selected one."""
    from textual.widgets import DataTable

    run_dir = tui_env / "runs" / "a"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("teacher:\n  model_id: smollm2-135m\n")
    status = {"state": "stopped", "pid": 1, "host": "elsewhere", "step": 18, "total_steps": 500}
    (run_dir / "status.json").write_text(json.dumps(status))
    app = make_app(attach="runs/a")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = runs_screen(app)
        await settle(pilot)
        table = screen.query_one("#runs-table", DataTable)
        assert [key.value for key in table.rows] == [str(run_dir.resolve())]
        assert app.selected_run == str(run_dir.resolve())


async def test_a_newly_selected_run_never_shows_the_previous_runs_curves(tui_env):
    """Selecting a run with no metrics yet (`tui --start`, an attach) used to leave the previous
    run's loss curve on screen under the new run's name; a mark shows on the run's row."""
    from textual.widgets import DataTable

    old = tui_env / "runs" / "old"
    old.mkdir(parents=True)
    (old / "config.yaml").write_text("teacher:\n  model_id: smollm2-135m\n")
    status = {"state": "stopped", "pid": 1, "host": "elsewhere", "step": 3, "total_steps": 3}
    (old / "status.json").write_text(json.dumps(status))
    lines = [{"kind": "train", "step": step, "loss": 3.0 - step} for step in (1, 2, 3)]
    (old / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await pilot.pause()
        screen = runs_screen(app)
        await settle(pilot)
        await wait_until(pilot, lambda: plotted(screen, "#loss-plot") == 3, what="old's curve")
        new = tui_env / "runs" / "new"
        new.mkdir()
        (new / "config.yaml").write_text("teacher:\n  model_id: smollm2-135m\n")
        (new / "status.json").write_text(json.dumps({**status, "state": "running", "step": 0}))
        screen.attach_dir(new)
        await settle(pilot)
        assert app.selected_run == str(new.resolve())
        assert plotted(screen, "#loss-plot") == 0
        await pilot.press("space")
        await pilot.pause()
        table = screen.query_one("#runs-table", DataTable)
        assert table.get_row(str(new.resolve()))[0] == "●"


def test_runs_started_the_same_day_are_told_apart_in_the_list():
    from entrenar_tui.screens.runs import run_label

    first, second = run_label("demo-20261201-093012"), run_label("demo-20261201-174501")
    assert first != second and len(first) <= 16
    assert first == "demo 12-01 09:30" and run_label("my-run") == "my-run"
