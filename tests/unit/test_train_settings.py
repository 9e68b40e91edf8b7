"""The one settings object (TrainSettings), the distill.yaml keys that map onto it, the checks
that refuse what a device cannot run, and the master-weights optimizer."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from entrenar_tui.cli.main import app
from entrenar_tui.core.distill.config import DistillConfig, parse_config
from entrenar_tui.core.distill.optim import MasterWeights, make_optimizer
from entrenar_tui.core.errors import InvalidInputError
from entrenar_tui.core.memory.settings import TrainSettings, device_problem

runner = CliRunner()


def config(**sections) -> dict:
    data = {"teacher": {"model_id": "t"}, "student": {"model_id": "s"}}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return data


def problems(data: dict) -> list[str]:
    _config, found = parse_config(data)
    return [f"{p.path}: {p.message}" for p in found]


def test_unknown_settings_are_named_with_the_known_ones():
    with pytest.raises(InvalidInputError) as err:
        TrainSettings.from_options(batch_size=1, sequence_length=8, precison="bf16")
    assert "precison" in err.value.message and "precision" in err.value.hint


def test_master_weights_default_on_for_16_bit_full_fine_tuning_only():
    base = TrainSettings(batch_size=1, sequence_length=8, precision="bf16")
    assert base.uses_master_weights
    assert not base.with_(master_weights=False).uses_master_weights
    assert not base.with_(lora_rank=8).uses_master_weights  # adapters are fp32 already
    assert not base.with_(precision="fp32").uses_master_weights


def test_the_config_maps_onto_the_settings():
    data = config(
        student={
            "precision": "bf16",
            "lora": {"enabled": True, "rank": 8, "dropout": 0.1},
            "quantization": {"method": "nf4", "double_quant": False},
        },
        training={"optimizer": "adamw8bit", "batch_size": 3, "gradient_checkpointing": True},
        dataset={"max_length": 64},
    )
    settings = DistillConfig.model_validate(data).student_settings("cuda:1")
    assert settings == TrainSettings(
        batch_size=3,
        sequence_length=64,
        optimizer="adamw8bit",
        precision="bf16",
        gradient_checkpointing=True,
        lora_rank=8,
        lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"),
        lora_dropout=0.1,
        quantize_base="nf4",
        double_quant=False,
        attention="sdpa",
        device="cuda",
    )


@pytest.mark.parametrize(
    "sections, expected",
    [
        ({"student": {"quantization": {"method": "nf4"}, "precision": "bf16"}}, "LoRA adapters"),
        (
            {"student": {"quantization": {"method": "int8"}, "lora": {"enabled": True}}},
            "computes in 16 bits",
        ),
        ({"training": {"master_weights": True}}, "fp32 copies of 16-bit"),
        (
            {"student": {"precision": "bf16"}, "training": {"mixed_precision": "bf16"}},
            "set it to no",
        ),
        ({"training": {"optimizer": "lion"}}, "training.optimizer"),
    ],
)
def test_settings_that_cannot_go_together_are_problems(sections, expected):
    found = problems(config(**sections))
    assert found and any(expected in text for text in found), found


def test_a_quantized_student_cut_from_the_teacher_is_refused_with_the_way_out():
    data = config(
        student={
            "init_from_teacher": {"layers": [0]},
            "precision": "bf16",
            "lora": {"enabled": True},
            "quantization": {"method": "nf4"},
        }
    )
    data["student"].pop("model_id")
    assert any("give student.model_id" in text for text in problems(data))


def test_fp16_on_cpu_fails_at_validate_with_a_hint_naming_bf16(tmp_path, tiny_lm_pair):
    teacher, student = tiny_lm_pair
    data = {
        "device": "cpu",
        "teacher": {"model_id": str(teacher)},
        "student": {"model_id": str(student), "precision": "fp16"},
    }
    path = tmp_path / "fp16.yaml"
    path.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["distill", "validate", "--config", str(path), "--json"])
    assert result.exit_code == 2, result.output
    assert "student.precision" in result.stdout and "bf16" in result.stdout
    out = tmp_path / "run"
    run = runner.invoke(
        app, ["distill", "run", "--config", str(path), "--output", str(out), "--json"]
    )
    assert run.exit_code == 2 and "use precision bf16" in run.output
    assert not out.exists()  # refused before a run directory exists


def test_device_problem_names_what_would_work():
    message, hint = device_problem(
        TrainSettings(batch_size=1, sequence_length=8, precision="fp16", device="cpu")
    )
    assert "CPU" in message and "bf16" in hint
    assert device_problem(TrainSettings(batch_size=1, sequence_length=8, device="cpu")) is None


def _pair(dtype):
    torch.manual_seed(0)
    reference = torch.nn.Parameter(torch.randn(300, 7).to(dtype).float())
    half = torch.nn.Parameter(reference.detach().to(dtype))
    return reference, half


def test_master_weights_update_exactly_as_fp32_adamw_on_the_same_gradients():
    reference, half = _pair(torch.bfloat16)
    settings = TrainSettings(batch_size=1, sequence_length=8, precision="bf16", device="cpu")
    optimizer = make_optimizer([half], settings, 1e-2, 0.01)
    plain = torch.optim.AdamW([reference], lr=1e-2, weight_decay=0.01, fused=True)
    assert isinstance(optimizer, MasterWeights)
    for step in range(5):
        torch.manual_seed(step)
        grad = torch.randn(300, 7).to(torch.bfloat16)
        half.grad, reference.grad = grad.clone(), grad.float()
        optimizer.step()
        plain.step()
        plain.zero_grad()
    assert torch.equal(optimizer.masters[0], reference.detach())  # the fp32 copy is exact
    assert torch.equal(half.detach(), reference.detach().to(torch.bfloat16))
    assert half.grad is None


def test_master_weights_round_trip_through_a_checkpoint():
    _reference, half = _pair(torch.bfloat16)
    settings = TrainSettings(batch_size=1, sequence_length=8, precision="bf16", device="cpu")
    optimizer = make_optimizer([half], settings, 1e-2, 0.0)
    half.grad = torch.ones_like(half)
    optimizer.step()
    state = copy.deepcopy(optimizer.state_dict())  # as torch.save + torch.load give it back
    _reference, other = _pair(torch.bfloat16)
    restored = make_optimizer([other], settings, 1e-2, 0.0)
    restored.load_state_dict(state)
    assert torch.equal(restored.masters[0], optimizer.masters[0])
    assert torch.equal(other.detach(), half.detach())
    for param, opt in ((half, optimizer), (other, restored)):
        param.grad = torch.full_like(param, 0.5)
        opt.step()
    assert torch.equal(restored.masters[0], optimizer.masters[0])


def test_fp16_loss_scaling_skips_an_overflowing_step_and_halves_the_scale():
    _reference, half = _pair(torch.float16)
    settings = TrainSettings(batch_size=1, sequence_length=8, precision="fp16", device="cuda")
    optimizer = make_optimizer([half], settings, 1e-2, 0.0)
    before = half.detach().clone()
    scale = optimizer.scale
    half.grad = torch.full_like(half, float("inf"))
    assert optimizer.step() is False
    assert optimizer.scale == scale / 2 and torch.equal(half.detach(), before)
    loss = optimizer.scale_loss(torch.tensor(1.0))
    assert loss.item() == optimizer.scale
    half.grad = torch.full_like(half, optimizer.scale * 1e-3)  # a scaled gradient of 1e-3
    assert optimizer.step(max_grad_norm=None) is True
    assert optimizer.masters[0].grad is None
    assert not torch.equal(half.detach(), before)


@pytest.mark.slow
def test_a_qlora_run_trains_and_exports_merged_into_the_full_precision_base(tmp_path, tiny_lm_pair):
    """QLoRA on CPU (bitsandbytes NF4) trains; export merges the adapter into the base's own
    fp32 weights: the exported weight is exactly base + B @ A x alpha / r."""
    from safetensors.torch import load_file

    from conftest import write_config

    teacher, _small = tiny_lm_pair
    student = teacher  # bitsandbytes' CPU NF4 kernels need in_features >= 64 (its block size)
    path = write_config(tmp_path / "q.yaml", teacher, student, max_steps=2, eval_every=None)
    data = yaml.safe_load(path.read_text())
    data["student"] |= {
        "precision": "bf16",
        "lora": {"enabled": True, "rank": 4, "alpha": 8, "target_modules": ["q_proj"]},
        "quantization": {"method": "nf4"},
    }
    path.write_text(yaml.safe_dump(data))
    run_dir, out = tmp_path / "run", tmp_path / "merged"
    result = runner.invoke(app, ["distill", "run", "--config", str(path), "--output", str(run_dir)])
    assert result.exit_code == 0, result.output
    command = [
        "distill",
        "export",
        "--input",
        str(run_dir),
        "--format",
        "safetensors",
        "--output",
        str(out),
    ]
    exported = runner.invoke(app, command)
    assert exported.exit_code == 0, exported.output
    merged = load_file(out / "model.safetensors")
    base = load_file(Path(student) / "model.safetensors")
    adapter = load_file(run_dir / "final" / "adapter_model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    lora_a = next(v for k, v in adapter.items() if "layers.0.self_attn.q_proj.lora_A" in k)
    lora_b = next(v for k, v in adapter.items() if "layers.0.self_attn.q_proj.lora_B" in k)
    delta = (lora_b.float() @ lora_a.float()) * (8 / 4)
    assert delta.abs().max() > 0  # the adapter trained
    assert torch.allclose(merged[key].float(), base[key].float() + delta, atol=1e-5)
