"""Reading run directories while they are written (core/runs/follow.py): no torch, real files,
real (short-lived) processes for dead and live pids."""

from __future__ import annotations

import json
import operator
import os
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entrenar_tui.core.fsutil import write_json_atomic, write_text_atomic
from entrenar_tui.core.runs.follow import (
    MetricsTail,
    console_error,
    list_runs,
    pid_alive,
    read_run,
    tail_lines,
)

STATES = {"queued", "running", "finished", "failed", "stopped", "stale", "starting", "unreadable"}
OTHER_HOST = "another-host.invalid"


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def stamp(ago: timedelta) -> str:
    when = datetime.now(timezone.utc) - ago
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def status(state="running", **fields) -> dict:
    base = {
        "state": state,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "step": 7,
        "total_steps": 20,
        "started_at": stamp(timedelta(minutes=5)),
        "updated_at": stamp(timedelta(seconds=5)),
        "error": None,
    }
    return {**base, **fields}


def make_run(path, status_doc: dict | None = None, *, config=True):
    path.mkdir(parents=True, exist_ok=True)
    if config:
        (path / "config.yaml").write_text("seed: 1\n")
    if status_doc is not None:
        write_json_atomic(path / "status.json", status_doc)
    return path


def set_mtime(path, seconds_ago: float) -> None:
    when = time.time() - seconds_ago
    os.utime(path, (when, when))


def launch_doc(pid: int, host: str | None = None, **fields) -> dict:
    doc = {"pid": pid, "host": host or socket.gethostname(), "command": ["entrenar"]}
    return {**doc, "started_at": datetime.now().astimezone().isoformat(), **fields}


# ------------------------------------------------------------------------------ MetricsTail


def append(path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_tail_returns_a_split_line_once_whole_after_its_newline(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append(path, b'{"kind": "train", "step": 1}\n{"kind": "tr')
    tail = MetricsTail(path)
    assert tail.poll() == [{"kind": "train", "step": 1}]
    assert tail.offset == path.stat().st_size and tail.partial == b'{"kind": "tr'
    append(path, b'ain", "step": 2')
    assert tail.poll() == []  # still no newline
    append(path, b'}\n{"kind": "eval", "step": 2}\n')
    assert tail.poll() == [{"kind": "train", "step": 2}, {"kind": "eval", "step": 2}]
    assert tail.partial == b"" and tail.offset == path.stat().st_size


def test_tail_splits_a_multibyte_character_across_writes(tmp_path):
    path = tmp_path / "metrics.jsonl"
    line = json.dumps({"sample": "ñandú ✓"}, ensure_ascii=False).encode() + b"\n"
    cut = line.index("✓".encode()) + 1  # inside the three-byte character
    tail = MetricsTail(path)
    append(path, line[:cut])
    assert tail.poll() == []
    append(path, line[cut:])
    assert tail.poll() == [{"sample": "ñandú ✓"}]


def test_second_poll_with_nothing_new_reads_nothing(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append(path, b'{"step": 1}\n{"step": 2}\n')
    tail = MetricsTail(str(path))  # a str path works too
    assert [r["step"] for r in tail.poll()] == [1, 2]
    offset = tail.offset
    assert offset == path.stat().st_size
    assert tail.poll() == [] and tail.offset == offset and not tail.reset
    append(path, b'{"step": 3}\n')
    assert tail.poll() == [{"step": 3}] and tail.offset == path.stat().st_size


def test_non_json_and_non_object_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "metrics.jsonl"
    deep = b"[" * 100_000  # json.loads raises RecursionError on this
    append(path, b'garbage\n[1, 2]\n"text"\n3\n\n{"step": 1}\n' + deep + b'\n{"step": 2}\n')
    tail = MetricsTail(path)
    assert tail.poll() == [{"step": 1}, {"step": 2}]
    assert tail.skipped == 5  # the blank line is not counted


def test_atomically_replaced_shorter_file_resets_and_rereads(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_text_atomic(path, "".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)))
    tail = MetricsTail(path)
    assert len(tail.poll()) == 5
    write_text_atomic(path, '{"step": 1}\n{"step": 2}\n')  # a resume drops steps 3-5
    assert tail.poll() == [{"step": 1}, {"step": 2}]
    assert tail.reset and tail.offset == path.stat().st_size
    append(path, b'{"step": 3}\n')
    assert tail.poll() == [{"step": 3}] and not tail.reset


def test_replaced_longer_file_resets_too(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_text_atomic(path, '{"step": 1}\n')
    tail = MetricsTail(path)
    tail.poll()
    write_text_atomic(path, '{"step": 1, "run": 2}\n{"step": 2}\n{"step": 3}\n')
    assert [r["step"] for r in tail.poll()] == [1, 2, 3] and tail.reset


def test_file_rewritten_in_place_with_the_same_inode_resets(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 9}\n')
    tail = MetricsTail(path)
    tail.poll()
    inode = path.stat().st_ino
    path.write_text('{"step": 1, "loss": 3}\n{"step": 2, "loss": 2}\n')  # truncated, same inode
    assert path.stat().st_ino == inode
    assert tail.poll() == [{"step": 1, "loss": 3}, {"step": 2, "loss": 2}] and tail.reset


def test_missing_file_returns_nothing_until_it_appears(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.poll() == [] and tail.offset == 0 and not tail.reset
    append(path, b'{"step": 1}\n')
    assert tail.poll() == [{"step": 1}] and not tail.reset


def test_a_directory_in_place_of_the_file_returns_nothing(tmp_path):
    (tmp_path / "metrics.jsonl").mkdir()
    assert MetricsTail(tmp_path / "metrics.jsonl").poll() == []


def test_a_big_file_is_caught_up_over_several_polls(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append(path, b"".join(json.dumps({"step": s}).encode() + b"\n" for s in range(200)))
    tail = MetricsTail(path, max_read=100)
    steps, polls = [], 0
    while tail.offset < path.stat().st_size and polls < 1000:
        polls += 1
        steps += [r["step"] for r in tail.poll()]
    assert steps == list(range(200)) and polls > 10 and tail.partial == b""


# ------------------------------------------------------------------------------ read_run


@pytest.mark.parametrize("state", ["queued", "finished", "failed", "stopped"])
def test_written_states_are_shown_as_written(tmp_path, state):
    error = {"message": "boom", "hint": "fix it"} if state == "failed" else None
    run = read_run(make_run(tmp_path / "run", status(state, error=error)))
    assert run.state == state and run.step == 7 and run.total_steps == 20
    assert run.error == error and run.name == "run"
    assert run.to_dict()["state"] == state


def test_running_with_a_live_pid_is_running(tmp_path):
    run = read_run(make_run(tmp_path / "run", status(pid=os.getpid())))
    assert run.state == "running" and run.alive and run.pid == os.getpid()


@pytest.mark.parametrize("host", ["this", None])
def test_running_with_a_dead_pid_on_this_host_is_stale(tmp_path, host):
    doc = status(pid=dead_pid(), host=socket.gethostname() if host else None)
    run = read_run(make_run(tmp_path / "run", doc))
    assert run.state == "stale" and not run.alive


def test_an_unreaped_child_counts_as_dead(tmp_path):
    proc = subprocess.Popen(["true"])
    try:
        deadline = time.time() + 10
        while time.time() < deadline:  # wait for it to exit without reaping it
            with open(f"/proc/{proc.pid}/stat") as f:
                if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        assert not pid_alive(proc.pid)
        run = read_run(make_run(tmp_path / "run", status(pid=proc.pid)))
        assert run.state == "stale"
    finally:
        proc.wait()


def test_pid_alive_refuses_odd_values():
    assert pid_alive(os.getpid())
    for value in (None, 0, -1, True, 2**80, "123", 1.5):
        assert not pid_alive(value), value


@pytest.mark.parametrize(("minutes", "state"), [(11, "stale"), (1, "running")])
def test_another_hosts_run_is_stale_after_ten_minutes(tmp_path, minutes, state):
    doc = status(host=OTHER_HOST, pid=dead_pid(), updated_at=stamp(timedelta(minutes=minutes)))
    assert read_run(make_run(tmp_path / "run", doc)).state == state


def test_every_truncation_of_status_json_reads_without_raising(tmp_path):
    run_dir = make_run(tmp_path / "run")
    data = json.dumps(status("failed", error={"message": "ü", "hint": "h"})).encode()
    for cut in range(len(data)):
        (run_dir / "status.json").write_bytes(data[:cut])
        run = read_run(run_dir)
        assert run.state == "unreadable" and run.error is not None, cut
    (run_dir / "status.json").write_bytes(data)
    assert read_run(run_dir).state == "failed"


def test_a_directory_named_status_json_is_unreadable(tmp_path):
    run_dir = make_run(tmp_path / "run")
    (run_dir / "status.json").mkdir()
    assert read_run(run_dir).state == "unreadable"
    assert [r.state for r in list_runs(tmp_path)] == ["unreadable"]


def test_wrong_types_never_raise(tmp_path):
    run_dir = make_run(tmp_path / "run")
    doc = status(
        "failed",
        step="7",
        total_steps=None,
        error=["not", "a", "dict"],
        pid=2**80,
        host=["h"],
        started_at=5,
        updated_at={"x": 1},
    )
    write_json_atomic(run_dir / "status.json", doc)
    run = read_run(run_dir)
    assert run.state == "failed" and run.step == 0 and run.total_steps == 0
    assert run.error is None and run.host is None and run.started_at is None
    assert run.pid == 2**80
    json.dumps(run.to_dict())
    write_json_atomic(run_dir / "status.json", status(pid=2**80, step=True))
    assert read_run(run_dir).state == "stale" and read_run(run_dir).step == 0
    write_json_atomic(run_dir / "status.json", status("failed", error={"message": 5}))
    assert read_run(run_dir).error == {"message": "5", "hint": ""}
    write_json_atomic(run_dir / "status.json", status("exploded"))
    assert read_run(run_dir).state == "unreadable"
    write_json_atomic(run_dir / "status.json", [1, 2])
    assert read_run(run_dir).state == "unreadable"


def test_deeply_nested_status_json_is_unreadable(tmp_path):
    run_dir = make_run(tmp_path / "run")
    (run_dir / "status.json").write_text('{"state": ' * 50_000)
    assert read_run(run_dir).state == "unreadable"


def test_config_only_is_queued_and_an_empty_folder_unreadable(tmp_path):
    assert read_run(make_run(tmp_path / "queued")).state == "queued"
    assert read_run(make_run(tmp_path / "empty", config=False)).state == "unreadable"
    assert read_run(tmp_path / "missing").state == "unreadable"


def test_launched_with_a_live_pid_is_starting(tmp_path):
    run_dir = make_run(tmp_path / "run", config=False)
    write_json_atomic(run_dir / "launch.json", launch_doc(os.getpid()))
    run = read_run(run_dir)
    assert run.state == "starting" and run.alive and run.pid == os.getpid()


def test_died_before_status_json_with_a_json_error(tmp_path):
    run_dir = make_run(tmp_path / "run", config=False)
    write_json_atomic(run_dir / "launch.json", launch_doc(dead_pid()))
    error = {"error": {"message": "m", "hint": "h", "code": 2}}
    (run_dir / "console.log").write_text("loading\n" + json.dumps(error) + "\n")
    run = read_run(run_dir)
    assert run.state == "failed" and run.error == {"message": "m", "hint": "h"}


def test_died_before_status_json_with_text_error_lines(tmp_path):
    run_dir = make_run(tmp_path / "run", config=False)
    write_json_atomic(run_dir / "launch.json", launch_doc(dead_pid()))
    (run_dir / "console.log").write_text(
        "error: old\nhint: old hint\nstarting\nerror: m\nhint: h\n"
    )
    run = read_run(run_dir)
    assert run.state == "failed" and run.error == {"message": "m", "hint": "h"}
    (run_dir / "console.log").write_text("error: m\nTraceback ...\n")
    assert read_run(run_dir).error == {"message": "m", "hint": ""}  # no hint right after it


def test_died_without_a_word_says_where_to_look(tmp_path):
    run_dir = make_run(tmp_path / "run", config=False)
    write_json_atomic(run_dir / "launch.json", launch_doc(dead_pid()))
    (run_dir / "console.log").write_text("Segmentation fault\n")
    run = read_run(run_dir)
    assert run.state == "failed" and "console.log" in run.error["hint"]
    assert "before it wrote status.json" in run.error["message"]


def test_console_errors_before_this_launch_are_ignored(tmp_path):
    run_dir = make_run(tmp_path / "run", config=False)
    old = json.dumps({"error": {"message": "old", "hint": "", "code": 2}}) + "\n"
    (run_dir / "console.log").write_text(old + "killed\n")
    doc = launch_doc(dead_pid(), console_offset=len(old))
    write_json_atomic(run_dir / "launch.json", doc)
    assert "before it wrote status.json" in read_run(run_dir).error["message"]
    assert console_error(run_dir) == {"message": "old", "hint": ""}
    assert console_error(run_dir, len(old)) is None


def test_launch_on_another_host_is_starting_then_stale(tmp_path):
    run_dir = make_run(tmp_path / "run", config=False)
    write_json_atomic(run_dir / "launch.json", launch_doc(dead_pid(), OTHER_HOST))
    assert read_run(run_dir).state == "starting"  # its pid means nothing here
    old = (datetime.now().astimezone() - timedelta(minutes=11)).isoformat()
    write_json_atomic(run_dir / "launch.json", launch_doc(1, OTHER_HOST, started_at=old))
    assert read_run(run_dir).state == "stale"


def test_resumed_run_is_starting_until_it_writes_status(tmp_path):
    """A resume launched after the last status.json: the old `stopped` must not be shown, or a
    second resume could start a second process on the same directory."""
    run_dir = make_run(tmp_path / "run", status("stopped", pid=dead_pid()))
    set_mtime(run_dir / "status.json", 60)
    write_json_atomic(run_dir / "launch.json", launch_doc(os.getpid()))
    run = read_run(run_dir)
    assert run.state == "starting" and run.alive and run.pid == os.getpid()
    assert run.step == 7 and run.total_steps == 20
    write_json_atomic(run_dir / "launch.json", launch_doc(dead_pid()))
    set_mtime(run_dir / "status.json", 60)
    (run_dir / "console.log").write_text('{"error": {"message": "bad", "hint": "h"}}\n')
    run = read_run(run_dir)
    assert run.state == "failed" and run.error == {"message": "bad", "hint": "h"}
    write_json_atomic(run_dir / "status.json", status("running", pid=os.getpid()))
    assert read_run(run_dir).state == "running"  # status.json newer than launch.json wins


def test_garbage_launch_json_is_ignored(tmp_path):
    run_dir = make_run(tmp_path / "run")
    (run_dir / "launch.json").write_text('{"pid": ')
    assert read_run(run_dir).state == "queued"
    write_json_atomic(run_dir / "launch.json", {"pid": "x", "host": 3, "started_at": []})
    run = read_run(run_dir)
    assert run.state == "failed" and run.pid is None and run.started_at is None


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
STATUS_LIKE = st.fixed_dictionaries(
    {},
    optional={
        key: JSON_VALUES | st.sampled_from(sorted(STATES))
        for key in ("state", "pid", "host", "step", "total_steps", "updated_at", "error")
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=512)
    | STATUS_LIKE.map(lambda d: json.dumps(d).encode())
    | st.builds(operator.mul, st.sampled_from([b"[", b'{"state": ']), st.integers(1, 50_000)),
    launch=st.none() | st.binary(max_size=64) | STATUS_LIKE.map(lambda d: json.dumps(d).encode()),
)
def test_any_bytes_as_status_json_never_raise(tmp_path_factory, data, launch):
    run_dir = tmp_path_factory.mktemp("fuzz")
    (run_dir / "status.json").write_bytes(data)
    if launch is not None:
        (run_dir / "launch.json").write_bytes(launch)
    run = read_run(run_dir)
    assert run.state in STATES
    json.dumps(run.to_dict())


# ------------------------------------------------------------------------------ list_runs


def test_list_runs_finds_runs_newest_first(tmp_path):
    root = tmp_path / "runs"
    make_run(root / "old", status("finished"))
    make_run(root / "new", status("stopped"))
    make_run(root / "queued")
    launched = make_run(root / "launched", config=False)
    write_json_atomic(launched / "launch.json", launch_doc(os.getpid()))
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("x")
    (root / "readme.txt").write_text("not a run")
    make_run(root / ".hidden", status("finished"))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "link").symlink_to(root / "new")  # the same run again
    for age, name in enumerate(["new", "launched", "queued", "old"]):
        for f in (root / name).iterdir():
            set_mtime(f, 100 * (age + 1))
    runs = list_runs(root, root, tmp_path / "elsewhere", tmp_path / "missing")
    assert [r.name for r in runs] == ["new", "launched", "queued", "old"]
    assert [r.state for r in runs] == ["stopped", "starting", "queued", "finished"]


def test_a_root_that_is_a_run_is_listed(tmp_path):
    run_dir = make_run(tmp_path / "run", status("finished"))
    (run_dir / "checkpoints").mkdir()
    assert [r.path for r in list_runs(run_dir)] == [run_dir]


# ------------------------------------------------------------------------------ tail_lines


def test_tail_lines_drops_the_cut_first_line(tmp_path):
    path = tmp_path / "events.log"
    lines = [f"2024-01-01T00:00:{i:02d}Z event number {i}" for i in range(60)]
    path.write_text("".join(line + "\n" for line in lines))
    got = tail_lines(path, 1000, max_bytes=500)
    assert got and all(line in lines for line in got)  # no partial first line
    assert got == lines[-len(got) :] and len(got) < len(lines)
    assert sum(len(line) + 1 for line in got) <= 500
    assert tail_lines(path, 3, max_bytes=500) == lines[-3:]
    assert tail_lines(path, 5) == lines[-5:]  # under max_bytes: read whole


def test_tail_lines_keeps_a_first_line_that_starts_the_window(tmp_path):
    path = tmp_path / "events.log"
    path.write_text("aaaa\nbbbb\ncccc\n")
    assert tail_lines(path, 10, max_bytes=10) == ["bbbb", "cccc"]  # window starts at "bbbb"
    assert tail_lines(path, 10, max_bytes=9) == ["cccc"]  # "bbb" is cut
    assert tail_lines(path, 0) == [] and tail_lines(tmp_path / "nope.log") == []
