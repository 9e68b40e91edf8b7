"""`entrenar distill run` end to end on tiny real models: run directory, resume, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from conftest import write_config  # noqa: F401  (other test modules import it from here)
from entrenar_tui.cli.main import app

runner = CliRunner()

TRAIN_KEYS = {
    "kind",
    "step",
    "epoch",
    "time_s",
    "tokens",
    "lr",
    "loss",
    "loss_kd",
    "loss_ce",
    "loss_hidden",
    "loss_attention",
    "tokens_per_s",
    "memory_bytes",
}
EVAL_KEYS = {"kind", "step", "eval_loss", "eval_ppl", "eval_top1_agreement", "samples"}


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tiny_lm_pair, tmp_path_factory):
    teacher, student = tiny_lm_pair
    root = tmp_path_factory.mktemp("distill")
    config = write_config(root / "distill.yaml", teacher, student)
    result = runner.invoke(
        app, ["distill", "run", "--config", str(config), "--output", str(root / "run"), "--json"]
    )
    assert result.exit_code == 0, result.output
    return root / "run", [json.loads(line) for line in result.stdout.splitlines()]


def test_run_writes_the_run_directory(finished_run):
    run_dir, _ = finished_run
    for name in ("run.json", "config.yaml", "status.json", "metrics.jsonl", "events.log"):
        assert (run_dir / name).exists(), name
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == status["total_steps"] == 12
    assert status["error"] is None and status["updated_at"].endswith("Z")
    provenance = json.loads((run_dir / "run.json").read_text())
    assert (
        provenance["versions"]["torch"]
        and provenance["config_hash"]
        and provenance["hardware"]["cpu_count"]
    )
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == ["step-000008", "step-000012"]  # keep_checkpoints: 2


def test_metrics_have_every_field_and_loss_falls(finished_run):
    run_dir, _ = finished_run
    lines = metrics(run_dir)
    train = [m for m in lines if m["kind"] == "train"]
    evals = [m for m in lines if m["kind"] == "eval"]
    assert [m["step"] for m in train] == list(range(1, 13))
    for m in train:
        assert m.keys() >= TRAIN_KEYS
    for m in evals:
        assert m.keys() >= EVAL_KEYS
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 12
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 0.1
    assert sum(m["loss"] for m in train[-3:]) < sum(m["loss"] for m in train[:3])
    assert evals[-1]["samples"] and all("completion" in s for s in evals[-1]["samples"])


def test_json_events_are_one_object_per_line(finished_run):
    _, events = finished_run
    kinds = [e["event"] for e in events]
    assert kinds[0] == "baseline" and kinds[1] == "start" and kinds[-1] == "end"
    assert events[-1]["state"] == "finished"
    assert (
        events[-1]["student_eval_after"]["eval_ppl"] < events[-1]["student_eval_before"]["eval_ppl"]
    )


def test_final_student_loads_in_transformers(finished_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _ = finished_run
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    tok = AutoTokenizer.from_pretrained(run_dir / "final")
    ids = tok("Return the number of items", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_existing_output_is_refused(finished_run):
    run_dir, _ = finished_run
    config = run_dir / "config.yaml"
    result = runner.invoke(
        app, ["distill", "run", "--config", str(config), "--output", str(run_dir)]
    )
    assert result.exit_code == 2 and "--resume" in result.stderr


def _wait_for(path, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear")


def _final_weights(run_dir):
    from safetensors.numpy import load_file

    return load_file(run_dir / "final" / "model.safetensors")


def test_sigkill_then_resume_matches_uninterrupted_run(tiny_lm_pair, tmp_path):
    """A real process is killed with SIGKILL after a checkpoint; --resume finishes it; the final
    weights equal, bit for bit, those of a run that was never interrupted."""
    teacher, student = tiny_lm_pair
    config = write_config(
        tmp_path / "c.yaml", teacher, student, eval_every=None, max_steps=60
    )  # long enough that SIGKILL lands mid-run on a fast machine
    straight = tmp_path / "straight"
    assert (
        runner.invoke(
            app, ["distill", "run", "--config", str(config), "--output", str(straight)]
        ).exit_code
        == 0
    )

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "entrenar_tui.cli.main",
            "distill",
            "run",
            "--config",
            str(config),
            "--output",
            str(killed),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    _wait_for(killed / "checkpoints" / "step-000004" / "trainer.pt")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (
        json.loads((killed / "status.json").read_text())["state"] == "running"
    )  # died without a word
    resumed = runner.invoke(app, ["distill", "run", "--resume", str(killed)])
    assert resumed.exit_code == 0, resumed.output
    a, b = _final_weights(straight), _final_weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] == b[name]).all(), name
    steps = [m["step"] for m in metrics(killed) if m["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 60  # no duplicated lines after resume


def test_sigterm_checkpoints_and_stops_cleanly(tiny_lm_pair, tmp_path):
    teacher, student = tiny_lm_pair
    config = write_config(tmp_path / "c.yaml", teacher, student, eval_every=None, max_steps=400)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "entrenar_tui.cli.main",
            "distill",
            "run",
            "--config",
            str(config),
            "--output",
            str(run_dir),
            "--set",
            "output.checkpoint_every=null",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(run_dir / "metrics.jsonl")
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "stopped" and 0 < status["step"] < 400
    assert (run_dir / "checkpoints" / f"step-{status['step']:06d}" / "trainer.pt").exists()


def test_nan_teacher_stops_with_a_diagnosis(tiny_lm_pair, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    teacher, student = tiny_lm_pair
    broken = tmp_path / "nan-teacher"
    shutil.copytree(teacher, broken)
    weights = load_file(broken / "model.safetensors")
    weights["lm_head.weight"][0, 0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    config = write_config(tmp_path / "c.yaml", broken, student, eval_every=None)
    result = runner.invoke(
        app, ["distill", "run", "--config", str(config), "--output", str(tmp_path / "run")]
    )
    assert result.exit_code == 3
    assert "loss_kd" in result.stderr and "step 1" in result.stderr
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "non-finite" in status["error"]["message"]


def test_export_final_to_gguf_loads_in_transformers(finished_run, tmp_path):
    """The exported student, as GGUF (q8_0), loads with gguf_file= and predicts like the source."""
    import torch
    from transformers import AutoModelForCausalLM

    run_dir, _ = finished_run
    out = tmp_path / "student.gguf"
    result = runner.invoke(
        app,
        [
            "distill",
            "export",
            "--input",
            str(run_dir),
            "--format",
            "gguf",
            "--quantize",
            "f16",
            "--output",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["conversion"]["verified"]
    gguf_model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name)
    source = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    ids = torch.tensor([[1, 5, 9, 20, 40, 7]])
    with torch.no_grad():
        diff = (gguf_model(ids).logits - source(ids).logits).abs().max().item()
    assert diff < 5e-2  # f16 weights


def test_export_checkpoint_rebuilds_the_student(finished_run, tmp_path):
    from safetensors.numpy import load_file

    run_dir, _ = finished_run
    out = tmp_path / "ckpt.safetensors"
    result = runner.invoke(
        app,
        [
            "distill",
            "export",
            "--input",
            str(run_dir / "checkpoints" / "step-000012"),
            "--format",
            "safetensors",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    final = load_file(run_dir / "final" / "model.safetensors")
    exported = load_file(out)
    assert all((final[k] == exported[k]).all() for k in final)  # step 12 is the final step


def test_estimate_memory_and_measured_speed(tiny_lm_pair, tmp_path):
    teacher, student = tiny_lm_pair
    config = write_config(tmp_path / "c.yaml", teacher, student)
    result = runner.invoke(
        app, ["distill", "estimate", "--config", str(config), "--steps", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    est = json.loads(result.stdout)
    # both models train and infer in fp32, as their fp32 safetensors files store them: the
    # weights are the files' tensor bytes (file size less its header), AdamW twice the student's
    stored = {}
    for name, folder in (("teacher", teacher), ("student", student)):
        path = folder / "model.safetensors"
        stored[name] = path.stat().st_size - 8 - int.from_bytes(path.read_bytes()[:8], "little")
    assert est["breakdown"]["teacher_weights"] == stored["teacher"]
    assert est["breakdown"]["student_weights"] == stored["student"]
    assert est["breakdown"]["student_optimizer"] == 2 * stored["student"]
    assert est["seconds_per_step"] > 0 and est["estimated_seconds"] == pytest.approx(
        12 * est["seconds_per_step"]
    )
    no_measure = runner.invoke(
        app,
        [
            "distill",
            "estimate",
            "--teacher",
            str(teacher),
            "--student",
            str(student),
            "-b",
            "2",
            "-s",
            "32",
            "--steps",
            "0",
            "--json",
        ],
    )
    assert no_measure.exit_code == 0, no_measure.output
    assert json.loads(no_measure.stdout)["seconds_per_step"] is None
