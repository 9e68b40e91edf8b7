"""torchrun with 2 CPU processes (gloo) matches one process at equal global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from test_distill_run import write_config  # noqa: E402
from typer.testing import CliRunner

from entrenar_tui.cli.main import app


def _train_losses(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [m["loss"] for m in lines if m["kind"] == "train"]


@pytest.mark.slow
def test_two_cpu_processes_match_one_at_equal_global_batch(tiny_lm_pair, tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun not installed")
    teacher, student = tiny_lm_pair
    # one process: batch 2 x accumulation 2; two processes: batch 2 x accumulation 1 each
    single_cfg = write_config(
        tmp_path / "single.yaml",
        teacher,
        student,
        eval_every=None,
        max_steps=5,
        gradient_accumulation=2,
    )
    ddp_cfg = write_config(
        tmp_path / "ddp.yaml",
        teacher,
        student,
        eval_every=None,
        max_steps=5,
        gradient_accumulation=1,
    )
    single = tmp_path / "single"
    result = CliRunner().invoke(
        app,
        [
            "distill",
            "run",
            "--config",
            str(single_cfg),
            "--output",
            str(single),
            "--set",
            "output.checkpoint_every=null",
        ],
    )
    assert result.exit_code == 0, result.output
    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": "29533"}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", "29533", "-m", "entrenar_tui.cli.main", "distill", "run", "--config", str(ddp_cfg), "--output", str(ddp), "--set", "output.checkpoint_every=null", "--json"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _train_losses(single), _train_losses(ddp)
    assert len(a) == len(b) == 5
    for x, y in zip(a, b, strict=True):
        assert abs(x - y) <= 1e-4 * abs(x), (a, b)
    assert [json.loads(x)["event"] for x in proc.stdout.splitlines()].count(
        "end"
    ) == 1  # only rank 0 reports
