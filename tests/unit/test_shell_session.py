"""Shell sessions: save and restore round-trip, memory-only fallback, and a save killed with
SIGKILL inside the write (at its fsync, chosen, not raced) leaves the previous file whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from entrenar_tui.core.errors import InvalidInputError
from entrenar_tui.core.shell.session import Session, SessionStore


def test_a_session_round_trips(tmp_path):
    store = SessionStore(tmp_path)
    session = Session(id=store.new_id(), model="smollm2-135m", teacher="smollm2-135m")
    session.student_layers = [0, 3]
    session.settings["seq"] = 64
    session.history.append({"command": "fetch smollm2-135m", "duration_s": 1.2, "status": "ok"})
    path = store.save(session)
    assert path.name == f"{session.id}.json"
    restored = store.load(session.id)
    assert restored == session
    assert store.load() == session  # the latest
    assert store.new_id().endswith("-002")


def test_an_unwritable_store_keeps_the_session_in_memory_with_one_warning(tmp_path):
    blocker = tmp_path / "home"
    blocker.write_text("a file where the sessions folder would go")
    store = SessionStore(blocker)
    assert store.save(Session(id="s")) is None
    assert "kept in memory only" in store.warning
    assert store.save(Session(id="s")) is None  # no retry, no second warning


def test_missing_and_corrupt_sessions_are_user_errors(tmp_path):
    store = SessionStore(tmp_path)
    with pytest.raises(InvalidInputError, match="no saved sessions"):
        store.load()
    store.save(Session(id="2026-12-01-001"))
    with pytest.raises(InvalidInputError, match="no session 'nope'"):
        store.load("nope")
    (tmp_path / "sessions" / "2026-12-01-002.json").write_text('{"history": 5}')
    with pytest.raises(InvalidInputError, match="does not hold a session"):
        store.load("2026-12-01-002")


CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import entrenar_tui.core.fsutil as fsutil
    from entrenar_tui.core.shell.session import Session, SessionStore

    def stuck_fsync(fd):  # the new session's bytes are in the temp file, not yet renamed
        sys.stdout.write("in-write\\n"); sys.stdout.flush()
        time.sleep(600)

    fsutil.os.fsync = stuck_fsync
    store = SessionStore(Path(sys.argv[1]))
    store.save(Session(id="kept", model="the-new-one", history=[{"command": "x" * 100000}]))
    """
)


def test_a_shell_killed_inside_the_save_leaves_the_previous_session_whole(tmp_path):
    store = SessionStore(tmp_path)
    store.save(Session(id="kept", model="the-old-one"))
    before = (tmp_path / "sessions" / "kept.json").read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline() == "in-write\n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    assert (tmp_path / "sessions" / "kept.json").read_bytes() == before
    assert json.loads(before)["model"] == "the-old-one"
    assert store.load("kept").model == "the-old-one"
