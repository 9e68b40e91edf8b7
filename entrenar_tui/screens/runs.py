"""Runs screen (being built)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from .base import EntrenarScreen


class RunsScreen(EntrenarScreen):
    MODE = "runs"
    TITLE_TEXT = "Runs"

    def compose_body(self) -> ComposeResult:
        yield Static("Runs", id="runs-body")
