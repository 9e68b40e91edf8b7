"""What the shell shows for an evaluator Output, built once for both front ends: the terminal REPL
prints the items, the TUI's Shell pane writes them into its log. An item is a plain line (str,
never markup) or a rich renderable (the CLI's own tables). Also the words Tab completes, from
the command table and the packaged models."""

from __future__ import annotations

from pathlib import Path

from . import inspect as inspect_cli
from . import render


def memory_table(data: dict):
    """What is alive at each row's own peak: weights, gradients with optimizer state (and fp32
    master weights), activations; the total adds the runtime (or CUDA context)."""
    rows = [
        [
            row["precision"],
            render.human_bytes(row["model"]),
            render.human_bytes(row.get("state", 0)),
            render.human_bytes(row["activations"]),
            render.human_bytes(row["total"]),
        ]
        for row in data["rows"]
    ]
    columns = ["Precision", "Model", "Grads+optim", "Activations", "Total"]
    return render.table(data["title"], columns, rows, right={1, 2, 3, 4})


def plain_table(data: dict):
    return render.table(data["title"], data["header"], data["rows"])


def output_view(output) -> list:
    """The items of an Output: its table (by kind) and then its message, one item per line. A
    kind this module does not know (a newer command) shows its message alone; `follow` lines
    come from `output.follow()`, which each front end streams itself."""
    builders = {
        "info": inspect_cli.info_view,
        "layers": inspect_cli.layers_view,
        "validate": inspect_cli.validate_view,
        "compare": inspect_cli.compare_view,
        "memory": lambda data: [memory_table(data)],
        "table": lambda data: [plain_table(data)],
    }
    items = list(builders[output.kind](output.data)) if output.kind in builders else []
    if output.message:
        items.append(output.message)
    return items


# ---------------------------------------------------------------------- completion
def _argument_words(command: str, position: int) -> tuple[list[str], bool]:
    """The words an argument can be, and whether a path can be one too."""
    from ..core.models.resolve import PACKAGED
    from ..core.shell.commands import COMMANDS
    from ..core.shell.session import SETTINGS

    if command == "help":
        return list(COMMANDS), False
    if command == "set" and position == 0:
        return ["teacher", "student", *SETTINGS], False
    spec = COMMANDS.get(command)
    if position == 0 and spec is not None and spec.first_words:  # from the command table
        return list(spec.first_words), False
    return list(PACKAGED), True


def _candidates(text: str) -> tuple[str, list[str], bool]:
    from ..core.shell.commands import COMMANDS

    before, _, current = text.rpartition(";")[2].rpartition(" ")
    words = before.split()
    if not words:
        return current, list(COMMANDS), False
    if current.startswith("-"):
        spec = COMMANDS.get(words[0])
        return current, [f"--{name}" for name in spec.options] if spec else [], False
    position = sum(1 for word in words[1:] if not word.startswith("-"))
    spec = COMMANDS.get(words[0])
    if spec is None or position >= spec.max_args:
        return current, [], False
    return current, *_argument_words(words[0], position)


def complete_word(text: str) -> tuple[str, list[str]]:
    """(the word being typed at the end of `text`, the words it can become): commands first,
    then the command's options, its argument words and packaged model names."""
    current, candidates, _ = _candidates(text)
    return current, [word for word in candidates if word.startswith(current)]


def path_words(current: str, limit: int = 50) -> list[str]:
    """Files and folders that `current` can become (folders end with /)."""
    folder, _, stem = current.rpartition("/")
    base = Path(folder or ".").expanduser()
    try:
        entries = sorted(base.iterdir())[:1000]
    except OSError:
        return []
    prefix = f"{folder}/" if folder else ""
    words = [
        f"{prefix}{entry.name}{'/' if entry.is_dir() else ''}"
        for entry in entries
        if entry.name.startswith(stem) and (stem.startswith(".") or not entry.name.startswith("."))
    ]
    return words[:limit]


def complete_line(text: str) -> list[str]:
    """Whole lines `text` can become by completing its last word (the Shell pane's Tab); a
    finished word ends with a space, a folder with /."""
    current, candidates, paths = _candidates(text)
    words = [f"{word} " for word in candidates if word.startswith(current)]
    if paths:
        words += [word if word.endswith("/") else f"{word} " for word in path_words(current)]
    head = text[: len(text) - len(current)]
    return list(dict.fromkeys(head + word for word in words))
