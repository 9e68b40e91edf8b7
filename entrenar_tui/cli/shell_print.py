"""How the shell prints an evaluator Output (the CLI's own tables where a CLI twin exists), and
its tab completion."""

from __future__ import annotations

from prompt_toolkit.completion import Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from . import render


def _memory(data: dict) -> None:
    rows = [
        [
            row["precision"],
            render.human_bytes(row["model"]),
            render.human_bytes(row["activations"]),
            render.human_bytes(row["total"]),
        ]
        for row in data["rows"]
    ]
    columns = ["Precision", "Model", "Activations", "Total"]
    render.show(render.table(data["title"], columns, rows, right={1, 2, 3}))


def _table(data: dict) -> None:
    render.show(render.table(data["title"], data["header"], data["rows"]))


def _follow(output) -> None:
    try:
        for line in output.follow():
            render.line(line)
    except KeyboardInterrupt:
        render.err_line("stopped watching (the run goes on)")


def print_output(output, json_out: bool) -> None:
    if json_out:
        if output.follow is not None:
            for line in output.follow():
                render.emit_json({"kind": "progress", "line": line})
            return
        render.emit_json({"kind": output.kind, "message": output.message, "data": output.data})
        return
    from . import inspect as inspect_cli

    printers = {
        "info": inspect_cli.show_info,
        "layers": inspect_cli.show_layers,
        "validate": inspect_cli.show_validate,
        "compare": inspect_cli.show_compare,
        "memory": _memory,
        "table": _table,
    }
    if output.kind == "follow":
        _follow(output)
    elif output.kind in printers:
        printers[output.kind](output.data)
    if output.message:
        render.line(output.message)


class ShellCompleter(Completer):
    """Commands first, then the command's options, packaged model names and paths."""

    def __init__(self) -> None:
        self.paths = PathCompleter(expanduser=True)

    def get_completions(self, document, complete_event):
        from ..core.models.resolve import PACKAGED
        from ..core.shell.commands import COMMANDS

        words = document.text_before_cursor.split()
        current = document.get_word_before_cursor(WORD=True)
        if len(words) <= 1 and not document.text_before_cursor.endswith(" "):
            candidates = list(COMMANDS)
        else:
            spec = COMMANDS.get(words[0]) if words else None
            options = [f"--{name}" for name in spec.options] if spec else []
            candidates = options if current.startswith("-") else [*PACKAGED, "teacher", "student"]
            if not current.startswith("-"):
                word = Document(current, len(current))
                yield from self.paths.get_completions(word, complete_event)
        for candidate in candidates:
            if candidate.startswith(current):
                yield Completion(candidate, start_position=-len(current))
