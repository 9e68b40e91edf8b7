"""The embedded demo on the packaged SmolLM2, shortened: the student's held-out perplexity falls
and the command prints teacher and student perplexity before and after."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from entrenar_tui.cli.main import app

runner = CliRunner()


@pytest.mark.slow
def test_demo_improves_the_students_held_out_perplexity(tmp_path):
    run_dir = tmp_path / "demo"
    shorter = [
        "training.max_steps=6",
        "training.warmup_steps=1",
        "training.eval_every=null",
        "training.eval_max_blocks=4",
        "device=cpu",
        "output.checkpoint_every=null",
    ]
    args = ["distill", "run", "--config", "demo", "--output", str(run_dir)]
    result = runner.invoke(app, [*args, *(a for kv in shorter for a in ("--set", kv))])
    assert result.exit_code == 0, result.output
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["kind"] == "eval"]
    before, after = evals[0], evals[-1]
    assert before["step"] == 0 and after["step"] == 6
    # measured layers: the student starts far below every third layer; training brings it down
    assert before["eval_ppl"] < 2000 and after["eval_ppl"] < 0.8 * before["eval_ppl"]
    assert 10 < before["teacher_eval_ppl"] < 100  # the teacher is a real language model
    assert "teacher" in result.output and "student" in result.output
    assert (run_dir / "final" / "model.safetensors").exists()
