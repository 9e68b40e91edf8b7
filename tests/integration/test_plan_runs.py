"""Every plan runs: `lora plan --write-config --config BASE --device cpu` writes a config, a real
`entrenar distill run` trains it on CPU, and its measured peak is within 10 % of the plan's own
estimate, for each method the planner can choose (full bf16 with AdamW, full bf16 with 8-bit
AdamW, LoRA on a bf16 base, QLoRA on an NF4 base).

As in test_estimate_vs_run, the CPU runtime (Python, torch, transformers, bitsandbytes) is a
property of the machine, not of the run: a run of a tiny student with the same method gives
that baseline, and the small student's peak above it is compared with what the estimate
models. The base config sets alpha 0 (cross-entropy only), so the frozen teacher's logits,
which the plan does not count, are never computed; the teacher itself is a 0.2M-parameter
model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import train_tiny_tokenizer
from entrenar_tui.cli.main import app

pytestmark = pytest.mark.slow
runner = CliRunner()
MIB = 2**20
TOLERANCE = 0.10
BATCH, SEQUENCE = 8, 128
STUDENTS = {"tiny": (2, 32, 64), "small": (4, 768, 2048)}  # layers, hidden, intermediate


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch
    import transformers

    root = tmp_path_factory.mktemp("plan-runs")
    tokenizer_dir = train_tiny_tokenizer(root / "tokenizer")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    folders = {}
    for name, (layers, hidden, intermediate) in {"teacher": (2, 32, 64), **STUDENTS}.items():
        config = transformers.LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=8,
            num_key_value_heads=4,
            max_position_embeddings=256,
            tie_word_embeddings=False,
            eos_token_id=0,
            bos_token_id=0,
            pad_token_id=0,
        )
        torch.manual_seed(1)
        folders[name] = root / name
        transformers.LlamaForCausalLM(config).save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    base = root / "base.yaml"
    base.write_text(
        yaml.safe_dump(
            {
                "seed": 3,
                "device": "cpu",
                "teacher": {"model_id": str(folders["teacher"])},
                "student": {"model_id": str(folders["teacher"])},  # the plan replaces it
                "distillation": {"alpha": 0.0},
                "training": {
                    "max_steps": 3,
                    "learning_rate": 1e-4,
                    "warmup_steps": 0,
                    "log_every": 1,
                    "eval_every": None,
                },
                "dataset": {"source": "builtin", "max_documents": 200, "eval_fraction": 0.0},
                "output": {"checkpoint_every": None},
            }
        )
    )
    return folders, base


def plan(model: Path, method: str, base: Path, out: Path) -> dict:
    command = ["lora", "plan", "--model", str(model), "--vram", "64GB", "--method", method]
    command += ["--batch-size", str(BATCH), "--sequence-length", str(SEQUENCE), "--headroom", "0"]
    command += ["--device", "cpu", "--config", str(base), "--write-config", str(out), "--json"]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def measured_peak(config: Path, out: Path) -> int:
    from entrenar_tui.core.memory import measure_run_peak

    peak = measure_run_peak(config, out)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["kind"] == "train" for line in lines) == 3
    return peak


def modelled(plan_data: dict) -> int:
    memory = plan_data["memory"]
    return memory["total_bytes"] - memory["breakdown"]["overhead"]


def as_int8(plan_data: dict, config: Path) -> dict:
    """The QLoRA plan's config with an int8 (LLM.int8) base instead, and `distill estimate`'s
    student part for it: the planner never picks int8, but the estimator and trainer know it."""
    written = yaml.safe_load(config.read_text())
    written["student"]["quantization"] = {"method": "int8"}
    config.write_text(yaml.safe_dump(written))
    command = ["distill", "estimate", "--config", str(config), "--steps", "0", "--json"]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    student = json.loads(result.stdout)["student_estimate"]
    return {**plan_data, "memory": student, "settings": student["inputs"]}


@pytest.mark.parametrize(
    "method, expected",
    [
        ("full", ("full", "adamw", None)),
        ("full-8bit", ("full", "adamw8bit", None)),
        ("lora-8", ("lora", "adamw", None)),
        ("qlora-8", ("qlora", "adamw", "nf4")),
        ("int8", ("qlora", "adamw", "int8")),
    ],
)
def test_the_plan_trains_within_ten_percent_of_its_estimate(models, tmp_path, method, expected):
    folders, base = models
    peaks, estimates = {}, {}
    for name in STUDENTS:
        config = tmp_path / f"{name}.yaml"
        estimates[name] = plan(folders[name], method.replace("int8", "qlora-8"), base, config)
        if method == "int8":
            estimates[name] = as_int8(estimates[name], config)
        written = yaml.safe_load(config.read_text())
        assert written["student"]["model_id"] == str(folders[name])
        peaks[name] = measured_peak(config, tmp_path / f"run-{name}")
    small = estimates["small"]
    settings = small["settings"]
    assert (small["method"], settings["optimizer"], settings["quantize_base"]) == expected
    assert (small["batch_size"], small["gradient_checkpointing"]) == (BATCH, False)
    runtime = peaks["tiny"] - modelled(estimates["tiny"])
    above_runtime = peaks["small"] - runtime
    estimate = modelled(small)
    assert estimate > 15 * modelled(estimates["tiny"])  # the tiny run is only the baseline
    error = (estimate - above_runtime) / above_runtime
    print(
        f"{method}: estimate {estimate / MIB:.1f} MiB, measured {above_runtime / MIB:.1f} MiB ({error:+.1%})"
    )
    assert abs(error) <= TOLERANCE, (
        f"{method}: estimated {estimate / MIB:.1f} MiB, measured {above_runtime / MIB:.1f} MiB"
        f" above a {runtime / MIB:.1f} MiB runtime ({error:+.1%})"
    )
