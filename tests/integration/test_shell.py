"""`entrenar shell` on the packaged models: the original design's example session as a script,
a run training in the background while the shell answers, and the script's exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from entrenar_tui.cli.main import app

pytestmark = pytest.mark.slow

SESSION = """\
fetch smollm2-135m
memory --batch 4 --seq 64
inspect layers
set student smollm2-135m --layers 0,15
set seq 32
set batch 2
set eval_blocks 4
distill --temperature 4.0 --alpha 0.7 --steps 3 --dry-run --output runs/shell-a
config
runs
watch
history
export safetensors my-model
quit
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTRENAR_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def shell(*args: str, script: str | None = None):
    return CliRunner().invoke(app, ["shell", *args], input=script, catch_exceptions=False)


def test_the_design_session_runs_start_to_finish(home):
    result = shell("--yes", script=SESSION)
    out = result.output
    assert result.exit_code == 0, out
    assert "✓ Fetched smollm2-135m" in out and "Architecture: LLaMA, Layers: 30" in out
    assert "Memory Estimate: smollm2-135m" in out
    for row in ("fp32", "fp16/bf16", "int8 + LoRA", "nf4 + LoRA"):
        assert row in out
    assert "blk.29" in out and "total: 134,515,008 parameters" in out
    assert "✓ Student model configured: smollm2-135m (teacher layers [0, 15])" in out
    assert "Dry run configuration:" in out and "Loss: KL(T=4) * 0.7 + CE * 0.3" in out
    assert "Estimated time:" in out and "s/step measured on this machine" in out
    assert "✓ Training in the background: runs/shell-a" in out
    assert "runs/shell-a: finished at step 3" in out  # watch followed it to the end
    assert "Session History" in out and "distill --temperature 4.0" in out
    assert "✓ Exported to my-model" in out and (home / "my-model" / "config.json").exists()
    assert "Session saved to" in out
    (saved,) = (home / "home" / "sessions").glob("*.json")
    session = json.loads(saved.read_text())
    assert session["runs"] == ["runs/shell-a"] and session["student_layers"] == [0, 15]
    assert [item["status"] for item in session["history"]] == ["ok"] * 14


def test_a_run_trains_in_the_background_while_the_shell_answers(home):
    script = (
        "set teacher smollm2-135m; set seq 32; set batch 2; set eval_blocks 4; set steps 4\n"
        "distill --output runs/bg\n"
        "runs\n"
        "config\n"
        "watch runs/bg\n"
    )
    result = shell(script=script)
    assert result.exit_code == 0, result.output
    out = result.output
    started = out.index("✓ Training in the background: runs/bg")
    answered = out.index("Runs of this session")
    assert started < answered < out.index("runs/bg: finished at step 4")
    assert "step 4:" in out  # watch printed the progress lines


def test_a_script_exits_with_its_first_failure_and_never_stops_early(home):
    result = shell("-c", "fetch nothing-here; help fetch; frobnicate; config")
    assert result.exit_code == 2
    assert result.output.count("error:") == 2  # both bad commands reported
    assert "fetch MODEL" in result.output and "Session " in result.output  # later ones ran
    assert "did you mean" not in result.output or "frobnicate" in result.output


def test_without_a_terminal_a_question_is_answered_no_unless_yes(home):
    result = shell("-c", "set teacher smollm2-135m; set seq 32; distill --dry-run --steps 2")
    assert result.exit_code == 0, result.output
    assert "n (no terminal; pass --yes to proceed)" in result.output
    assert "Not started." in result.output and not (home / "runs").exists()


def test_resume_restores_the_last_session(home):
    assert shell("-c", "fetch minilm-l6; set alpha 0.5").exit_code == 0
    result = shell("--resume", "-c", "config; history")
    assert result.exit_code == 0, result.output
    assert "minilm-l6" in result.output and "0.5" in result.output
    assert "fetch minilm-l6" in result.output  # the restored history
    missing = shell("--resume", "1999-01-01-001", "-c", "config")
    assert missing.exit_code == 2 and "no session '1999-01-01-001'" in missing.output
