"""What every screen shares: the screen bar, the system panel, the footer, its action table, and
pausing its refresh timers while another screen is shown."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Header

from ..actions import Action, bindings
from ..widgets.keys import KeyBar
from ..widgets.system import SystemPanel
from ..widgets.tabs import ScreenTabs


class EntrenarScreen(Screen):
    MODE = ""
    TITLE_TEXT = ""
    ACTIONS: tuple[Action, ...] = ()

    def __init_subclass__(cls, **kwargs) -> None:
        cls.BINDINGS = bindings(cls.ACTIONS)  # before Textual's hook reads BINDINGS
        super().__init_subclass__(**kwargs)

    def __init__(self) -> None:
        super().__init__()
        self._refresh_timers: list[Timer] = []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="≡")
        yield ScreenTabs(self.MODE)
        yield from self.compose_body()
        yield SystemPanel()
        yield KeyBar(self.ACTIONS)

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.title = "entrenar"
        self.sub_title = self.TITLE_TEXT
        self.query_one(SystemPanel).show(self.app.system_history)

    def every(self, seconds: float, callback) -> Timer:
        """A refresh timer that runs only while this screen is shown."""
        timer = self.set_interval(seconds, callback)
        self._refresh_timers.append(timer)
        return timer

    def on_screen_suspend(self) -> None:
        for timer in self._refresh_timers:
            timer.pause()

    def on_screen_resume(self) -> None:
        for timer in self._refresh_timers:
            timer.resume()
        self.query_one(SystemPanel).show(self.app.system_history)
