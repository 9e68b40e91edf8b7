"""Commands that are designed but not built yet: they exist so users see what is coming, and
each says so with exit code 2 instead of a confusing 'no such command'."""

from __future__ import annotations

import typer

from ..core.errors import NotBuiltError
from .common import run

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
BUILT = ("inspect", "lora", "distill", "bench", "tui")  # the sub-apps that work today


def _not_built(name: str, ctx: typer.Context) -> None:
    def call():
        raise NotBuiltError(
            f"`entrenar {name}` is not built yet in this version",
            f"available now: {', '.join(f'`entrenar {b}`' for b in BUILT)}; see `entrenar --help`",
        )

    json_out = "--json" in ctx.args
    run(call, json_out=json_out, debug=False, show=lambda r: None)


def planned_command(name: str):
    def handler(ctx: typer.Context) -> None:
        _not_built(name, ctx)

    handler.__doc__ = "Not built yet."
    return handler
