"""Memory screen (being built)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from .base import EntrenarScreen


class MemoryScreen(EntrenarScreen):
    MODE = "memory"
    TITLE_TEXT = "Memory"

    def compose_body(self) -> ComposeResult:
        yield Static("Memory", id="memory-body")
