"""Helpers for the app's Pilot tests: a fixed system sampler, and waiting for workers."""

from __future__ import annotations

import asyncio
import time

from entrenar_tui.core.system import GpuSample, RecordedSampler, SystemSample

NO_GPU = SystemSample(
    time=0.0,
    cpu_percent=12.5,
    cpu_count=2,
    ram_used_bytes=6 * 2**30,
    ram_total_bytes=24 * 2**30,
    gpus=(),
    gpu_note="no NVIDIA GPU (no NVIDIA driver)",
)

H200 = GpuSample(
    index=0,
    name="NVIDIA H200",
    utilization=87.0,
    memory_used_bytes=71 * 2**30,
    memory_total_bytes=141 * 2**30,
    temperature_c=61.0,
    power_w=512.0,
    power_limit_w=700.0,
)


def gpu_samples() -> list[SystemSample]:
    """A recorded GPU history: utilisation ramping up while a run starts."""
    out = []
    for i, util in enumerate((5, 20, 45, 70, 87, 90, 88, 87)):
        gpu = GpuSample(**{**H200.__dict__, "utilization": float(util)})
        out.append(
            SystemSample(**{**NO_GPU.__dict__, "time": float(i), "gpus": (gpu,), "gpu_note": None})
        )
    return out


def make_app(samples: list[SystemSample] | None = None, **options):
    from entrenar_tui.app import EntrenarApp, LaunchOptions

    return EntrenarApp(LaunchOptions(**options), sampler=RecordedSampler(samples or [NO_GPU]))


async def settle(pilot, timeout: float = 60.0) -> None:
    """Wait for every worker except the system sampler (it never ends), then for the screen."""
    app = pilot.app
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [w for w in app.workers if w.group != "system" and not w.is_finished]
        if not busy:
            break
        await asyncio.sleep(0.05)
    await pilot.pause()


async def wait_until(pilot, condition, timeout: float = 120.0, what: str = "condition") -> None:
    """Poll `condition()` (generous bound; a test that waits never times a speed target)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
