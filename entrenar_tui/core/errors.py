"""Errors that reach the user: a message, a hint that says what to do, and an exit code.

Front ends catch `EntrenarError` and render it; anything else is a bug (exit 1).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1
EXIT_INVALID_INPUT = 2
EXIT_CHECK_FAILED = 3


class EntrenarError(Exception):
    """Base class: an error the user can act on."""

    exit_code = EXIT_INVALID_INPUT

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict:
        return {"message": self.message, "hint": self.hint, "code": self.exit_code}


class InvalidInputError(EntrenarError):
    """Bad arguments or an unusable value."""


class ModelNotFoundError(InvalidInputError):
    """A model reference that names nothing we can find."""


class CorruptFileError(InvalidInputError):
    """A file that exists but cannot be read as what it claims to be."""


class UnsupportedError(InvalidInputError):
    """Valid input that this version cannot handle (an architecture, a dtype, a format)."""


class ConfigError(InvalidInputError):
    """A config file with problems; `problems` lists each one."""

    def __init__(self, message: str, hint: str = "", problems: list | None = None) -> None:
        super().__init__(message, hint)
        self.problems = problems or []


class CheckFailedError(EntrenarError):
    """A check ran on valid input and found problems (exit 3)."""

    exit_code = EXIT_CHECK_FAILED


def bug_hint() -> str:
    return "this is a bug in entrenar; please report it with the output of --debug"
