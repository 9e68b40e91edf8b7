"""Two CPU processes (gloo) against one at equal global batch, and ranks that agree to stop.

Rank r takes global micro-batch micro * W + r, so two ranks with accumulation A see exactly the
blocks one process sees with accumulation 2A: the weights after training must match.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_distill_run import write_config  # noqa: E402
from typer.testing import CliRunner

from entrenar_tui.cli.main import app

TORCHRUN = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")


def _train_losses(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [m["loss"] for m in lines if m["kind"] == "train"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_single(config: Path, out: Path) -> None:
    result = CliRunner().invoke(
        app, ["distill", "run", "--config", str(config), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output


def _run_torchrun(config: Path, out: Path) -> subprocess.CompletedProcess:
    port = str(_free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": port}
    command = [TORCHRUN, "--nproc_per_node", "2", "--master_port", port]
    command += ["-m", "entrenar_tui.cli.main", "distill", "run", "--config", str(config)]
    command += ["--output", str(out), "--json"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _needs_torchrun() -> None:
    if not os.path.exists(TORCHRUN):
        pytest.skip("torchrun not installed")


@pytest.mark.slow
def test_two_cpu_processes_match_one_at_equal_global_batch(tiny_lm_pair, tmp_path):
    _needs_torchrun()
    teacher, student = tiny_lm_pair
    common = dict(eval_every=None, max_steps=5)
    # one process: batch 2 x accumulation 2; two processes: batch 2 x accumulation 1 each
    single_cfg = write_config(
        tmp_path / "single.yaml", teacher, student, **common, gradient_accumulation=2
    )
    ddp_cfg = write_config(
        tmp_path / "ddp.yaml", teacher, student, **common, gradient_accumulation=1
    )
    for path in (single_cfg, ddp_cfg):
        _set(path, "output", checkpoint_every=None)
    _run_single(single_cfg, tmp_path / "single")
    proc = _run_torchrun(ddp_cfg, tmp_path / "ddp")
    a, b = _train_losses(tmp_path / "single"), _train_losses(tmp_path / "ddp")
    assert len(a) == len(b) == 5
    for x, y in zip(a, b, strict=True):
        assert abs(x - y) <= 1e-4 * abs(x), (a, b)
    events = [json.loads(x)["event"] for x in proc.stdout.splitlines()]
    assert events.count("end") == 1  # only rank 0 reports


def _set(path: Path, section: str, **values) -> None:
    data = yaml.safe_load(path.read_text())
    data.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data))


def _transfer_config(path: Path, teacher, student, accumulation: int) -> Path:
    """Hidden-state + attention transfer from the 64-wide teacher to the 32-wide student (so the
    loss module learns projections), a clipping norm small enough to bind at every step."""
    training = dict(max_steps=4, gradient_accumulation=accumulation, max_grad_norm=0.05)
    write_config(path, teacher, student, eval_every=None, learning_rate=1e-3, **training)
    _set(path, "output", checkpoint_every=4)
    hidden = {"enabled": True, "layer_mapping": [[0, 1], [1, 3]], "weight": 0.5}
    _set(path, "distillation", progressive=hidden, attention={"enabled": True, "weight": 0.5})
    return path


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "step-000004" / "trainer.pt", weights_only=True)
    return {
        **{f"student.{k}": v for k, v in state["student"].items()},
        **{f"loss_fn.{k}": v for k, v in state["loss_fn"].items()},
    }


@pytest.mark.slow
def test_ddp_with_hidden_and_attention_transfer_matches_one_process(tiny_lm_pair, tmp_path):
    _needs_torchrun()
    teacher, student = tiny_lm_pair
    single_cfg = _transfer_config(tmp_path / "single.yaml", teacher, student, accumulation=4)
    ddp_cfg = _transfer_config(tmp_path / "ddp.yaml", teacher, student, accumulation=2)
    _run_single(single_cfg, tmp_path / "single")
    _run_torchrun(ddp_cfg, tmp_path / "ddp")
    single, ddp = _final_state(tmp_path / "single"), _final_state(tmp_path / "ddp")
    projections = [k for k in single if "projections" in k]
    assert projections, "the student is narrower than the teacher: projections must be learned"
    assert single.keys() == ddp.keys()
    worst = max((single[k].float() - ddp[k].float()).abs().max().item() for k in single)
    assert worst <= 1e-6, worst


# ----------------------------------------------------------------- ranks that disagree


def _rank_main(rank: int, port: int, config_path: str, run_dir: str, stop_after, results) -> None:
    """One rank of a 2-process gloo run in a spawned process; reports (rank, outcome, step)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from entrenar_tui.core.distill.config import load_config
    from entrenar_tui.core.distill.run import run_distillation
    from entrenar_tui.core.errors import EntrenarError

    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return stop_after is not None and len(calls) >= stop_after

    try:
        result = run_distillation(load_config(config_path), run_dir, should_stop=should_stop)
        results.put((rank, result.state, result.step))
    except EntrenarError as exc:
        results.put((rank, type(exc).__name__, exc.message))
    except Exception as exc:  # what a rank left alone by the other one ends with
        results.put((rank, "crash", f"{type(exc).__name__}: {exc}"))


def _run_two_ranks(configs, run_dir: Path, stop_after) -> dict:
    import queue

    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.Queue()
    port = _free_port()
    procs = [
        context.Process(
            target=_rank_main,
            args=(rank, port, str(configs[rank]), str(run_dir), stop_after[rank], results),
        )
        for rank in (0, 1)
    ]
    for proc in procs:
        proc.start()
    outcomes = {}
    try:
        for _ in procs:
            rank, *outcome = results.get(timeout=300)
            outcomes[rank] = tuple(outcome)
    except queue.Empty:
        pass
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    assert len(outcomes) == 2, f"a rank hung (got only {outcomes})"
    return outcomes


@pytest.mark.slow
def test_a_stop_requested_on_one_rank_stops_both_at_the_same_step(tiny_lm_pair, tmp_path):
    teacher, student = tiny_lm_pair
    config = write_config(tmp_path / "c.yaml", teacher, student, eval_every=None, max_steps=8)
    _set(config, "output", checkpoint_every=None)
    # rank 1 alone is asked to stop, at its second step; rank 0 never is
    outcomes = _run_two_ranks([config, config], tmp_path / "run", stop_after=[None, 2])
    assert outcomes == {0: ("stopped", 2), 1: ("stopped", 2)}
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "stopped" and status["step"] == 2
    assert (tmp_path / "run" / "checkpoints" / "step-000002").is_dir()


def _poisoned_copy(model_dir: Path, target: Path) -> Path:
    """The teacher with a NaN output layer: every loss on the rank that loads it is NaN."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, target)
    weights = load_file(target / "model.safetensors")
    weights["lm_head.weight"] = torch.full_like(weights["lm_head.weight"], float("nan"))
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_fails_both_at_the_same_step(tiny_lm_pair, tmp_path):
    teacher, student = tiny_lm_pair
    good = write_config(tmp_path / "good.yaml", teacher, student, eval_every=None, max_steps=8)
    bad_teacher = _poisoned_copy(Path(teacher), tmp_path / "nan-teacher")
    bad = write_config(tmp_path / "bad.yaml", bad_teacher, student, eval_every=None, max_steps=8)
    for path in (good, bad):
        _set(path, "output", checkpoint_every=None)
        _set(path, "dataset", eval_fraction=0.0)  # rank 0 would evaluate its good teacher only
    outcomes = _run_two_ranks([good, bad], tmp_path / "run", stop_after=[None, None])
    assert {rank: outcome[0] for rank, outcome in outcomes.items()} == {
        0: "TrainingDivergedError",
        1: "TrainingDivergedError",
    }, outcomes
    assert all("at step 1" in outcome[1] for outcome in outcomes.values()), outcomes
