"""Turn core results into rich tables, plain lines or JSON. The only place that prints."""

from __future__ import annotations

import json
import math
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table


@cache
def console():
    """rich is imported on first use: `--json` output never pays for it."""
    from rich.console import Console

    return Console(soft_wrap=True, highlight=False)


def err_line(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def line(text: str) -> None:
    console().print(text, markup=False)


def _clean(obj: Any) -> Any:
    """JSON has no NaN/Infinity: write them as strings so every consumer can parse the output."""
    if hasattr(obj, "to_dict"):
        return _clean(obj.to_dict())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(_clean(obj), default=str) + "\n")
    sys.stdout.flush()


def error(message: str, hint: str, code: int, json_out: bool) -> None:
    if json_out:
        emit_json({"error": {"message": message, "hint": hint, "code": code}})
        return
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def human_count(n: int | None) -> str:
    if n is None:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(key, "-" if value is None else str(value))
    return table


def table(
    title: str, columns: list[str], rows: list[list[Any]], right: set[int] | None = None
) -> Table:
    from rich.table import Table

    rich_table = Table(title=title, title_justify="left")
    right = right or set()
    for i, col in enumerate(columns):
        rich_table.add_column(col, justify="right" if i in right else "left", overflow="fold")
    for row in rows:
        rich_table.add_row(*("-" if v is None else str(v) for v in row))
    return rich_table


def show(*renderables: Any) -> None:
    for r in renderables:
        console().print(r)
