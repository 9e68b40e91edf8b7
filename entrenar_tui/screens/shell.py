"""Shell: the `entrenar shell` evaluator in a pane. The shell is a later issue; until it lands
this screen says so and shows the shared state the shell will read."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from .base import EntrenarScreen

PLACEHOLDER = (
    "The entrenar shell is not built yet in this version.\n\n"
    "When it lands, this pane runs the same evaluator as `entrenar shell` "
    "(fetch, inspect, memory, set student, distill --dry-run, ...) and shares this app's state."
)


class ShellScreen(EntrenarScreen):
    MODE = "shell"
    TITLE_TEXT = "Shell"

    def compose_body(self) -> ComposeResult:
        yield Static(PLACEHOLDER, id="shell-placeholder")
        yield Static("", id="shell-state")

    def on_mount(self) -> None:
        super().on_mount()
        for name in ("selected_model", "selected_config", "selected_run"):
            self.watch(self.app, name, self._show_state)

    def _show_state(self, _value=None) -> None:
        app = self.app
        self.query_one("#shell-state", Static).update(
            f"shared state: model={app.selected_model or '-'}  config={app.selected_config or '-'}  "
            f"run={app.selected_run or '-'}"
        )
