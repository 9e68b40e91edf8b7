"""Models screen (being built)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from .base import EntrenarScreen


class ModelsScreen(EntrenarScreen):
    MODE = "models"
    TITLE_TEXT = "Models"

    def compose_body(self) -> ComposeResult:
        yield Static("Models", id="models-body")
