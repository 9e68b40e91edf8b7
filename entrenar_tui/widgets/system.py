"""The system panel on every screen: CPU and RAM, and each NVIDIA GPU, with a short history."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int, top: float = 100.0) -> str:
    """The last `width` values (0..top) as block characters; pads on the left."""
    tail = list(values)[-width:]
    chars = [
        SPARK[min(len(SPARK) - 1, int(max(0.0, v) / top * (len(SPARK) - 1) + 0.5))] for v in tail
    ]
    return " " * (width - len(chars)) + "".join(chars)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}"


class SystemPanel(Static):
    """Fed by the app with `show(history)`; draws nothing by itself, so a hidden screen's panel
    costs nothing."""

    DEFAULT_CSS = """
    SystemPanel { height: auto; max-height: 5; padding: 0 1; background: $panel; }
    """

    def show(self, history: Sequence) -> None:
        if not history:
            self.update("system: sampling...")
            return
        last = history[-1]
        cpu = [s.cpu_percent for s in history]
        ram = [100.0 * s.ram_used_bytes / max(1, s.ram_total_bytes) for s in history]
        text = Text()
        text.append("CPU ", style="bold")
        text.append(f"{last.cpu_percent:5.1f}% {sparkline(cpu, 12)}  ")
        text.append("RAM ", style="bold")
        text.append(
            f"{_gib(last.ram_used_bytes)}/{_gib(last.ram_total_bytes)} GiB {sparkline(ram, 12)}"
        )
        if not last.gpus:
            text.append("\n")
            text.append(last.gpu_note or "no NVIDIA GPU", style="dim")
        for gpu in last.gpus:
            text.append("\n")
            self._gpu_line(text, gpu, [g for s in history for g in s.gpus if g.index == gpu.index])
        if text != getattr(self, "_shown", None):  # an update re-lays out the screen
            self._shown = text
            self.update(text)

    def _gpu_line(self, text: Text, gpu, series: list) -> None:
        text.append(f"GPU{gpu.index} ", style="bold")
        text.append(
            f"{gpu.name[:18]} {gpu.utilization:3.0f}% {sparkline([g.utilization for g in series], 8)} "
        )
        text.append(f"mem {_gib(gpu.memory_used_bytes)}/{_gib(gpu.memory_total_bytes)} GiB")
        if gpu.temperature_c is not None:
            text.append(f" {gpu.temperature_c:.0f}°C")
        if gpu.power_w is not None:
            limit = f"/{gpu.power_limit_w:.0f}" if gpu.power_limit_w else ""
            text.append(f" {gpu.power_w:.0f}{limit} W")
