"""What a shell command returns for a front end to draw (the terminal REPL or the TUI's Shell
pane): a kind the printer knows, its data, a message, and at most one question."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass
class Output:
    kind: str  # what the printer draws: info, layers, validate, compare, memory, table, text, ...
    data: object = None
    message: str = ""
    confirm: str | None = None  # a question; answer with Evaluator.confirm(output, yes)
    follow: Callable[[], Iterator[str]] | None = None  # `watch`: lines until the run ends
    quit: bool = False


def table(title: str, header: list[str], rows: list[list], message: str = "", **extra) -> Output:
    """A `table` Output; `extra` keys ride along in the data for --json readers."""
    return Output("table", {"title": title, "header": header, "rows": rows, **extra}, message)
