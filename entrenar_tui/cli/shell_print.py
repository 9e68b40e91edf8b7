"""How the terminal shell prints an evaluator Output (the items shell_render builds, the same
the TUI's Shell pane draws), and its tab completion."""

from __future__ import annotations

from prompt_toolkit.completion import Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from . import render


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
    from .inspect import print_view
    from .shell_render import output_view

    if output.kind == "follow":
        _follow(output)
    print_view(output_view(output))


class ShellCompleter(Completer):
    """Commands first, then the command's options, its argument words, packaged model names and
    paths (the words come from shell_render, as the Shell pane's do)."""

    def __init__(self) -> None:
        self.paths = PathCompleter(expanduser=True)

    def get_completions(self, document, complete_event):
        from .shell_render import complete_word

        text = document.text_before_cursor
        current, candidates = complete_word(text)
        if " " in text.rpartition(";")[2].lstrip() and not current.startswith("-"):
            word = Document(current, len(current))
            yield from self.paths.get_completions(word, complete_event)
        for candidate in candidates:
            yield Completion(candidate, start_position=-len(current))
