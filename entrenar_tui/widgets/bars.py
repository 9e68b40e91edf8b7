"""A horizontal bar chart of a breakdown: one bar per term, with its size and its share.

It draws plain data (a label, a value and how to write the value) and knows nothing of what
the values mean, so any screen can chart any breakdown with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

EIGHTHS = " ▏▎▍▌▋▊▉"  # partial cells, so a bar's length is exact to 1/8 of a cell
COLORS = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta")
SHARE_WIDTH = 6  # " 55.3%"
MIN_BAR_WIDTH = 4


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    text: str  # the value as the reader should see it, e.g. "1.12 GiB"


def bar_cells(fraction: float, width: int) -> str:
    """`fraction` (0..1) of `width` cells in block characters, padded to `width`."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, rest = divmod(eighths, 8)
    cells = "█" * full + (EIGHTHS[rest] if rest else "")
    return cells.ljust(width)


class BreakdownBars(Widget):
    """Bars sized by each term's share of the sum; terms of zero are left out."""

    DEFAULT_CSS = """
    BreakdownBars { height: auto; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._bars: list[Bar] = []

    @property
    def bars(self) -> list[Bar]:
        return list(self._bars)

    def show(self, bars: Sequence[Bar]) -> None:
        self._bars = [b for b in bars if b.value > 0]
        self.refresh(layout=True)

    def render(self) -> Text:
        if not self._bars:
            return Text("")
        total = sum(b.value for b in self._bars)
        label_width = max(len(b.label) for b in self._bars)
        value_width = max(len(b.text) for b in self._bars)
        bar_width = max(
            MIN_BAR_WIDTH, self.size.width - label_width - value_width - SHARE_WIDTH - 3
        )
        text = Text(no_wrap=True, overflow="crop")
        for index, bar in enumerate(self._bars):
            share = bar.value / total
            if index:
                text.append("\n")
            text.append(bar.label.ljust(label_width) + " ")
            text.append(bar_cells(share, bar_width), style=COLORS[index % len(COLORS)])
            text.append(f" {bar.text.rjust(value_width)} {100 * share:5.1f}%")
        return text
