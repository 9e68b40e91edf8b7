"""The key bar at the bottom of every screen: the screen's actions, from its action table.

A plain Static instead of Textual's Footer: the Footer recomposes one widget per binding on
every screen switch (28 widgets restyled per switch here: most of a switch's time, measured with
cProfile), while a screen's keys never change."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class KeyBar(Static):
    DEFAULT_CSS = """
    KeyBar { height: 1; background: $panel; color: $text-muted; }
    """

    def __init__(self, actions) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        for action in actions:
            if action.show:
                text.append(f" {action.key_label} ", style="bold reverse")
                text.append(f" {action.description} ")
        text.append(" ^p ", style="bold reverse")
        text.append(" palette ")
        super().__init__(text)
