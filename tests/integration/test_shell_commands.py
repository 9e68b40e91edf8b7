"""The shell's model and training commands (estimate, profile, optimize, finetune, evaluate,
save, convert, quantize, memory's int8 row), driven through `entrenar shell --json -c ...` on
tiny real models, with the values they report checked against core and the files they write."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from typer.testing import CliRunner

from entrenar_tui.cli.main import app
from entrenar_tui.cli.shell_print import ShellCompleter
from entrenar_tui.core.shell.commands import COMMANDS

# A small LLaMA (config only): big enough that a measured CPU step is steady (tests/unit/
# test_memory.py holds the estimate to 10 % of it), small enough to train in a second.
LLAMA_SMALL = dict(
    model_type="llama",
    vocab_size=1000,
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=128,
)
TINY_SETTINGS = "set seq 32; set batch 2; set eval_blocks 4; set device cpu"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTRENAR_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def shell(*args: str):
    return CliRunner().invoke(app, ["shell", *args], catch_exceptions=False)


def shell_json(script: str, *flags: str) -> tuple[int, list[dict]]:
    """(exit code, one JSON document per output) of a script run with --json."""
    result = shell("--json", *flags, "-c", script)
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines() if line]


def test_help_lists_every_command_and_completion_offers_the_new_options():
    result = shell("-c", "help; help optimize")
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert f"│ {name} " in result.output, name
    assert "optimize [model] [--vram SIZE]" in result.output
    completer = ShellCompleter()

    def complete(text: str) -> list[str]:
        found = completer.get_completions(Document(text, len(text)), CompleteEvent())
        return [item.text for item in found]

    assert {"estimate", "evaluate"} <= set(complete("e"))
    assert complete("optimize --v") == ["--vram"]
    assert "--learning-rate" in complete("finetune --")
    assert "--quantize" in complete("convert gguf out.gguf --")


def test_memory_has_an_int8_lora_row_between_bf16_and_nf4(home):
    from entrenar_tui.core.memory import estimate_for_model

    code, outputs = shell_json("fetch smollm2-135m; memory --batch 4 --seq 64 --rank 8")
    assert code == 0, outputs
    rows = {row["precision"]: row for row in outputs[1]["data"]["rows"]}
    assert list(rows) == ["fp32", "fp16/bf16", "int8 + LoRA", "nf4 + LoRA"]
    int8 = estimate_for_model(
        "smollm2-135m",
        batch_size=4,
        sequence_length=64,
        precision="bf16",
        quantize_base="int8",
        lora_rank=8,
        lora_dropout=0.05,  # the trainer's LoRA dropout (distill.yaml's default)
    )
    assert rows["int8 + LoRA"]["total"] == int8.total_bytes
    for row in rows.values():  # the columns and the runtime make up the total
        parts = row["model"] + row["state"] + row["activations"] + row["runtime"]
        assert parts == row["total"]
    # int8 stores a byte per block weight: between the bf16 base and NF4's half byte
    assert rows["nf4 + LoRA"]["model"] < rows["int8 + LoRA"]["model"] < rows["fp16/bf16"]["model"]


def test_convert_and_quantize_write_models_that_load(home, tiny_lm_pair):
    import gguf

    from entrenar_tui.core.inspect.info import model_info

    teacher = str(tiny_lm_pair[0])
    script = f"fetch {teacher}; convert pth tiny.pth; quantize q8_0 tiny-q8.gguf"
    code, outputs = shell_json(script)
    assert code == 0, outputs
    converted, quantized = outputs[1], outputs[2]
    assert converted["message"].startswith(f"✓ Converted {teacher} to {home / 'tiny.pth'} (")
    assert model_info(str(home / "tiny.pth")).parameters == model_info(teacher).parameters
    assert "verified" in quantized["message"] and quantized["data"]["quantize"] == "q8_0"
    kinds = {t.tensor_type for t in gguf.GGUFReader(home / "tiny-q8.gguf").tensors}
    assert gguf.GGMLQuantizationType.Q8_0 in kinds
    size = (home / "tiny-q8.gguf").stat().st_size
    assert f"({size / 1024:.2f} KiB," in quantized["message"]


def test_evaluate_a_model_gives_a_perplexity_that_is_exp_of_its_loss(home, tiny_lm_pair):
    teacher = str(tiny_lm_pair[0])
    code, outputs = shell_json(f"{TINY_SETTINGS}; evaluate {teacher}")
    assert code == 0, outputs
    result = outputs[-1]["data"]["result"]
    assert math.isfinite(result["eval_loss"]) and result["kind"] == "model"
    assert result["eval_ppl"] == pytest.approx(math.exp(result["eval_loss"]), rel=1e-9)
    assert result["blocks"] == 4 and result["tokens"] == 4 * 31
    # an untrained model guesses: its loss is close to ln(vocabulary)
    vocab = json.loads((tiny_lm_pair[0] / "config.json").read_text())["vocab_size"]
    assert abs(result["eval_loss"] - math.log(vocab)) < 0.3


def test_profile_measures_a_step_within_15_percent_of_the_estimate(home):
    model = home / "llama-small"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA_SMALL))
    code, outputs = shell_json(f"set device cpu; profile {model} --batch 2 --seq 64")
    assert code == 0, outputs
    data = outputs[-1]["data"]
    measured, estimate = data["measured"]["peak_bytes"], data["estimate"]["step_bytes"]
    assert abs(estimate - measured) / measured <= 0.15, data
    assert data["header"] == ["", "estimate", "measured"] and "fp32 AdamW" in data["title"]
    assert "Measured step peak" in outputs[-1]["message"]


def test_optimize_names_the_method_that_fits_and_refuses_what_cannot(home, tiny_lm_pair):
    teacher = str(tiny_lm_pair[0])
    code, outputs = shell_json(f"fetch {teacher}; optimize --vram 1GB; optimize --vram 1MB")
    assert code == 2
    rows = dict(outputs[1]["data"]["rows"])
    assert rows["method"] == "full fine-tuning" and outputs[1]["message"].startswith("✓ Fits:")
    assert outputs[1]["data"]["plan"]["memory"]["total_bytes"] <= 0.9 * 2**30
    assert "needs at least" in outputs[2]["error"]["message"]
    bad = shell("-c", "optimize --vram lots")
    assert bad.exit_code == 2 and "--vram must be a size like 16GB" in bad.output


def test_estimate_is_the_distill_plan_as_a_table(home, tiny_lm_pair):
    teacher, student = map(str, tiny_lm_pair)
    script = f"set teacher {teacher}; set student {student}; {TINY_SETTINGS}; estimate --steps 7"
    code, outputs = shell_json(script)
    assert code == 0, outputs
    estimate = outputs[-1]["data"]["estimate"]
    assert estimate["total_bytes"] == sum(estimate["breakdown"].values())
    assert estimate["total_steps"] == 7 and estimate["seconds_per_step"] > 0
    assert outputs[-1]["data"]["rows"][-1][0] == "total"
    assert "Estimated time:" in outputs[-1]["message"] and "Loss: KL(T=2)" in outputs[-1]["message"]


def test_the_new_commands_fail_with_hints_before_a_model_or_run_exists(home, tiny_lm_pair):
    script = (
        "estimate; profile; optimize --vram 1GB; finetune; evaluate; save out; "
        "convert gguf x.gguf; quantize q8_0 x.gguf; "
        f"quantize q5_1 x.gguf {tiny_lm_pair[0]}; convert foo x {tiny_lm_pair[0]}; "
        f"evaluate {home}; save out {home}; config"
    )
    result = shell("-c", script)
    assert result.exit_code == 2
    assert result.output.count("error:") == 12 == result.output.count("hint:")
    assert "q8_0 or q4_0" in result.output and "unknown target format 'foo'" in result.output
    assert "is not a run directory" in result.output  # save on a folder that is no run
    assert "Session " in result.output  # the shell went on to the last command


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_lm_pair):
    """(folder, exit code, outputs) of a session that fine-tunes the tiny teacher for 3 steps
    (in the background) and watches the run to its end."""
    root = tmp_path_factory.mktemp("finetune")
    script = (
        f"fetch {tiny_lm_pair[0]}; {TINY_SETTINGS}\n"
        "finetune --steps 3 --rank 4 --lr 1e-3 --output runs/ft\n"
        "watch\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENTRENAR_HOME", str(root / "home"))
        patch.chdir(root)
        code, outputs = shell_json(script)
    return root, code, outputs


@pytest.mark.slow
def test_finetune_asks_first_then_trains_lora_with_alpha_0(home, tiny_lm_pair, finetuned):
    asked = shell("-c", f"fetch {tiny_lm_pair[0]}; {TINY_SETTINGS}; finetune --steps 2 --dry-run")
    assert "Loss: CE (alpha 0: no distillation term)" in asked.output
    assert "+ LoRA r=16 on q_proj, k_proj, v_proj, o_proj" in asked.output
    assert "Not started." in asked.output and not (home / "runs").exists()
    root, code, outputs = finetuned
    assert code == 0, outputs
    assert outputs[-1] == {"kind": "progress", "line": "runs/ft: finished at step 3"}
    run = root / "runs" / "ft"
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert (run / "final" / "adapter_config.json").exists()
    assert (run / "final" / "adapter_model.safetensors").exists()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["distillation"]["alpha"] == 0.0 and config["student"]["lora"]["rank"] == 4
    assert config["student"]["lora"]["enabled"] and config["training"]["learning_rate"] == 1e-3
    assert config["student"]["model_id"] == config["teacher"]["model_id"] == str(tiny_lm_pair[0])


@pytest.mark.slow
def test_evaluate_and_save_a_finetuned_run(home, tiny_lm_pair, finetuned):
    from entrenar_tui.core.inspect.info import model_info

    run = finetuned[0] / "runs" / "ft"
    code, outputs = shell_json(f"set device cpu; evaluate {run}; save saved-model {run}")
    assert code == 0, outputs
    held_out = outputs[1]["data"]["result"]
    assert held_out["kind"] == "run" and held_out["recorded"]["step"] == 3
    assert held_out["eval_ppl"] == pytest.approx(math.exp(held_out["eval_loss"]), rel=1e-9)
    # the merged student on the run's own held-out blocks: what the run's last eval measured
    assert held_out["eval_ppl"] == pytest.approx(held_out["recorded"]["eval_ppl"], rel=1e-4)
    saved = outputs[2]["message"]
    assert saved.startswith("✓ Saved to saved-model (") and saved.endswith(", safetensors)")
    merged = model_info(str(home / "saved-model"))
    assert merged.parameters == model_info(str(tiny_lm_pair[0])).parameters
