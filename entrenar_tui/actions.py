"""One action table per screen (and one for the app): key bindings, the footer, the help screen
and the command palette are all built from it, so a key and its palette entry cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Action:
    key: str  # Textual key name: "1", "q", "space", "question_mark", "ctrl+p"
    action: str  # Textual action string: "switch_mode('runs')", "stop_run"
    description: str  # footer label and palette entry
    help: str = ""  # a longer line for the palette and the help screen
    show: bool = True  # shown in the footer
    priority: bool = False  # fires even when a widget (a table) would take the key

    @property
    def key_label(self) -> str:
        return {"question_mark": "?", "space": "space", "escape": "esc"}.get(self.key, self.key)


def bindings(actions: tuple[Action, ...]) -> list[Binding]:
    return [
        Binding(a.key, a.action, a.description, show=a.show, priority=a.priority) for a in actions
    ]
