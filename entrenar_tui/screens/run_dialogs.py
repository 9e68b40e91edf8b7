"""The Runs screen's dialogs: new run (pick, edit, validate, start), export, attach."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from ..core.distill.config_lines import field_line
from ..core.errors import EntrenarError


@dataclass
class NewRunRequest:
    """What the dialog hands back: the config to run (a ref, or edited text) and where."""

    config_ref: str
    edited_text: str | None  # None: run `config_ref` as it is
    output: str | None


class ConfigChecked(Message):
    def __init__(self, problems: list[dict], error: EntrenarError | None) -> None:
        super().__init__()
        self.problems = problems
        self.error = error


class NewRunScreen(ModalScreen[NewRunRequest | None]):
    """Pick a config (or `demo`), edit it, validate it with each problem at its line, start."""

    BINDINGS = [("escape", "dismiss(None)", "Cancel"), ("ctrl+s", "start", "Start")]

    def __init__(self, config_ref: str = "demo") -> None:
        super().__init__()
        self.config_ref = config_ref
        self.loaded_text = ""

    def compose(self) -> ComposeResult:
        with Vertical(id="new-run"):
            yield Label("New run: config file or packaged example (demo)")
            with Horizontal(classes="row"):
                yield Input(self.config_ref, id="config-ref")
                yield Button("Load", id="load")
            yield TextArea("", id="config-text", show_line_numbers=True)
            yield Input("", placeholder="output directory (blank: automatic)", id="output")
            yield Static("", id="problems")
            with Horizontal(classes="row"):
                yield Button("Validate", id="validate")
                yield Button("Start", id="start", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self._load()

    def _load(self) -> None:
        from ..core.distill.config import resolve_config_path

        ref = self.query_one("#config-ref", Input).value.strip()
        path = resolve_config_path(ref)
        try:
            self.loaded_text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._show_problems([], f"cannot read {path}: {exc}")
            return
        self.config_ref = ref
        self.query_one("#config-text", TextArea).text = self.loaded_text
        self._show_problems([], None)

    def _edited(self) -> str | None:
        text = self.query_one("#config-text", TextArea).text
        return None if text == self.loaded_text else text

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"load": self._load, "validate": self.validate, "start": self.action_start}
        if event.button.id == "cancel":
            self.dismiss(None)
        elif event.button.id in actions:
            actions[event.button.id]()

    def action_start(self) -> None:
        output = self.query_one("#output", Input).value.strip() or None
        self.dismiss(NewRunRequest(self.config_ref, self._edited(), output))

    def validate(self) -> None:
        self.query_one("#problems", Static).update("validating (loads the models' headers)...")
        self._validate(self.config_ref, self._edited())

    @work(thread=True, exclusive=True, group="validate")
    def _validate(self, ref: str, edited: str | None) -> None:
        from ..core.runs.launch import run_entrenar_json

        with tempfile.TemporaryDirectory(prefix="entrenar-validate-") as tmp:
            if edited is not None:
                ref = str(Path(tmp) / "config.yaml")
                Path(ref).write_text(edited, encoding="utf-8")
            try:
                report = run_entrenar_json(["distill", "validate", "--config", ref], timeout=300)
            except EntrenarError as exc:
                self.post_message(ConfigChecked([], exc))
                return
        self.post_message(ConfigChecked(report.get("problems", []), None))

    def on_config_checked(self, message: ConfigChecked) -> None:
        error = message.error
        summary = f"{error.message} (hint: {error.hint})" if error is not None else None
        self._show_problems(message.problems, summary, checked=True)

    def _show_problems(self, problems: list[dict], error: str | None, checked=False) -> None:
        text = self.query_one("#config-text", TextArea).text
        lines = [self._problem_line(text, problem) for problem in problems]
        if error:
            lines.append(f"error: {error}")
        elif checked and not any(p.get("severity", "error") == "error" for p in problems):
            lines.append("ok: the config validates; start it with ctrl+s")
        first = field_line(text, str(problems[0].get("path", ""))) if problems else None
        if first is not None:
            self.query_one("#config-text", TextArea).move_cursor((first, 0))
        self.query_one("#problems", Static).update("\n".join(lines))

    @staticmethod
    def _problem_line(text: str, problem: dict) -> str:
        line = field_line(text, str(problem.get("path", "")))
        where = f"line {line + 1}: " if line is not None else ""
        hint = f" (hint: {problem['hint']})" if problem.get("hint") else ""
        severity = problem.get("severity", "error")
        return f"{severity}: {where}{problem.get('path')}: {problem.get('message')}{hint}"


class ExportScreen(ModalScreen[dict | None]):
    """Export the run's student through `distill export`."""

    BINDINGS = [("escape", "dismiss(None)", "Cancel")]
    FORMATS = ("gguf", "safetensors", "pth", "apr")

    def __init__(self, run_dir: str) -> None:
        super().__init__()
        self.run_dir = run_dir

    def compose(self) -> ComposeResult:
        name = Path(self.run_dir).name
        with Vertical(id="export-run"):
            yield Label(f"Export the student of {name}")
            yield Select(
                [(f, f) for f in self.FORMATS], value="gguf", id="format", allow_blank=False
            )
            yield Input(
                "q8_0", placeholder="quantize: q8_0|q4_0|f16 (gguf), blank: none", id="quantize"
            )
            yield Input(f"exports/{name}.gguf", id="output")
            with Horizontal(classes="row"):
                yield Button("Export", id="export", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_select_changed(self, event: Select.Changed) -> None:
        output = self.query_one("#output", Input)
        stem = Path(output.value).with_suffix("")
        output.value = str(stem) + ("" if event.value == "safetensors" else f".{event.value}")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "export":
            self.dismiss(None)
            return
        self.dismiss(
            {
                "format": str(self.query_one("#format", Select).value),
                "quantize": self.query_one("#quantize", Input).value.strip() or None,
                "output": self.query_one("#output", Input).value.strip(),
            }
        )


class AttachScreen(ModalScreen[str | None]):
    """Follow a run directory that is not under ./runs (another folder, a shared filesystem)."""

    BINDINGS = [("escape", "dismiss(None)", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="attach-run"):
            yield Label("Attach a run directory")
            yield Input("", placeholder="path/to/run", id="path")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)
