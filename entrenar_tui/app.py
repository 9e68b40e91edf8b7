"""EntrenarApp: six screens over the core, one shared state, one action table.

Workers only post messages; the app and its screens own state. torch and transformers are never
imported here: heavy work runs in child processes (core/runs/launch.py).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.message import Message
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Static

from .actions import Action, bindings
from .widgets.table import Table

# Every screen's styles load with the app: a screen that brought its own CSS_PATH made Textual
# re-parse and re-apply the whole stylesheet on its first show (a 100-200 ms stall, measured).
STYLES_DIR = Path(__file__).parent / "styles"
STYLES = [
    STYLES_DIR / f"{name}.tcss"
    for name in ("app", "models", "memory", "runs", "adapters", "sweeps", "shell")
]
STALLS_ENV = "ENTRENAR_TUI_STALLS"
SAMPLE_INTERVAL_S = 1.0  # NVML answers faster than this are not meaningful
HISTORY = 60

APP_ACTIONS = (
    Action("1", "switch_mode('models')", "Models", "packaged, local and cached models"),
    Action("2", "switch_mode('memory')", "Memory", "the memory planner"),
    Action("3", "switch_mode('runs')", "Runs", "distillation runs"),
    Action("4", "switch_mode('adapters')", "Adapters", "LoRA adapters"),
    Action("5", "switch_mode('sweeps')", "Sweeps", "benchmark sweeps"),
    Action("6", "switch_mode('shell')", "Shell", "the entrenar shell"),
    Action("question_mark", "help", "Help", "every key of this screen"),
    Action("d", "toggle_theme", "Theme", "switch between the dark and the light theme", show=False),
    Action("escape", "leave_field", "Leave field", "leave a text field", show=False),
    Action("q", "quit", "Quit", "quit (runs keep training)"),
)


@dataclass
class LaunchOptions:
    """What `entrenar tui` was asked to do on start."""

    attach: str | None = None
    start: str | None = None
    output: str | None = None
    overrides: list[str] = field(default_factory=list)
    model_dirs: list[str] = field(default_factory=list)
    runs_dir: str = "runs"


class StallMonitor:
    """How late the event loop runs a 20 ms timer: any lateness is time the UI could not answer
    a key. Enabled with ENTRENAR_TUI_STALLS=FILE (the benchmark), written there on exit."""

    TICK_S = 0.02

    def __init__(self, app: App) -> None:
        self.late_ms: list[float] = []
        self.long: list[tuple[float, float]] = []  # (seconds since start, ms late) over 50 ms
        self._start = self._last = time.perf_counter()
        app.set_interval(self.TICK_S, self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        late = max(0.0, (now - self._last - self.TICK_S) * 1000)
        self.late_ms.append(late)
        if late > 50:
            self.long.append((round(now - self._start, 2), round(late, 1)))
        self._last = now

    def write(self, path: str, first_frame_s: float | None) -> None:
        import json

        ordered = sorted(self.late_ms) or [0.0]
        summary = {
            "ticks": len(self.late_ms),
            "max_ms": ordered[-1],
            "p99_ms": ordered[int(0.99 * (len(ordered) - 1))],
            "over_50ms": sum(1 for v in ordered if v > 50),
            "first_frame_s": first_frame_s,
            "long": self.long,
        }
        Path(path).write_text(json.dumps(summary))


class SystemSampled(Message):
    def __init__(self, sample) -> None:
        super().__init__()
        self.sample = sample


class HelpScreen(ModalScreen):
    BINDINGS = [("escape,question_mark,q", "dismiss", "Close")]

    def __init__(self, actions: list[Action]) -> None:
        super().__init__()
        self.actions = actions

    def compose(self) -> ComposeResult:
        table = Table(id="help-table", cursor_type="row")
        table.add_columns("key", "action", "what it does")
        for a in self.actions:
            table.add_row(a.key_label, a.description, a.help)
        yield Static("Keys (escape closes; every entry is also in the palette, ctrl+p)")
        yield table


class ActionCommands(Provider):
    """The command palette: the current screen's actions and the app's, from the same table."""

    def _actions(self) -> list[tuple[Action, object]]:
        screen = self.app.screen
        own = [(a, screen) for a in getattr(screen, "ACTIONS", ())]
        return own + [(a, self.app) for a in APP_ACTIONS if a.action != "leave_field"]

    def _hit_text(self, action: Action) -> str:
        return f"{action.description} ({action.key_label})"

    async def discover(self) -> Hits:
        for action, target in self._actions():
            run = partial(target.run_action, action.action)
            yield DiscoveryHit(self._hit_text(action), run, help=action.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for action, target in self._actions():
            text = self._hit_text(action)
            score = max(matcher.match(text), matcher.match(action.help))
            if score > 0:
                run = partial(target.run_action, action.action)
                yield Hit(score, matcher.highlight(text), run, help=action.help)


def _screen(module: str, name: str):
    """A mode's screen factory: the screen's module is imported the first time it is shown, so
    start-up pays only for the screen it opens on."""

    def make():
        from importlib import import_module

        return getattr(import_module(f".screens.{module}", __package__), name)()

    return make


class EntrenarApp(App):
    TITLE = "entrenar"
    CSS_PATH = STYLES
    MODES = {
        "models": _screen("models", "ModelsScreen"),
        "memory": _screen("memory", "MemoryScreen"),
        "runs": _screen("runs", "RunsScreen"),
        "adapters": _screen("adapters", "AdaptersScreen"),
        "sweeps": _screen("sweeps", "SweepsScreen"),
        "shell": _screen("shell", "ShellScreen"),
    }
    DEFAULT_MODE = "models"
    BINDINGS = bindings(APP_ACTIONS)
    COMMANDS = App.COMMANDS | {ActionCommands}

    # The shared state: every screen reads and sets these, so they agree.
    selected_model: reactive[str | None] = reactive(None)
    selected_config: reactive[str | None] = reactive(None)
    selected_run: reactive[str | None] = reactive(None)
    selected_sweep: reactive[str | None] = reactive(None)

    def __init__(
        self,
        options: LaunchOptions | None = None,
        sampler=None,
        sample_interval: float = SAMPLE_INTERVAL_S,
    ) -> None:
        self.options = options or LaunchOptions()
        if self.options.attach or self.options.start:
            self.DEFAULT_MODE = "runs"  # open there directly: the Models screen is not built
        super().__init__()
        self.sampler = sampler
        self.sample_interval = sample_interval
        self.system_history: deque = deque(maxlen=HISTORY)
        self.started_at = time.perf_counter()
        self.first_frame_s: float | None = None
        self._stop_sampling = threading.Event()
        self.stalls: StallMonitor | None = None

    def on_mount(self) -> None:
        self.sample_system()
        self.call_after_refresh(self._first_frame)
        if os.environ.get(STALLS_ENV):
            self.stalls = StallMonitor(self)

    def _first_frame(self) -> None:
        self.first_frame_s = time.perf_counter() - self.started_at
        self.log(f"first frame after {self.first_frame_s * 1000:.0f} ms")
        self._import_screens()

    @work(thread=True, group="prewarm")
    def _import_screens(self) -> None:
        """After the first frame, import the other screens' modules (and plotext, numpy) off the
        event loop, so a first switch to a screen only composes it."""
        from importlib import import_module

        for module in ("runs", "memory", "models", "adapters", "sweeps", "shell"):
            import_module(f".screens.{module}", __package__)
        self.call_from_thread(self._freeze_heap)

    def _freeze_heap(self) -> None:
        """Move what start-up allocated (modules, styles, widgets) out of the garbage collector's
        reach: a full collection over it paused the event loop for 100-150 ms (measured)."""
        import gc

        gc.collect()
        gc.freeze()

    @work(thread=True, exclusive=True, group="system")
    def sample_system(self) -> None:
        """One sample a second in a thread (NVML can block); results go out as messages."""
        if self.sampler is None:
            from .core.system import SystemSampler

            self.sampler = SystemSampler()
        try:
            while not self._stop_sampling.is_set():
                sample = self.sampler.sample()
                if sample is None:  # a recorded history that has been played
                    break
                self.post_message(SystemSampled(sample))
                self._stop_sampling.wait(self.sample_interval)
        finally:
            self.sampler.close()

    def on_system_sampled(self, message: SystemSampled) -> None:
        self.system_history.append(message.sample)
        if not self.screen_stack:  # a sample that lands before the first screen or during exit
            return
        from .widgets.system import SystemPanel

        for panel in self.screen.query(SystemPanel):
            panel.show(self.system_history)

    def action_help(self) -> None:
        screen = self.screen
        self.push_screen(HelpScreen([*getattr(screen, "ACTIONS", ()), *APP_ACTIONS]))

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def action_leave_field(self) -> None:
        self.screen.set_focus(None)

    def action_quit(self) -> None:
        self._stop_sampling.set()
        self.exit()

    def on_unmount(self) -> None:
        self._stop_sampling.set()
        if self.stalls is not None:
            self.stalls.write(os.environ[STALLS_ENV], self.first_frame_s)
