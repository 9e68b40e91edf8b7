"""`entrenar shell`: the REPL over core/shell's evaluator, or a script (`-c "a; b"`, stdin).

The line editor is prompt_toolkit: completion of commands, options, packaged models and paths,
history across sessions in a file, and Ctrl-C that clears the line instead of ending the shell,
the same on every terminal (readline differs between builds and lacks per-word completion).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from . import render
from .common import DebugOpt, JsonOpt


def shell(
    session_id: Annotated[
        str | None, typer.Argument(help="With --resume: the session (default: the latest).")
    ] = None,
    commands: Annotated[
        str | None, typer.Option("-c", "--command", help='Run these and exit: -c "fetch x; memory"')
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a saved session.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Answer yes to every question.")] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Interactive shell: fetch, inspect, memory, set, distill, watch, history ... (`help`)."""
    from ..core.errors import EntrenarError
    from ..core.shell.session import Session, SessionStore

    store = SessionStore()
    try:
        session = store.load(session_id) if resume else Session(id=store.new_id())
    except EntrenarError as exc:
        render.error(exc.message, exc.hint, exc.exit_code, json_out)
        raise typer.Exit(exc.exit_code) from None
    runner = ShellRunner(session, store, json_out=json_out, yes=yes, debug=debug)
    if commands is not None:
        code = runner.script(commands)
    elif not sys.stdin.isatty():
        code = runner.script(sys.stdin.read())
    else:
        code = runner.repl()
    raise typer.Exit(code)


class ShellRunner:
    """Runs commands through the evaluator, prints their outputs, saves the session after each."""

    def __init__(self, session, store, *, json_out: bool, yes: bool, debug: bool) -> None:
        from ..core.shell.evaluate import Evaluator

        self.session, self.store = session, store
        self.evaluator = Evaluator(session)
        self.json_out, self.yes, self.debug = json_out, yes, debug
        self.interactive = False
        self.warned = False

    def script(self, text: str) -> int:
        """Every command in `text`; the exit code is the first failure's (0 when none failed)."""
        from ..core.shell.parse import ShellInputError, parse_each

        first_failure = 0
        for item in parse_each(text):
            if isinstance(item, ShellInputError):
                self._error(item)
                first_failure = first_failure or item.exit_code
                continue
            code, leave = self.execute(item)
            first_failure = first_failure or code
            if leave:
                return first_failure
        self._goodbye()
        return first_failure

    def execute(self, command) -> tuple[int, bool]:
        """(exit code, quit?) of one command; errors are printed, never raised."""
        from ..core.errors import EntrenarError

        try:
            output = self.evaluator.run(command)
            if output.confirm:
                self._print(output)
                output = self.evaluator.confirm(output, self._ask(output.confirm))
            self._print(output)
        except EntrenarError as exc:
            self._error(exc)
            return exc.exit_code, False
        except KeyboardInterrupt:
            render.err_line("cancelled")
            return 130, False
        finally:
            self._save()
        if output.quit:
            self._goodbye()
        return 0, output.quit

    def _ask(self, question: str) -> bool:
        if self.yes:
            render.err_line(f"{question} [y/N]: y (--yes)")
            return True
        if not self.interactive:
            render.err_line(f"{question} [y/N]: n (no terminal; pass --yes to proceed)")
            return False
        answer = input(f"{question} [y/N]: ")
        return answer.strip().lower() in ("y", "yes")

    def _save(self) -> None:
        self.store.save(self.session)
        if self.store.warning and not self.warned:
            self.warned = True
            render.err_line(f"warning: {self.store.warning}")

    def _goodbye(self) -> None:
        path = self.store.save(self.session)
        if path is not None and not self.json_out:
            render.err_line(f"Session saved to {path}")

    def _error(self, exc) -> None:
        render.error(exc.message, exc.hint, exc.exit_code, self.json_out)

    def _print(self, output) -> None:
        from .shell_print import print_output

        print_output(output, self.json_out)

    def repl(self) -> int:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory

        from ..core.shell.session import entrenar_home
        from .shell_print import ShellCompleter

        self.interactive = True
        history = entrenar_home() / "shell_history"
        history.parent.mkdir(parents=True, exist_ok=True)
        prompt = PromptSession(history=FileHistory(str(history)), completer=ShellCompleter())
        render.line("Entrenar Shell - Interactive Distillation Environment")
        render.line(f"Session {self.session.id}. Type 'help' for commands, 'quit' to exit.")
        while True:
            try:
                text = prompt.prompt("entrenar> ")
            except KeyboardInterrupt:
                continue
            except EOFError:
                self._goodbye()
                return 0
            if self._repl_line(text):
                return 0

    def _repl_line(self, text: str) -> bool:
        """Run a typed line; True when it quits."""
        from ..core.shell.parse import ShellInputError, parse_each

        for item in parse_each(text):
            if isinstance(item, ShellInputError):
                self._error(item)
            elif self.execute(item)[1]:
                return True
        return False
