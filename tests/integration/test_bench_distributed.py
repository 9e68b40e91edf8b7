"""Sweeps over an Optuna storage: two real `entrenar bench worker` processes share the queue;
one is killed mid-job and the other finishes its job from the last checkpoint. The same test
runs on SQLite and on a real PostgreSQL server that the test starts itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from conftest import write_config
from entrenar_tui.cli.main import app
from entrenar_tui.core.bench.sweepdir import read_results
from entrenar_tui.core.runs.follow import read_run

pytestmark = pytest.mark.slow
WAIT_S = 900  # generous: four short jobs, a heartbeat grace period, a shared 2-core machine


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on loopback. PostgreSQL refuses to run as root, so as root
    it runs as the unprivileged `postgres` user the Debian package creates."""
    binaries = _postgres_bin()
    if binaries is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is missing: `make test` installs Debian's postgresql")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="entrenar-pg-"))
    data, port = root / "data", _free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        root.chmod(0o700)
        as_user = ["runuser", "-u", "postgres", "--"]
    run = lambda *args: subprocess.run([*as_user, *args], check=True, capture_output=True)  # noqa: E731
    run(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    run(
        str(binaries / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(root / "log"),
        "-w",
        "start",
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sweeps.db'}"
    return request.getfixturevalue("postgres_url")


def _worker(url: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "entrenar_tui.cli.main", "bench", "worker"]
    command += ["--storage", url, "--study", "t", "--heartbeat", "1", "--json"]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _running_job(jobs: Path) -> Path | None:
    """A job whose run is training past its first checkpoint (checkpoint_every is 4)."""
    for run_dir in sorted(jobs.glob("*")):
        summary = read_run(run_dir)
        if summary.state == "running" and summary.step >= 6:
            return run_dir
    return None


def test_two_workers_share_the_jobs_and_a_killed_workers_job_is_finished(
    tiny_lm_pair, tmp_path, storage_url
):
    teacher, student = tiny_lm_pair
    base = write_config(tmp_path / "base.yaml", teacher, student, max_steps=40, eval_every=None)
    sweep_dir = tmp_path / "sweep"
    enqueue = ["bench", "temperature", "--config", str(base), "--range", "1..4", "--step", "3"]
    enqueue += ["--seeds", "2", "--sweep-dir", str(sweep_dir), "--storage", storage_url]
    enqueue += ["--study", "t", "--workers", "0", "--json"]
    for expected in (4, 0):  # enqueueing twice adds nothing
        result = CliRunner().invoke(app, enqueue, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        added = [json.loads(x) for x in result.output.splitlines() if '"enqueued"' in x]
        assert added[0]["added"] == expected

    workers = [_worker(storage_url, tmp_path / f"worker{i}.log") for i in (0, 1)]
    try:
        deadline = time.monotonic() + WAIT_S
        victim_job = None
        while victim_job is None and time.monotonic() < deadline:
            victim_job = _running_job(sweep_dir / "jobs")
            time.sleep(0.2)
        assert victim_job is not None, "no job reached its first checkpoint"
        child = psutil.Process(read_run(victim_job).pid)
        victim = next(w for w in workers if w.pid == child.ppid())
        victim.send_signal(signal.SIGKILL)
        survivor = next(w for w in workers if w is not victim)
        assert survivor.wait(timeout=WAIT_S) == 0, (tmp_path / "worker0.log").read_text()[-2000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()

    results = read_results(sweep_dir / "results.jsonl")
    assert len(results) == 4 and {r["status"] for r in results.values()} == {"finished"}
    lines = (sweep_dir / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4  # every job ended exactly once
    for record in results.values():
        steps = [
            json.loads(line)["step"]
            for line in (Path(record["run_dir"]) / "metrics.jsonl").read_text().splitlines()
            if '"kind": "train"' in line
        ]
        assert steps == list(range(1, 41))  # each step once, resumed or not
    resumed = json.loads((victim_job / "run.json").read_text())
    assert resumed.get("resumes"), "the killed worker's job was not resumed from its checkpoint"

    import optuna

    study = optuna.load_study(study_name="t", storage=storage_url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["job"] for t in complete) == sorted(results)
