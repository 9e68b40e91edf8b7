"""Every screen at 80x24 and 120x40 with deterministic data (a recorded system history stands in
for the live sampler): no GPU, a GPU from recorded samples, and an error state. SVGs are in
__snapshots__/; update them with `pytest tests/snapshots --snapshot-update` and review the diff."""

from __future__ import annotations

import asyncio
import time

import pytest
from snapdata import write_recorded_runs

from conftest import write_recorded_sweep
from entrenar_tui.core.system import GpuSample, RecordedSampler, SystemSample

SIZES = [(80, 24), (120, 40)]

NO_GPU = SystemSample(
    time=0.0,
    cpu_percent=12.5,
    cpu_count=2,
    ram_used_bytes=6 * 2**30,
    ram_total_bytes=24 * 2**30,
    gpus=(),
    gpu_note="no NVIDIA GPU (no NVIDIA driver)",
)


def gpu_history() -> list[SystemSample]:
    """Eight recorded seconds of an H200 while a run warms up."""
    samples = []
    for second, util in enumerate((5, 20, 45, 70, 87, 90, 88, 87)):
        gpu = GpuSample(
            index=0,
            name="NVIDIA H200",
            utilization=float(util),
            memory_used_bytes=(20 + 6 * second) * 2**30,
            memory_total_bytes=141 * 2**30,
            temperature_c=40.0 + 3 * second,
            power_w=120.0 + 50 * second,
            power_limit_w=700.0,
        )
        samples.append(
            SystemSample(
                time=float(second),
                cpu_percent=30.0 + second,
                cpu_count=16,
                ram_used_bytes=40 * 2**30,
                ram_total_bytes=128 * 2**30,
                gpus=(gpu,),
            )
        )
    return samples


def make_app(samples=None, **options):
    from entrenar_tui.app import EntrenarApp, LaunchOptions

    sampler = RecordedSampler(samples or [NO_GPU], repeat=False)
    return EntrenarApp(LaunchOptions(**options), sampler=sampler, sample_interval=0.0)


def settled(count: int, extra=None):
    """run_before: every recorded sample shown and every worker done (then a frame)."""

    async def idle(app) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            busy = [w for w in app.workers if w.group != "system" and not w.is_finished]
            if len(app.system_history) >= count and not busy:
                return
            await asyncio.sleep(0.05)

    async def wait(pilot) -> None:
        await idle(pilot.app)
        if extra is not None:
            await extra(pilot)
            await idle(pilot.app)  # the workers the extra steps started (on a loaded machine
            # the screenshot was once taken while a sweep's analysis was still running)
        # A worker's result is a message whose handler may start another worker (the model list,
        # then its details), and tables lay out on the next refresh: on a loaded CI machine a
        # fixed pause once took the screenshot mid-chain. Wait until the screen stops changing.
        await stable(pilot)

    return wait


async def stable(pilot, quiet_checks: int = 3) -> None:
    """Until no worker runs and the rendered screen is the same over `quiet_checks` checks
    0.15 s apart (a 60 s bound)."""
    deadline = time.monotonic() + 60
    last, same = None, 0
    while same < quiet_checks and time.monotonic() < deadline:
        await pilot.pause(0.15)
        busy = [w for w in pilot.app.workers if w.group != "system" and not w.is_finished]
        screen = None if busy else pilot.app.export_screenshot()
        same = same + 1 if screen is not None and screen == last else 0
        last = screen


@pytest.fixture
def fixed_day(monkeypatch):
    """A shell session's id starts with today's date: the Shell pane shows it."""
    import datetime

    from entrenar_tui.core.shell import session

    class Day(datetime.date):
        @classmethod
        def today(cls):
            return cls(2026, 12, 1)

    monkeypatch.setattr(session, "date", Day)


async def frozen_cursor(pilot) -> None:
    """A focused field's cursor blinks: shown steadily, the screenshot does not depend on when
    it was taken."""
    for field in pilot.app.screen.query("Input"):
        field.cursor_blink = False


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("key", ["1", "2", "4", "5", "6"])
def test_screen_without_gpu(snap_compare, tui_env, fixed_day, key, size):
    extra = frozen_cursor if key == "6" else None
    assert snap_compare(make_app(), press=[key], terminal_size=size, run_before=settled(1, extra))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_runs_with_recorded_runs_and_a_gpu(snap_compare, tui_env, size):
    write_recorded_runs(tui_env)
    history = gpu_history()
    app = make_app(history)
    assert snap_compare(app, press=["3"], terminal_size=size, run_before=settled(len(history)))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_runs_error_state(snap_compare, tui_env, size):
    write_recorded_runs(tui_env)

    async def select_failed(pilot) -> None:
        await pilot.press("down")

    app = make_app()
    assert snap_compare(app, press=["3"], terminal_size=size, run_before=settled(1, select_failed))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_sweeps_with_a_recorded_sweep(snap_compare, tui_env, size):
    write_recorded_sweep(tui_env)

    async def analysed(pilot) -> None:
        await pilot.press("5")
        table = pilot.app.screen.query_one("#sweep-results")
        deadline = time.monotonic() + 60
        while table.row_count < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    app = make_app()
    assert snap_compare(app, terminal_size=size, run_before=settled(1, analysed))


@pytest.mark.parametrize("size", [(100, 30), (80, 24)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_shell_after_fetch_and_memory(snap_compare, tui_env, fixed_day, size):
    async def two_commands(pilot) -> None:
        await pilot.press("6")
        prompt = pilot.app.screen.query_one("#shell-input")
        for line in ("fetch smollm2-135m", "memory --batch 2 --seq 32"):
            prompt.value = line
            await pilot.press("enter")
            await pilot.pause()
            deadline = time.monotonic() + 60
            while pilot.app.screen.running and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await pilot.pause()
        await frozen_cursor(pilot)

    app = make_app()
    assert snap_compare(app, terminal_size=size, run_before=settled(1, two_commands))
