"""The `entrenar` command and its console-script aliases (`entrenar-inspect` == `entrenar inspect`)."""

from __future__ import annotations

import os
from typing import Annotated

# pydantic (the distill config) discovers plugins by scanning every installed distribution's
# entry points (~50 ms on first use). entrenar uses no pydantic plugins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import typer  # noqa: E402

from .. import __version__
from . import bench as bench_cli
from . import distill as distill_cli
from . import inspect as inspect_cli
from . import lora as lora_cli
from . import shell as shell_cli
from . import tui as tui_cli

app = typer.Typer(
    name="entrenar",
    help="Distillation, LoRA planning, model inspection and conversion for transformer models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"entrenar {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """entrenar: compress and adapt transformer models."""


app.add_typer(inspect_cli.app, name="inspect")
distill_app = distill_cli.app
lora_app = lora_cli.app
bench_app = bench_cli.app
app.add_typer(distill_app, name="distill")
app.add_typer(lora_app, name="lora")
app.add_typer(bench_app, name="bench")
app.command("shell")(shell_cli.shell)
app.command("tui")(tui_cli.tui)


def main() -> None:
    app()


def inspect_main() -> None:
    inspect_cli.app(prog_name="entrenar-inspect")


def distill_main() -> None:
    distill_app(prog_name="entrenar-distill")


def lora_main() -> None:
    lora_app(prog_name="entrenar-lora")


def bench_main() -> None:
    bench_app(prog_name="entrenar-bench")


def shell_main() -> None:
    shell_app = typer.Typer(add_completion=False)
    shell_app.command()(shell_cli.shell)
    shell_app(prog_name="entrenar-shell")


if __name__ == "__main__":
    main()
