"""Curves for the Runs screen (textual-plotext): EMA smoothing over the faded raw curve, log-Y,
x by step or wall time, several runs overlaid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual_plotext import PlotextPlot

COLORS = ("cyan", "orange", "green", "magenta", "red", "blue", "yellow")
RAW_COLOR = "gray"


def compact(value: float) -> str:
    """Tick labels that stay narrow: 3.4M, 2.7k, 641, 1.98, 0.012."""
    magnitude = abs(value)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def y_ticks(low: float, high: float, log: bool, count: int = 4) -> list[float]:
    """Powers of ten on a log axis (the ends when fewer than two fall inside), else even steps."""
    if high <= low:
        return [low]
    if log and low > 0:
        powers = [
            10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        ]
        inside = [p for p in powers if low <= p <= high]
        return inside if len(inside) >= 2 else [low, high]
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def ema(values: Sequence[float], weight: float = 0.8) -> list[float]:
    """TensorBoard-style debiased exponential moving average (the first points are not dragged
    towards zero)."""
    out, average = [], 0.0
    for n, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**n))
    return out


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float]


class CachedPlot(PlotextPlot):
    """A plotext plot whose render is kept until `changed()` is called or the size or theme
    change: plotext rebuilds the whole figure in Python (15-150 ms at 120x40), and Textual asks
    for a render on every screen switch and relayout."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._version = 0
        self._cached: tuple[tuple, Text] | None = None
        self.failed_note = "too small to plot"

    def changed(self) -> None:
        self._version += 1
        self.refresh()

    def render(self):
        key = (self._version, self.size, self.app.theme)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        try:
            text = super().render()
        except IndexError:  # plotext's legend code on some tiny canvases: never crash the app
            text = Text(self.failed_note, style="dim")
        self._cached = (key, text)
        return text


class CurvePlot(CachedPlot):
    """`draw(series)` redraws everything; the options are the screen's keys (s, y, x)."""

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.smooth = True
        self.log_y = False
        self.x_label = "step"
        self.empty_note = "no data yet"
        self._series: list[Series] = []
        self.failed_note = f"{title}: too small to plot"

    def draw(self, series: list[Series]) -> None:
        self._series = series
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title)
        plt.xlabel(self.x_label)
        drawn = [s for s in series if s.x]
        for index, curve in enumerate(drawn):
            self._draw_one(curve, COLORS[index % len(COLORS)])
        values = [y for s in drawn for y in s.y if math.isfinite(y) and (y > 0 or not self.log_y)]
        if values:
            ticks = y_ticks(min(values), max(values), self.log_y)
            plt.yticks(ticks, [compact(t) for t in ticks])
        if not drawn:
            plt.text(self.empty_note, 0, 0, alignment="center")
            plt.xlim(-1, 1)
            plt.ylim(-1, 1)
        self.changed()

    def _draw_one(self, curve: Series, color: str) -> None:
        plt = self.plt
        points = [(x, y) for x, y in zip(curve.x, curve.y, strict=False) if math.isfinite(y)]
        if self.log_y:
            points = [(x, y) for x, y in points if y > 0]
            plt.yscale("log")
        if not points:
            return
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        marker = "braille"
        if self.smooth and len(ys) >= 8:  # a few evaluations are shown as they are
            plt.plot(xs, ys, color=RAW_COLOR, marker=marker)
            plt.plot(xs, ema(ys), color=color, marker=marker, label=curve.label)
        else:
            plt.plot(xs, ys, color=color, marker=marker, label=curve.label)
