"""The shell's language: a line is commands separated by `;`, each a name, arguments and
`--options` (`--batch 8`, `--batch=8`, flags like `--dry-run`), quoted as in a POSIX shell.

`parse` turns any text into commands checked against the command table, or raises a
ShellInputError (an InvalidInputError: message and hint, exit code 2); nothing else escapes.
"""

from __future__ import annotations

import difflib
import shlex
from dataclasses import dataclass, field

from ..errors import InvalidInputError
from .commands import COMMANDS, CommandSpec


class ShellInputError(InvalidInputError):
    """A command line the shell cannot run: unknown command or option, a missing or bad value."""


@dataclass
class Command:
    name: str
    args: list[str] = field(default_factory=list)
    options: dict[str, object] = field(default_factory=dict)
    text: str = ""  # the command as typed (for history)


def _tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        raise ShellInputError(f"cannot read {text!r}: {exc}", "close the quote") from None


def _split(tokens: list[str]) -> list[list[str]]:
    groups, current = [], []
    for token in tokens:
        if token and set(token) == {";"}:
            if current:
                groups.append(current)
            current = []
        else:
            current.append(token)
    if current:
        groups.append(current)
    return groups


def parse(text: str) -> list[Command]:
    """Every command in `text` (lines and `;` separate commands); the first error raises."""
    commands = []
    for item in parse_each(text):
        if isinstance(item, ShellInputError):
            raise item
        commands.append(item)
    return commands


def parse_each(text: str) -> list[Command | ShellInputError]:
    """Each command of `text`, or the error that one alone has, so a script reports a bad
    command and goes on with the next."""
    items: list[Command | ShellInputError] = []
    for line in text.splitlines() or [""]:
        try:
            groups = _split(_tokens(line))
        except ShellInputError as exc:
            items.append(exc)
            continue
        for group in groups:
            try:
                items.append(_command(group))
            except ShellInputError as exc:
                items.append(exc)
    return items


def _spec(name: str) -> CommandSpec:
    spec = COMMANDS.get(name)
    if spec is None:
        near = difflib.get_close_matches(name, list(COMMANDS), 1)
        hint = f"did you mean `{near[0]}`?" if near else "type `help` for the commands"
        raise ShellInputError(f"unknown command {name!r}", hint)
    return spec


def _command(tokens: list[str]) -> Command:
    spec = _spec(tokens[0])
    command = Command(spec.name, text=shlex.join(tokens))
    rest = iter(tokens[1:])
    for token in rest:
        if token.startswith("--") and len(token) > 2:
            key, sep, value = token[2:].partition("=")
            _option(spec, command, key, value if sep else None, rest)
        else:
            command.args.append(token)
    if not spec.min_args <= len(command.args) <= spec.max_args:
        raise ShellInputError(
            f"`{spec.name}` takes {spec.arity_text()}, got {len(command.args)}",
            f"usage: {spec.usage()}",
        )
    return command


def _option(spec: CommandSpec, command: Command, key: str, value: str | None, rest) -> None:
    name = spec.aliases.get(key, key)
    if name not in spec.options:
        near = difflib.get_close_matches(key, list(spec.options), 1)
        hint = f"did you mean --{near[0]}?" if near else f"usage: {spec.usage()}"
        raise ShellInputError(f"`{spec.name}` has no option --{key}", hint)
    kind = spec.options[name]
    if kind is bool:
        if value is not None:
            raise ShellInputError(f"--{key} is a flag and takes no value", f"write --{key}")
        command.options[name] = True
        return
    if value is None:
        value = next(rest, None)
    if value is None:
        raise ShellInputError(f"--{key} needs a value", f"usage: {spec.usage()}")
    try:
        command.options[name] = kind(value)
    except ValueError:
        raise ShellInputError(
            f"--{key} must be {kind.__name__}, not {value!r}", f"usage: {spec.usage()}"
        ) from None
