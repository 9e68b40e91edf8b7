"""A command line for a pane: Up/Down walk back through earlier commands, Tab completes the last
word (the common prefix first; pressed again it steps through the candidates), and the first
candidate shows as a grey suggestion that right-arrow accepts. On an empty line the keys in
`keys_when_empty` are not typed but go on to the screen's and the app's bindings. It knows
nothing of what it completes: the screen passes `history()` and `complete(text) -> lines`."""

from __future__ import annotations

import os
from collections.abc import Callable

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.suggester import Suggester
from textual.widgets import Input


class LineSuggester(Suggester):
    def __init__(self, complete: Callable[[str], list[str]]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.complete = complete

    async def get_suggestion(self, value: str) -> str | None:
        if not value.strip():
            return None
        lines = self.complete(value)
        return lines[0].rstrip() if lines else None


class CommandPrompt(Input):
    BINDINGS = [
        Binding("up", "recall(-1)", "Earlier command", show=False),
        Binding("down", "recall(1)", "Later command", show=False),
        Binding("tab", "complete", "Complete", show=False),
    ]

    class Candidates(Message):
        """Tab found several completions and could not narrow them: the screen lists them."""

        def __init__(self, lines: list[str]) -> None:
            super().__init__()
            self.lines = lines

    def __init__(
        self,
        history: Callable[[], list[str]],
        complete: Callable[[str], list[str]],
        keys_when_empty: frozenset[str] = frozenset(),
        **kwargs,
    ) -> None:
        super().__init__(suggester=LineSuggester(complete), **kwargs)
        self.keys_when_empty = keys_when_empty
        self.history = history
        self.complete = complete
        self._recall_at: int | None = None  # the history entry shown, while walking it
        self._draft = ""  # what was typed before walking the history
        self._menu: list[str] = []  # the candidates Tab steps through
        self._menu_at = -1
        self._shown: str | None = None  # the value this widget last set itself

    def _passes(self, key: str) -> bool:
        return not self.value and key in self.keys_when_empty

    def check_consume_key(self, key: str, character: str | None) -> bool:
        return not self._passes(key) and super().check_consume_key(key, character)

    async def _on_key(self, event: events.Key) -> None:
        if self._passes(event.key):
            event.prevent_default()  # not typed: the key goes on to the screen's and app's keys

    def _show(self, text: str) -> None:
        self._shown = text
        self.value = text
        self.cursor_position = len(text)

    def _edited(self) -> bool:
        """Whether the user typed since this widget last set the value."""
        return self.value != self._shown

    def reset(self) -> None:
        """Forget the history walk and the completion menu (after a submit)."""
        self._recall_at, self._menu, self._menu_at, self._shown = None, [], -1, None

    def action_recall(self, step: int) -> None:
        entries = _without_repeats(self.history())
        if not entries:
            return
        if self._recall_at is None or self._edited():
            if step > 0:
                return
            self._draft, self._recall_at = self.value, len(entries)
        index = max(0, self._recall_at + step)
        if index >= len(entries):
            self._recall_at = None
            self._show(self._draft)
            return
        self._recall_at = index
        self._show(entries[index])

    def action_complete(self) -> None:
        if self._menu and not self._edited():
            self._menu_at = (self._menu_at + 1) % len(self._menu)
            self._show(self._menu[self._menu_at])
            return
        self._menu, self._menu_at = [], -1
        lines = self.complete(self.value)
        if not lines:
            return
        prefix = os.path.commonprefix(lines)
        if len(lines) == 1 or len(prefix) > len(self.value):
            self._show(lines[0] if len(lines) == 1 else prefix)
            return
        self._menu, self._shown = lines, self.value
        self.post_message(self.Candidates(lines))


def _without_repeats(entries: list[str]) -> list[str]:
    """The history without a command repeated right after itself (as shells keep it)."""
    return [entry for i, entry in enumerate(entries) if i == 0 or entry != entries[i - 1]]
