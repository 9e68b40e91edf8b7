"""`entrenar bench` end to end on tiny models: real `distill run` children per job."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from conftest import write_config
from entrenar_tui.cli.main import app
from entrenar_tui.core.bench.sweepdir import read_results

pytestmark = pytest.mark.slow
runner = CliRunner()


def bench(*args: str):
    return runner.invoke(app, ["bench", *args], catch_exceptions=False)


def events(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture
def base_config(tiny_lm_pair, tmp_path):
    teacher, student = tiny_lm_pair
    return write_config(tmp_path / "base.yaml", teacher, student, max_steps=6, eval_every=None)


def test_temperature_sweep_runs_every_job_and_a_rerun_skips_them(base_config, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["temperature", "--config", str(base_config), "--range", "1.0..4.0", "--step", "3"]
    args += ["--seeds", "2", "--workers", "2", "--sweep-dir", str(sweep_dir)]
    result = bench(*args, "--output", str(tmp_path / "t.csv"))
    assert result.exit_code == 0, result.output
    assert "Temperature Sweep Results" in result.output
    assert "T=1" in result.output and "T=4" in result.output and "★" in result.output
    assert "Recommendation:" in result.output
    results = read_results(sweep_dir / "results.jsonl")
    assert len(results) == 4
    assert {r["status"] for r in results.values()} == {"finished"}
    for record in results.values():
        metrics = record["metrics"]
        assert metrics["eval_ppl"] > 1 and 0 <= metrics["eval_top1_agreement"] <= 1
        assert metrics["tokens_per_s"] > 0 and metrics["steps"] == 6
        config = (sweep_dir / "jobs" / record["key"] / "config.yaml").read_text()
        assert f"temperature: {record['overlay']['distillation.temperature']}" in config
    with open(tmp_path / "t.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {row["status"] for row in rows} == {"finished"}

    again = bench(*args, "--json")
    assert again.exit_code == 0, again.output
    stream = events(again.output)
    assert stream[0] == {
        "event": "sweep_start",
        "sweep_dir": str(sweep_dir),
        "jobs": 4,
        "skipped": 4,
    }
    assert stream[-1]["event"] == "result" and stream[-1]["ran"] == 0
    assert stream[-1]["best"] in ("T=1", "T=4")
    assert len(stream[-1]["comparisons"]) == 1  # T=4 against the baseline T=1

    report = bench("report", str(sweep_dir / "results.jsonl"))
    assert report.exit_code == 0, report.output
    text = (sweep_dir / "report.md").read_text()
    for section in (
        "## Summary",
        "## Methodology",
        "## Results",
        "## Statistical Analysis",
        "## Recommendations",
    ):
        assert section in text
    assert "T=4 vs T=1" in text and "torch" in text  # the comparison and package versions


def test_the_same_seed_gives_the_same_metrics_twice(base_config, tmp_path):
    metrics = []
    for name in ("a", "b"):
        args = ["temperature", "--config", str(base_config), "--range", "2..2", "--seeds", "1"]
        result = bench(*args, "--sweep-dir", str(tmp_path / name), "--json")
        assert result.exit_code == 0, result.output
        (record,) = read_results(tmp_path / name / "results.jsonl").values()
        metrics.append(record["metrics"])
    timing = {"tokens_per_s", "wall_s", "peak_memory_bytes"}
    first, second = ({k: v for k, v in m.items() if k not in timing} for m in metrics)
    assert first == second


def test_compare_adds_the_ce_only_baseline_and_fills_in_a_layer_mapping(base_config, tmp_path):
    sweep_dir = tmp_path / "cmp"
    args = ["compare", "--config", str(base_config), "--strategies", "kd-only,progressive"]
    result = bench(*args, "--seeds", "2", "--workers", "2", "--sweep-dir", str(sweep_dir))
    assert result.exit_code == 0, result.output
    assert "Strategy Comparison" in result.output
    results = read_results(sweep_dir / "results.jsonl")
    labels = sorted({r["label"] for r in results.values()})
    assert labels == ["ce-only", "kd-only", "progressive"]
    progressive = next(r for r in results.values() if r["label"] == "progressive")
    # the tiny student has 2 layers, the teacher 4: the even map pairs 0->1 and 1->3
    assert progressive["overlay"]["distillation.progressive.layer_mapping"] == [[0, 1], [1, 3]]
    assert "loss_hidden" in (sweep_dir / "jobs" / progressive["key"] / "metrics.jsonl").read_text()
    assert "even map" in (sweep_dir / "sweep.yaml").read_text()


def test_a_job_that_fails_twice_is_recorded_failed_with_its_error(base_config, tmp_path):
    """A batch larger than the training set passes the schema and fails in the run: the job is
    retried once from its own run directory, then recorded failed; the sweep still reports."""
    sweep_dir = tmp_path / "bad"
    args = ["ablation", "--base-config", str(base_config), "--ablate", "batch_size"]
    args += ["--values", "batch_size=100000", "--seeds", "1", "--sweep-dir", str(sweep_dir)]
    result = bench(*args, "--json")
    assert result.exit_code == 0, result.output
    stream = events(result.output)
    ended = {e["label"]: e for e in stream if e["event"] == "job_end"}
    assert ended["base"]["status"] == "finished"
    failed = ended["training.batch_size=100000"]
    assert failed["status"] == "failed" and failed["attempts"] == 2
    assert "batch" in failed["error"]["message"]
    starts = [e for e in stream if e["event"] == "job_start" and e["key"] == failed["key"]]
    assert [e["attempt"] for e in starts] == [1, 2]
    assert stream[-1]["failures"][0]["key"] == failed["key"]
    assert stream[-1]["best"] == "base" and stream[-1]["winner"] is None


def test_jobs_that_need_only_logits_share_the_teachers_targets(base_config, tmp_path):
    """Three alpha settings at one seed visit the same blocks: the first job computes the
    teacher's targets into teacher/, the other two read every one of them."""
    sweep_dir = tmp_path / "shared"
    args = ["ablation", "--base-config", str(base_config), "--ablate", "alpha", "--seeds", "1"]
    args += ["--set", "distillation.teacher_cache.enabled=true", "--sweep-dir", str(sweep_dir)]
    result = bench(*args, "--json")
    assert result.exit_code == 0, result.output
    (store,) = (sweep_dir / "teacher").iterdir()
    blocks = len(list(store.glob("block-*.safetensors")))
    assert blocks >= 6 * 2  # 6 steps of batch 2, all distinct in the first epoch
    logs = [(p / "events.log").read_text() for p in sorted((sweep_dir / "jobs").iterdir())]
    reads = sorted(int(log.split("teacher targets: ")[1].split()[0]) for log in logs)
    assert reads[0] == 0 and reads[1:] == [blocks, blocks]
    assert "computed once per teacher" in (sweep_dir / "sweep.yaml").read_text()


def test_profile_trains_one_run_and_writes_the_charts_asked_for(base_config, tmp_path):
    output = tmp_path / "profile.html"
    args = ["profile", "--config", str(base_config), "--output", str(output)]
    result = bench(*args, "--include-loss-curves", "--sweep-dir", str(tmp_path / "p"), "--json")
    assert result.exit_code == 0, result.output
    assert events(result.output)[-1]["charts"] == ["loss-curves"]
    text = output.read_text()
    assert text.count("<svg") == 1 and "Loss per term" in text
    assert "<td>steps</td><td>6</td>" in text and "tokens/s (median, p10-p90)" in text


def test_teacher_and_student_options_build_the_base_from_the_starter(tiny_lm_pair):
    """The original design's `--teacher/--student`: the starter config with those models."""
    from entrenar_tui.core.bench.sweep import BaseRef
    from entrenar_tui.core.errors import InvalidInputError

    teacher, student = tiny_lm_pair
    both = BaseRef(teacher=str(teacher), student=str(student)).load([])
    assert both.teacher.model_id == str(teacher) and both.student.model_id == str(student)
    assert both.student.init_from_teacher is None
    alone = BaseRef(teacher=str(teacher)).load(["training.max_steps=5"])
    assert alone.student.init_from_teacher.layers == [0, 3]  # every third of its 4 layers
    assert alone.training.max_steps == 5
    with pytest.raises(InvalidInputError, match="--teacher"):
        BaseRef().load([])
    result = bench("temperature", "--range", "2..2", "--seeds", "1", "--json")
    assert result.exit_code == 2 and "--config F, or --teacher" in result.output


def test_an_interrupted_sweep_resumes_where_it_stopped(base_config, tmp_path):
    """Ctrl-C: the running job stops at a checkpoint and the sweep exits 130 saying how to go
    on; the same command again skips nothing it should not and resumes the stopped job."""
    import signal
    import subprocess
    import sys
    import time

    from entrenar_tui.core.runs.follow import read_run

    sweep_dir = tmp_path / "sweep"
    args = ["temperature", "--config", str(base_config), "--range", "2..2", "--seeds", "1"]
    args += ["--steps", "200", "--sweep-dir", str(sweep_dir)]  # still training at step 5
    command = [sys.executable, "-m", "entrenar_tui.cli.main", "bench", *args]
    sweep = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, job = time.monotonic() + 300, None
    while job is None and time.monotonic() < deadline:
        found = list((sweep_dir / "jobs").glob("*")) if (sweep_dir / "jobs").is_dir() else []
        if found and read_run(found[0]).step >= 5:  # past its first checkpoint (every 4)
            job = found[0]
        time.sleep(0.1)
    assert job is not None, "the job never trained"
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, err
    assert "run the same command again" in err
    assert read_run(job).state == "stopped"
    again = bench(*args, "--json")
    assert again.exit_code == 0, again.output
    assert events(again.output)[-1]["finished"] == 1
    assert json.loads((job / "run.json").read_text())["resumes"]
