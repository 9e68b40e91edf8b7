"""Shell: the `entrenar shell` evaluator in a pane. Each command is echoed into a log and its
Output drawn with the CLI's own tables (cli/shell_render builds them for both). Commands run one
at a time in a thread, and lines typed meanwhile queue; `watch` streams in a thread of its own,
so the prompt keeps working while a run trains. The session is a real saved session, so
`entrenar shell --resume` picks up what was done here, and the current model is the app's."""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Label, RichLog, Static

from ..actions import Action, bindings
from ..cli.shell_render import complete_line, output_view
from ..core.errors import EntrenarError, bug_hint
from ..core.shell.evaluate import Evaluator
from ..core.shell.parse import ShellInputError, parse_each
from ..core.shell.session import Session, SessionStore
from ..widgets.prompt import CommandPrompt
from .base import EntrenarScreen

WELCOME = "Entrenar Shell - Interactive Distillation Environment"
KEYS_TEXT = (
    "Type `help` for the commands. tab completes, up/down recall earlier commands; on an empty "
    "prompt 1-6 switch screens and ? lists the keys; esc leaves the prompt, enter comes back."
)
# No command starts with these, so on an empty prompt they are the app's keys (screens, help).
APP_KEYS = frozenset({"1", "2", "3", "4", "5", "6", "question_mark"})
LOG_LINES = 20_000  # a long watch writes a line per step: the oldest lines go
BUSY_NOTE = "a command runs to its end once started; lines typed now wait their turn"


class CommandDone(Message):
    """A command's Output, or its error as (message, hint); what it changed in the session."""

    def __init__(
        self,
        output=None,
        error: tuple[str, str] | None = None,
        new_runs: list[str] | None = None,
        warning: str | None = None,
    ) -> None:
        super().__init__()
        self.output = output
        self.error = error
        self.new_runs = new_runs or []
        self.warning = warning


class WatchLine(Message):
    def __init__(self, token: int, line: str) -> None:
        super().__init__()
        self.token = token
        self.line = line


class WatchEnded(Message):
    def __init__(self, token: int, error: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.token = token
        self.error = error


class ConfirmModal(ModalScreen[bool]):
    """The shell's yes/no (distill --dry-run's "Proceed with training?"); no is the default."""

    BINDINGS = bindings(
        (
            Action("y", "answer(True)", "Yes"),
            Action("n,escape", "answer(False)", "No"),
        )
    )

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-form"):
            yield Static(f"{self.question} [y/N]", classes="pane-title")
            with Horizontal(classes="modal-row"):
                yield Button("Yes (y)", id="confirm-yes")
                yield Button("No (n)", id="confirm-no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


def _error_text(message: str, hint: str) -> Text:
    text = Text(f"error: {message}", style="bold red")
    if hint:
        text.append(f"\nhint: {hint}", style="red")
    return text


class ShellScreen(EntrenarScreen):
    MODE = "shell"
    TITLE_TEXT = "Shell"
    AUTO_FOCUS = "#shell-input"
    ACTIONS = (
        Action(
            "escape", "stop_watching", "Stop watch", "stop following a `watch` (the run goes on)"
        ),
        Action("enter", "focus_prompt", "Prompt", "back to the prompt", show=False),
        Action("ctrl+l", "clear_log", "Clear", "clear the output log (the session keeps it)"),
    )

    def __init__(self) -> None:
        super().__init__()
        self.store = SessionStore()
        self.session = Session(id=self.store.new_id())
        self.evaluator = Evaluator(self.session)
        self.queue: deque = deque()  # Commands (and parse errors) waiting their turn
        self.running: str | None = None  # the command a worker runs now
        self.asking = False  # a yes/no question is open
        self.watching: str | None = None  # the run `watch` follows
        self.watch_token = 0  # lines of a watch that was stopped carry an old token
        self._stop_watch = threading.Event()
        self.models_seen: tuple = (None, None)  # (model, teacher) the app was last told
        self.warned = False

    def compose_body(self) -> ComposeResult:
        with Vertical(id="shell-body"):
            yield RichLog(id="shell-log", wrap=True, min_width=20, max_lines=LOG_LINES)
            yield Static("", id="shell-status")
            with Horizontal(id="shell-prompt-row"):
                yield Label("entrenar>", id="shell-prompt-label")
                yield CommandPrompt(
                    self._history,
                    complete_line,
                    keys_when_empty=APP_KEYS,
                    id="shell-input",
                    placeholder="a command (help lists them)",
                    compact=True,
                )

    def on_mount(self) -> None:
        super().on_mount()
        self._banner()
        self.watch(self.app, "selected_model", self._app_model_changed)
        self._show_status()

    # ------------------------------------------------------------------ the log
    @property
    def log_view(self) -> RichLog:
        return self.query_one("#shell-log", RichLog)

    def _write(self, item) -> None:
        self.log_view.write(Text(item) if isinstance(item, str) else item)

    def _note(self, text: str) -> None:
        self.log_view.write(Text(text, style="dim"))

    def _banner(self, before: str | None = None) -> None:
        if before:
            self._note(before)
        self._write(Text(WELCOME, style="bold"))
        self._note(
            f"Session {self.session.id}, saved after each command "
            f"(`entrenar shell --resume {self.session.id}` continues it in a terminal)."
        )
        self._note(KEYS_TEXT)

    def _history(self) -> list[str]:
        return [item["command"] for item in self.session.history]

    def _show_status(self) -> None:
        session = self.session
        if self.running:
            state = f"running: {self.running} ({BUSY_NOTE})"
            if self.queue:
                state += f"; {len(self.queue)} waiting"
        elif self.asking:
            state = "answer the question: y or n"
        else:
            state = "ready"
        if self.watching:
            state += f" | watching {self.watching} (esc stops watching; the run goes on)"
        models = f"model {session.model or '-'}, teacher {session.teacher or '-'}"
        self.query_one("#shell-status", Static).update(f"{state} | {models}")
        self.query_one("#shell-prompt-row").set_class(bool(self.running or self.asking), "-busy")

    # ------------------------------------------------------------------ commands
    @on(CommandPrompt.Submitted, "#shell-input")
    def _submitted(self, event: CommandPrompt.Submitted) -> None:
        prompt = self.query_one("#shell-input", CommandPrompt)
        prompt.value = ""
        prompt.reset()
        text = event.value
        if not text.strip():
            return
        self._write(Text.assemble(("entrenar> ", "bold cyan"), (text, "bold")))
        self.queue.extend(parse_each(text))
        if self.running or self.asking:
            self._note(f"waiting until `{self.running or 'the question'}` is done")
        self._next()

    def _next(self) -> None:
        while self.queue and not (self.running or self.asking):
            item = self.queue.popleft()
            if isinstance(item, ShellInputError):
                self._write(_error_text(item.message, item.hint))
                continue
            self.running = item.text
            self.run_command(item)
        self._show_status()

    @work(thread=True, exclusive=True, group="shell-command")
    def run_command(self, command) -> None:
        self.post_message(self._execute(lambda: self.evaluator.run(command)))

    @work(thread=True, exclusive=True, group="shell-command")
    def run_confirm(self, output, yes: bool) -> None:
        self.post_message(self._execute(lambda: self.evaluator.confirm(output, yes)))

    def _execute(self, call) -> CommandDone:
        """In the worker: the call, then the session saved (as the terminal shell does)."""
        runs_before = len(self.session.runs)
        output, error = None, None
        try:
            output = call()
        except EntrenarError as exc:
            error = (exc.message, exc.hint)
        except Exception as exc:  # a bug must not take the app down: show it, go on
            error = (f"unexpected {type(exc).__name__}: {exc}", bug_hint())
        self.store.save(self.session)
        return CommandDone(
            output,
            error,
            new_runs=self.session.runs[runs_before:],
            warning=self.store.warning,
        )

    def on_command_done(self, message: CommandDone) -> None:
        self.running = None
        output = message.output
        if message.error is not None:
            self._write(_error_text(*message.error))
        elif output.quit:
            self._new_session()
        elif output.follow is not None:
            self._start_watch(output)
        else:
            for item in output_view(output):
                self._write(item)
            if output.confirm:
                self._ask(output)
        if message.new_runs:
            self.app.selected_run = str(Path(message.new_runs[-1]).resolve())
        if message.warning and not self.warned:
            self.warned = True
            self._write(Text(f"warning: {message.warning}", style="yellow"))
        self._share_models()
        self._next()

    def _ask(self, output) -> None:
        self.asking = True

        def answered(yes: bool | None) -> None:
            self._note(f"{output.confirm} [y/N]: {'y' if yes else 'n'}")
            self.asking = False
            self.running = f"{output.confirm} {'y' if yes else 'n'}"
            self.run_confirm(output, bool(yes))
            self._show_status()

        self.app.push_screen(ConfirmModal(output.confirm), answered)

    def _new_session(self) -> None:
        """`quit` here saves the session and starts a new one; the app goes on."""
        old = self.session.id
        where = self.store.path_of(old) if self.store.warning is None else "memory only"
        self.session = Session(id=self.store.new_id())
        self.evaluator = Evaluator(self.session)
        self.models_seen = (None, None)
        self.log_view.clear()
        self._banner(f"Session {old} saved to {where}; `entrenar shell --resume {old}`.")
        self._app_model_changed(self.app.selected_model)

    # ------------------------------------------------------------------ shared state
    def _share_models(self) -> None:
        """A model or teacher the shell changed becomes the app's selected model."""
        model, teacher = self.session.model, self.session.teacher
        seen_model, seen_teacher = self.models_seen
        self.models_seen = (model, teacher)
        changed = teacher if teacher != seen_teacher else None
        changed = model if model != seen_model else changed
        if changed and changed != self.app.selected_model:
            self.app.selected_model = changed

    def _app_model_changed(self, ref: str | None) -> None:
        """The app's model is the shell's while the shell has none of its own."""
        session = self.session
        if not ref or session.model or self.running:
            return
        session.model = ref
        session.teacher = session.teacher or ref
        self.models_seen = (session.model, session.teacher)
        self._note(f"current model: {ref} (selected in the app; `fetch` another to change it)")
        self._show_status()

    # ------------------------------------------------------------------ watch
    def _start_watch(self, output) -> None:
        self._stop_watch.set()  # a second `watch` replaces the first
        self.watch_token += 1
        self._stop_watch = threading.Event()
        self.watching = str(output.data)
        self._note(f"watching {self.watching}: esc stops watching (the run goes on)")
        threading.Thread(
            target=self._follow_lines,
            args=(output.follow, self.watch_token, self._stop_watch),
            name="shell-watch",
            daemon=True,
        ).start()

    def _follow_lines(self, follow, token: int, stop: threading.Event) -> None:
        """In a daemon thread, not a worker: the follower waits inside core between the run's
        writes and cannot be interrupted, and a worker's thread would hold the app's exit until
        the run wrote again. A stopped watch ends at its next line."""
        error = None
        try:
            for line in follow():
                if stop.is_set():
                    return
                self.post_message(WatchLine(token, line))
        except EntrenarError as exc:
            error = (exc.message, exc.hint)
        except Exception as exc:  # a bug in following ends the watch, not the app
            error = (f"unexpected {type(exc).__name__}: {exc}", bug_hint())
        if not stop.is_set():
            self.post_message(WatchEnded(token, error))

    def on_watch_line(self, message: WatchLine) -> None:
        if message.token == self.watch_token:
            self._write(message.line)

    def on_watch_ended(self, message: WatchEnded) -> None:
        if message.token != self.watch_token:
            return
        if message.error is not None:
            self._write(_error_text(*message.error))
        self.watching = None
        self._show_status()

    def action_stop_watching(self) -> None:
        if self.watching is None:
            self.set_focus(None)  # as everywhere else: escape leaves the field
            return
        self._note(f"stopped watching {self.watching} (the run goes on)")
        self._stop_watch.set()
        self.watch_token += 1
        self.watching = None
        self._show_status()

    def on_unmount(self) -> None:
        self._stop_watch.set()

    def action_focus_prompt(self) -> None:
        self.query_one("#shell-input", CommandPrompt).focus()

    def action_clear_log(self) -> None:
        self.log_view.clear()

    def on_command_prompt_candidates(self, message: CommandPrompt.Candidates) -> None:
        words = [line.rstrip().rpartition(" ")[2] or line.rstrip() for line in message.lines]
        self._note("  ".join(words))
