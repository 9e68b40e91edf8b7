"""The Models screen's dialogs: convert (format, quantization, output) and open (a path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Select, Static

from ..widgets.job import short_label

TARGETS = ("safetensors", "gguf", "apr", "pth")
QUANTIZE = ("keep", "f32", "f16", "bf16", "q8_0", "q4_0")


@dataclass
class ConvertRequest:
    target: str
    quantize: str | None
    output: str


def default_output(ref: str, target: str) -> str:
    """`name.apr`, `name.gguf`, `name.pth` or a `name-safetensors/` folder in the working dir."""
    name = Path(ref.rstrip("/")).name or "model"
    stem = (
        Path(name).stem if Path(name).suffix in (".safetensors", ".gguf", ".pth", ".apr") else name
    )
    return f"{stem}-safetensors" if target == "safetensors" else f"{stem}.{target}"


class ConvertModal(ModalScreen[ConvertRequest | None]):
    """Target format, quantization and output path for `inspect convert`."""

    BINDINGS = [("escape", "dismiss_none", "Cancel")]

    def __init__(self, ref: str) -> None:
        super().__init__()
        self.ref = ref

    def compose(self) -> ComposeResult:
        with Vertical(id="convert-form", classes="modal-form"):
            yield Static(f"Convert {short_label(self.ref, 50)}", classes="pane-title")
            yield Static("format, quantize, output: tab moves, enter converts, esc cancels")
            with Horizontal(classes="modal-row"):
                yield Select(
                    [(t, t) for t in TARGETS], value="apr", allow_blank=False, id="convert-to"
                )
                yield Select(
                    [(q, q) for q in QUANTIZE], value="keep", allow_blank=False, id="convert-quant"
                )
            yield Input(default_output(self.ref, "apr"), placeholder="output", id="convert-output")

    @on(Select.Changed, "#convert-to")
    def _target_changed(self, event: Select.Changed) -> None:
        output = self.query_one("#convert-output", Input)
        if output.value in {default_output(self.ref, t) for t in TARGETS}:
            output.value = default_output(self.ref, str(event.value))

    @on(Input.Submitted, "#convert-output")
    def _submitted(self) -> None:
        output = self.query_one("#convert-output", Input).value.strip()
        if not output:
            self.notify("give an output path", severity="warning")
            return
        quant = str(self.query_one("#convert-quant", Select).value)
        target = str(self.query_one("#convert-to", Select).value)
        self.dismiss(ConvertRequest(target, None if quant == "keep" else quant, output))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class PathModal(ModalScreen[str | None]):
    """One line of input: a path or reference (enter accepts, escape cancels)."""

    BINDINGS = [("escape", "dismiss_none", "Cancel")]

    def __init__(self, prompt: str, value: str = "") -> None:
        super().__init__()
        self.prompt, self.value = prompt, value

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-form"):
            yield Static(self.prompt, classes="pane-title")
            yield Input(self.value, id="path-input")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
