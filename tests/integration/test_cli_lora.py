"""`entrenar lora merge|inspect|convert` through the CLI on a real PEFT adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from entrenar_tui.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def adapter_pair(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = tiny_model_dir("llama")
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir), folder
    ).merge_and_unload()
    return base_dir, folder, {k: v.clone() for k, v in merged.state_dict().items()}


def test_inspect_reports_rank_alpha_scale(adapter_pair):
    _, adapter, _ = adapter_pair
    result = runner.invoke(app, ["lora", "inspect", str(adapter), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["rank"], report["alpha"], report["scale"]) == (4, 8, 2.0)
    assert sorted(report["target_modules"]) == ["q_proj", "v_proj"]
    assert report["parameters"] == 3 * (4 * (64 + 64) + 4 * (64 + 32))  # q: 64->64, v: 64->32 (GQA)
    assert all(m["effective_rank"] <= 4 for m in report["modules"])


def test_merge_equals_peft(adapter_pair, tmp_path):
    from safetensors.torch import load_file

    base, adapter, expected = adapter_pair
    result = runner.invoke(
        app,
        [
            "lora",
            "merge",
            "--base",
            str(base),
            "--adapter",
            str(adapter),
            "--output",
            str(tmp_path / "merged"),
        ],
    )
    assert result.exit_code == 0, result.output
    got = load_file(tmp_path / "merged" / "model.safetensors")
    for name, tensor in got.items():
        assert torch.allclose(tensor, expected[name], atol=1e-5), name


def test_untrained_adapter_exits_3(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama")),
        LoraConfig(r=2, target_modules=["q_proj"]),
    )
    model.save_pretrained(tmp_path)
    result = runner.invoke(app, ["lora", "inspect", str(tmp_path)])
    assert result.exit_code == 3 and "zero_b" in result.stdout


def test_missing_adapter_config_exits_2(tmp_path):
    result = runner.invoke(app, ["lora", "inspect", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")


def test_convert_to_pth(adapter_pair, tmp_path):
    _, adapter, _ = adapter_pair
    result = runner.invoke(
        app,
        [
            "lora",
            "convert",
            str(adapter),
            "--to",
            "pth",
            "--output",
            str(tmp_path / "pth"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pth" / "adapter_model.bin").exists()


# ---- lora plan / lora compare --------------------------------------------------------------------

LLAMA_CONFIG = str(Path(__file__).parents[1] / "data" / "configs" / "llama-2-7b.json")


@pytest.mark.parametrize(
    "vram, method, rank", [("16GB", "qlora", 64), ("24GB", "lora", 64), ("80GB", "full", None)]
)
def test_plan_json_for_llama2_7b(vram, method, rank):
    result = runner.invoke(app, ["lora", "plan", "--model", LLAMA_CONFIG, "--vram", vram, "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert (plan["method"], plan["rank"]) == (method, rank)
    assert plan["memory"]["total_bytes"] <= plan["vram_bytes"] and plan["utilization"] <= 1
    assert plan["batch_size"] * plan["gradient_accumulation"] == 16
    assert plan["rejected"] and all(
        r["memory_bytes"] > plan["budget_bytes"] for r in plan["rejected"]
    )


def test_plan_table_explains_and_writes_config(tmp_path):
    import yaml

    out = tmp_path / "lora.yaml"
    result = runner.invoke(
        app,
        ["lora", "plan", "-m", LLAMA_CONFIG, "--vram", "16GB", "--write-config", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "QLoRA" in result.stdout and "why not the better options" in result.stdout
    assert f"wrote {out}" in result.stdout
    fragment = yaml.safe_load(out.read_text())
    assert fragment["student"]["lora"]["rank"] == 64
    assert fragment["training"]["gradient_checkpointing"] is True


def test_plan_that_cannot_fit_exits_2():
    result = runner.invoke(app, ["lora", "plan", "-m", LLAMA_CONFIG, "--vram", "4GB"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "needs at least" in result.stderr
    assert "hint: " in result.stderr


def test_plan_bad_method_json_error():
    result = runner.invoke(
        app, ["lora", "plan", "-m", LLAMA_CONFIG, "--vram", "16GB", "--method", "dora", "--json"]
    )
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == 2 and "lora-RANK" in error["hint"]


def test_plan_needs_vram():
    result = runner.invoke(app, ["lora", "plan", "-m", LLAMA_CONFIG])
    assert result.exit_code == 2


def test_compare_json_and_table():
    args = ["lora", "compare", "-m", LLAMA_CONFIG, "--methods", "full,lora-16,lora-64,qlora-4bit"]
    result = runner.invoke(app, [*args, "--vram", "24GB", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [r["method"] for r in rows] == ["full", "lora-16", "lora-64", "qlora-4bit"]
    assert [r["fits"] for r in rows] == [False, True, True, True]
    assert all(isinstance(r["memory_bytes"], int) for r in rows)
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "qlora-4bit" in table.stdout and "Dettmers" in table.stdout


def test_compare_unknown_method_exits_2():
    result = runner.invoke(app, ["lora", "compare", "-m", LLAMA_CONFIG, "--methods", "full,bogus"])
    assert result.exit_code == 2 and "unknown method" in result.stderr
