"""Any text typed at the shell parses to commands or a structured user error, never a crash."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from entrenar_tui.core.shell.commands import COMMANDS
from entrenar_tui.core.shell.parse import Command, ShellInputError, parse

WORDS = st.sampled_from([*COMMANDS, "--batch", "--seq=8", "--layers", "0,3", "x", ";", '"', "'"])


@given(st.text(max_size=200))
@settings(max_examples=400, deadline=None)
def test_any_text_parses_or_is_a_user_error(text):
    try:
        commands = parse(text)
    except ShellInputError as exc:
        assert exc.message and exc.hint and exc.exit_code == 2
        return
    assert all(isinstance(c, Command) and c.name in COMMANDS for c in commands)


@given(st.lists(WORDS, max_size=12).map(" ".join))
@settings(max_examples=400, deadline=None)
def test_command_like_text_parses_or_is_a_user_error(text):
    try:
        commands = parse(text)
    except ShellInputError:
        return
    for command in commands:
        spec = COMMANDS[command.name]
        assert spec.min_args <= len(command.args) <= spec.max_args
        assert set(command.options) <= set(spec.options)


def test_the_design_sessions_lines_parse():
    (distill,) = parse("distill --temperature 4.0 --alpha 0.7 --epochs 3 --dry-run")
    assert distill.options == {"temperature": 4.0, "alpha": 0.7, "epochs": 3, "dry-run": True}
    (memory,) = parse("memory --batch-size 32 --sequence-length=512")
    assert memory.options == {"batch": 32, "seq": 512}
    first, second = parse("set student smollm2-135m --layers 0,3,6,9; history")
    assert first.args == ["student", "smollm2-135m"] and first.options["layers"] == [0, 3, 6, 9]
    assert second.name == "history"
    assert parse("# a comment\n\n") == []
