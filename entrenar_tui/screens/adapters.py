"""Adapters screen (being built)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from .base import EntrenarScreen


class AdaptersScreen(EntrenarScreen):
    MODE = "adapters"
    TITLE_TEXT = "Adapters"

    def compose_body(self) -> ComposeResult:
        yield Static("Adapters", id="adapters-body")
