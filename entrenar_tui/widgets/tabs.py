"""The one-line screen bar: which of the six screens is shown, and the key for each."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

SCREENS = (
    ("models", "Models"),
    ("memory", "Memory"),
    ("runs", "Runs"),
    ("adapters", "Adapters"),
    ("sweeps", "Sweeps"),
    ("shell", "Shell"),
)


class ScreenTabs(Static):
    DEFAULT_CSS = """
    ScreenTabs { height: 1; background: $boost; }
    """

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def on_mount(self) -> None:
        text = Text()
        for number, (mode, label) in enumerate(SCREENS, start=1):
            style = "bold reverse" if mode == self.current else ""
            text.append(f" {number} {label} ", style=style)
            text.append(" ")
        text.append(" ? help  q quit", style="dim")
        self.update(text)
