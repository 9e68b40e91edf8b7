"""`entrenar tui`: the full-screen app, or with `--run` the same job with no screen."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from .common import DebugOpt, JsonOpt


def tui(
    attach: Annotated[
        str | None, typer.Option("--attach", help="Open the app on this run directory.")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option("--start", help="Open the app and start this config (or `demo`) in Runs."),
    ] = None,
    run_config: Annotated[
        str | None,
        typer.Option("--run", help="Run this config with no screen (progress on stderr)."),
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Run directory for --start/--run.")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config field: --set training.max_steps=50."),
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option("--models", help="Also list the models in this folder (repeatable)."),
    ] = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Full-screen app: models, memory planner, runs, adapters, sweeps, shell."""
    if run_config is not None:
        from .distill import run_or_resume

        run_or_resume(run_config, output, overrides, None, json_out, debug)
        return
    from .common import run

    def open_app() -> None:
        from ..core.errors import InvalidInputError

        served = "TEXTUAL_DRIVER" in os.environ  # textual-serve drives the app over a pipe
        if not served and not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise InvalidInputError(
                "`entrenar tui` needs a terminal (stdin and stdout are not one)",
                "run the job headless: entrenar tui --run demo",
            )
        from ..app import EntrenarApp, LaunchOptions

        options = LaunchOptions(
            attach=attach,
            start=start,
            output=output,
            overrides=list(overrides or []),
            model_dirs=list(models or []),
        )
        app = EntrenarApp(options)
        _exit_when_terminal_goes(app)
        app.run()

    run(open_app, json_out=json_out, debug=debug, show=lambda r: None)


def _exit_when_terminal_goes(app) -> None:
    """SIGHUP (the SSH connection or the tmux session went away): leave at once. Runs the app
    started live in their own sessions and keep training."""
    import signal
    import threading

    def hang_up(signum, frame) -> None:
        # The terminal is gone, so there is nothing to restore; a clean exit is tried first.
        threading.Timer(0.5, lambda: os._exit(129)).start()
        app.exit()

    signal.signal(signal.SIGHUP, hang_up)
