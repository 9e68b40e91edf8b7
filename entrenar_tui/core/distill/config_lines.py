"""Where a config field is in the YAML text, so an editor can show each problem at its line."""

from __future__ import annotations

import re

_KEY = re.compile(r"^(?P<indent>\s*)(?:- )?(?P<key>[A-Za-z_][\w-]*)\s*:")


def field_line(text: str, path: str) -> int | None:
    """The 0-based line of dotted `path` (`training.batch_size`, `a.b[1][0]` -> `a.b`) in a block
    YAML mapping, or of its deepest present parent; None when not even the top key is there."""
    wanted = [part for part in re.sub(r"\[\d+\]", "", path).split(".") if part]
    stack: list[tuple[int, str]] = []  # (indent, key) of the mapping we are inside
    best: tuple[int, int] | None = None  # (depth matched, line)
    for number, line in enumerate(text.splitlines()):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _KEY.match(line)
        if match is None:
            continue
        indent = len(match.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group("key")))
        keys = [key for _, key in stack]
        depth = _common_prefix(keys, wanted)
        if depth == len(keys) and depth > 0 and (best is None or depth > best[0]):
            best = (depth, number)
            if depth == len(wanted):
                break
    return None if best is None else best[1]


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
