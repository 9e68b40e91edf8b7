"""What every command shares: --json/--debug options, and turning errors into exit codes."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Annotated, Any

import typer

from ..core.errors import EXIT_BUG, EntrenarError, bug_hint
from . import render

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for unexpected errors.")]


def run(
    call: Callable[[], Any],
    *,
    json_out: bool,
    debug: bool,
    show: Callable[[Any], None],
    stream: bool = False,
) -> Any:
    """Run a core call; render its result, or its error, the same way for every command.

    `stream`: a long-running command that already printed JSON Lines events; its result is
    not printed again as a document."""
    try:
        result = call()
    except EntrenarError as exc:
        if debug:
            traceback.print_exc(file=sys.stderr)
        render.error(exc.message, exc.hint, exc.exit_code, json_out)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        render.error(
            "interrupted", "no partial output was kept: every write is atomic", 130, json_out
        )
        raise typer.Exit(130) from None
    except Exception as exc:  # an unexpected bug: one line, traceback only with --debug
        if debug:
            traceback.print_exc(file=sys.stderr)
        render.error(f"{type(exc).__name__}: {exc}", bug_hint(), EXIT_BUG, json_out)
        raise typer.Exit(EXIT_BUG) from None
    if json_out and stream:
        return result
    if json_out:
        render.emit_json(result.to_dict() if hasattr(result, "to_dict") else result)
    else:
        show(result)
    return result
