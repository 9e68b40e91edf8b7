"""The trainer's numerics on tiny real models: token counts with padding, fp16 (loss scaling on
CUDA, refused on CPU) and the RNG state a checkpoint carries."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F
from test_distill_run import write_config  # noqa: E402
from typer.testing import CliRunner

from entrenar_tui.cli.main import app
from entrenar_tui.core.distill.checkpoint import load_checkpoint, save_checkpoint
from entrenar_tui.core.distill.config import load_config
from entrenar_tui.core.distill.losses import count_tokens
from entrenar_tui.core.distill.rundir import RunDir
from entrenar_tui.core.distill.trainer import Progress, build, micro_batch, train_step

runner = CliRunner()
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
LENGTHS = (32, 20, 11, 25)  # max_length 32: three of the four blocks are padded


def _setup(tmp_path, tiny_lm_pair, **training):
    teacher, student = tiny_lm_pair
    path = write_config(tmp_path / "c.yaml", teacher, student, eval_every=None, **training)
    return build(load_config(str(path)))


def _hand_padded_blocks(s) -> list[list[int]]:
    """Blocks of several lengths, cut from the real training blocks (as an unpacked dataset or
    the last block of a document would give)."""
    return [s.train_blocks[i][:n] for i, n in enumerate(LENGTHS)]


def _hand_losses(student, teacher, blocks, temperature: float) -> tuple[float, float]:
    """(KD, CE) over every real target, each block run alone and unpadded."""
    kd = ce = 0.0
    with torch.no_grad():
        for block in blocks:
            ids = torch.tensor([block])
            s_logits = student(input_ids=ids).logits[0, :-1].double()
            t_logits = teacher(input_ids=ids).logits[0, :-1].double()
            ce += F.cross_entropy(s_logits, ids[0, 1:], reduction="sum").item()
            log_p_t = F.log_softmax(t_logits / temperature, -1)
            log_p_s = F.log_softmax(s_logits / temperature, -1)
            kd += (log_p_t.exp() * (log_p_t - log_p_s)).sum().item() * temperature**2
    targets = sum(len(b) - 1 for b in blocks)
    return kd / targets, ce / targets


def test_a_padded_batch_counts_only_real_targets(tiny_lm_pair, tmp_path):
    s = _setup(tmp_path, tiny_lm_pair, batch_size=4)
    s.train_blocks = _hand_padded_blocks(s)
    batch = micro_batch(s, 0)
    assert sorted(batch.blocks) == [0, 1, 2, 3]
    assert batch.ids.shape == (4, 32)
    assert batch.num_tokens == count_tokens(batch.labels) == sum(n - 1 for n in LENGTHS)
    assert batch.num_positions == sum(LENGTHS)


def test_a_padded_batch_is_normalised_by_its_real_targets(tiny_lm_pair, tmp_path):
    s = _setup(tmp_path, tiny_lm_pair, batch_size=2, gradient_accumulation=2)
    s.train_blocks = _hand_padded_blocks(s)
    student_before = copy.deepcopy(s.student)
    p = Progress()
    terms = train_step(s, p, None)
    kd, ce = _hand_losses(student_before, s.teacher, s.train_blocks, temperature=2.0)
    assert terms["loss_ce"] == pytest.approx(ce, rel=1e-5)
    assert terms["loss_kd"] == pytest.approx(kd, rel=1e-5)
    assert p.tokens == sum(LENGTHS)  # input tokens trained on, padding left out


# ---------------------------------------------------------------------------------- fp16


def _fp16_config(tmp_path, tiny_lm_pair, device: str = "cpu"):
    teacher, student = tiny_lm_pair
    path = write_config(tmp_path / "fp16.yaml", teacher, student, mixed_precision="fp16")
    path.write_text(path.read_text().replace("device: cpu", f"device: {device}"))
    return path


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_validate_refuses_fp16_without_cuda(tiny_lm_pair, tmp_path, device):
    if device == "auto" and torch.cuda.is_available():
        pytest.skip("auto picks CUDA here, where fp16 is fine")
    config = _fp16_config(tmp_path, tiny_lm_pair, device)
    result = runner.invoke(app, ["distill", "validate", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "training.mixed_precision" in result.output and "bf16" in result.output


def test_run_refuses_fp16_on_cpu(tiny_lm_pair, tmp_path):
    config = _fp16_config(tmp_path, tiny_lm_pair)
    out = tmp_path / "run"
    result = runner.invoke(app, ["distill", "run", "--config", str(config), "--output", str(out)])
    assert result.exit_code == 2, result.output
    assert "fp16" in result.output and "bf16" in result.output
    assert "Traceback" not in result.output


@CUDA
def test_fp16_on_cuda_scales_the_loss_and_checkpoints_the_scaler(tiny_lm_pair, tmp_path):
    config = load_config(str(_fp16_config(tmp_path, tiny_lm_pair, "cuda")))
    s = build(config)
    assert isinstance(s.scaler, torch.amp.GradScaler) and s.scaler.is_enabled()
    p = Progress()
    for _ in range(2):
        train_step(s, p, None)
    s.scaler.update(1234.0)  # a scale no fresh scaler has
    folder = save_checkpoint(s, p, RunDir(tmp_path / "run"))
    state = torch.load(folder / "trainer.pt", weights_only=True)
    assert state["scaler"]["scale"] == 1234.0
    resumed = build(config)
    load_checkpoint(resumed, folder)
    assert resumed.scaler.get_scale() == 1234.0


def test_no_scaler_where_none_is_needed(tiny_lm_pair, tmp_path):
    s = _setup(tmp_path, tiny_lm_pair, mixed_precision="bf16", max_steps=1)
    assert s.scaler is None
    assert train_step(s, Progress(), None)["loss"] > 0  # bf16 on CPU trains, unscaled


# ---------------------------------------------------------------------------------- RNG


def _checkpoint_and_draw(s, tmp_path, draw):
    """Checkpoint, draw, restore the checkpoint, draw again: the two draws must agree."""
    folder = save_checkpoint(s, Progress(step=1), RunDir(tmp_path / "run"))
    first = draw()
    load_checkpoint(s, folder)
    return first, draw(), torch.load(folder / "trainer.pt", weights_only=True)["rng"]


def test_a_checkpoint_restores_the_cpu_and_python_rng(tiny_lm_pair, tmp_path):
    s = _setup(tmp_path, tiny_lm_pair)
    first, again, rng = _checkpoint_and_draw(
        s, tmp_path, lambda: (torch.rand(4).tolist(), random.random())
    )
    assert first == again
    expected = len(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else 0
    assert len(rng["cuda"]) == expected  # one state per CUDA device, none without CUDA


@CUDA
def test_a_checkpoint_restores_every_cuda_rng(tiny_lm_pair, tmp_path):
    s = _setup(tmp_path, tiny_lm_pair)
    devices = range(torch.cuda.device_count())

    def draw():
        return [torch.rand(4, device=f"cuda:{i}").tolist() for i in devices]

    first, again, rng = _checkpoint_and_draw(s, tmp_path, draw)
    assert first == again
    assert len(rng["cuda"]) == torch.cuda.device_count()
