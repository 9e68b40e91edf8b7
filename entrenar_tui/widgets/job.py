"""A one-shot child's place on a screen: an indeterminate bar while `entrenar ... --json` runs
in a worker, then its result or its error (message and hint, as the CLI prints them)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import ProgressBar, Static

from ..core.errors import EntrenarError, bug_hint

LABEL_WIDTH = 30


def error_text(error: EntrenarError) -> Text:
    """An error as the CLI shows it: the message, and the hint on its own line."""
    text = Text(f"error: {error.message}", style="bold red")
    if error.hint:
        text.append(f"\nhint: {error.hint}", style="dim")
    return text


def as_entrenar_error(exc: Exception) -> EntrenarError:
    """Anything a worker caught, as an error the screen can show (a bug keeps its type)."""
    if isinstance(exc, EntrenarError):
        return exc
    return EntrenarError(f"{type(exc).__name__}: {exc}", bug_hint())


def short_label(ref: str, width: int = LABEL_WIDTH) -> str:
    """A ref that fits a table column: ~ for home, the tail of long paths."""
    home = str(Path.home())
    shown = "~" + ref[len(home) :] if ref.startswith(home + "/") else ref
    return shown if len(shown) <= width else "…" + shown[-(width - 1) :]


class JobPanel(Vertical):
    """One child at a time: `run()` starts it in a thread worker; its JobDone bubbles up to the
    screen, which renders the outcome with `finish()`. Hidden until the first job."""

    DEFAULT_CSS = """
    JobPanel { height: auto; max-height: 8; padding: 0 1; background: $boost; }
    JobPanel ProgressBar { height: 1; }
    JobPanel VerticalScroll { height: auto; max-height: 7; }
    """
    busy = False

    def compose(self) -> ComposeResult:
        yield ProgressBar(total=None, show_eta=False, show_percentage=False)
        with VerticalScroll():  # a long problem list scrolls (tab reaches it)
            yield Static("", classes="job-result")

    def on_mount(self) -> None:
        self.display = False

    def run(self, job: str, ref: str, args: list[str], what: str) -> bool:
        """Start `entrenar ARGS --json`; False (and a warning) while another job runs."""
        if self.busy:
            self.notify("a job is running; wait for it to finish", severity="warning")
            return False
        self.busy = True
        self.display = True
        self.query_one(ProgressBar).update(total=None, progress=0)
        self.query_one(".job-result", Static).update(Text(f"{what} ...", style="italic"))
        self._run_child(job, ref, args)
        return True

    @work(thread=True, exclusive=True, group="job")
    def _run_child(self, job: str, ref: str, args: list[str]) -> None:
        """A child process: its scan, SVD or conversion never holds this process's GIL."""
        from ..core.runs.launch import run_entrenar_json

        try:
            self.post_message(JobDone(job, ref, run_entrenar_json(args), None))
        except Exception as exc:  # shown on the screen, never raised into the app
            self.post_message(JobDone(job, ref, None, as_entrenar_error(exc)))

    def finish(self, result: Text) -> None:
        self.busy = False
        self.query_one(ProgressBar).update(total=1, progress=1)
        self.query_one(".job-result", Static).update(result)

    @property
    def result(self) -> str:
        """The shown outcome as plain text (what a test or a screen reader sees)."""
        return str(self.query_one(".job-result", Static).content)


class JobDone(Message):
    """A child process finished: its JSON document, or the error it reported."""

    def __init__(self, job: str, ref: str, document: dict | None, error: EntrenarError | None):
        super().__init__()
        self.job, self.ref, self.document, self.error = job, ref, document, error
