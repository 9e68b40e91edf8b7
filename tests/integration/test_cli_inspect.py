"""`entrenar inspect` through the real CLI, in-process, on real models."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import ARCHES
from entrenar_tui.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def invoke_json(*args: str) -> dict:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("entrenar 0.")


def test_info_smollm2_gguf_reads_metadata():
    info = invoke_json("inspect", "info", "smollm2-135m")
    assert info["architecture"] == "LLaMA"
    assert info["kind"] == "gguf"
    assert (info["layers"], info["hidden_size"], info["vocab_size"]) == (30, 576, 49152)
    assert (info["heads"], info["kv_heads"]) == (9, 3)
    # 134,515,008 = the parameters stored in the GGUF (tied embeddings stored once)
    assert info["parameters"] == 134_515_008
    assert set(info["dtypes"]) == {"Q4_1", "Q8_0", "F32"}
    assert info["file_size_bytes"] > 90_000_000


def test_info_minilm_safetensors_exact_parameters():
    info = invoke_json("inspect", "info", "minilm-l6")
    assert info["architecture"] == "BERT"
    assert info["parameters"] == 22_713_216  # BertModel.num_parameters()
    assert info["layers"] == 6 and info["hidden_size"] == 384 and info["vocab_size"] == 30522


@pytest.mark.parametrize("arch", ARCHES)
def test_info_and_layers_every_architecture(arch, tiny_model_dir):
    from conftest import build_tiny_model

    folder = tiny_model_dir(arch)
    info = invoke_json("inspect", "info", str(folder))
    model = build_tiny_model(arch)
    assert info["model_type"] == arch
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    layers = invoke_json("inspect", "layers", str(folder))
    assert layers["parameters"] == info["parameters"]
    assert sum(g["parameters"] for g in layers["groups"]) == info["parameters"]
    verbose = invoke_json("inspect", "layers", str(folder), "--verbose")
    assert len(verbose["tensors"]) == info["tensor_count"]


def test_layers_groups_blocks_in_numeric_order():
    layers = invoke_json("inspect", "layers", "smollm2-135m")
    blocks = [g["name"] for g in layers["groups"] if g["name"].startswith("blk.")]
    assert blocks == [f"blk.{i}" for i in range(30)]


def test_layers_table_output_is_human_readable():
    result = invoke("inspect", "layers", "minilm-l6")
    assert result.exit_code == 0
    assert "encoder.layer.5" in result.stdout
    assert "22,713,216 parameters" in result.stdout


def test_compare_structure_and_values(tiny_model_dir, tmp_path):
    from conftest import build_tiny_model

    a = tiny_model_dir("llama")
    other = tmp_path / "llama-other"
    build_tiny_model("llama", seed=1).save_pretrained(other)
    same = invoke_json("inspect", "compare", str(a), str(a), "--values")
    assert same["identical_structure"] and same["max_abs_diff"] == 0.0
    diff = invoke_json("inspect", "compare", str(a), str(other), "--values")
    assert diff["identical_structure"]
    assert all(v["relative_l2"] > 0.1 for v in diff["values"] if "norm" not in v["name"])
    gpt2 = invoke_json("inspect", "compare", str(a), str(tiny_model_dir("gpt2")))
    assert not gpt2["identical_structure"] and gpt2["added"] and gpt2["removed"]


def test_unknown_model_is_one_line_error_exit_2():
    result = invoke("inspect", "info", "./does/not/exist.safetensors")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert "Traceback" not in result.output


def test_offline_hub_id_names_the_id_and_does_not_hang():
    result = invoke("inspect", "info", "no-such-org/no-such-model", "--json")
    assert result.exit_code == 2
    err = json.loads(result.stdout)["error"]
    assert "no-such-org/no-such-model" in err["message"] and err["hint"] and err["code"] == 2


def test_guessed_fields_are_shown_as_inferred(tmp_path):
    """MiniLM as a bare .pth has no config: its 12 heads cannot be read from shapes, and the
    detector's guess must not be presented as a fact (in the table or in --json)."""
    pth = tmp_path / "minilm.pth"
    converted = invoke("inspect", "convert", "minilm-l6", "--to", "pth", "--output", str(pth))
    assert converted.exit_code == 0, converted.output
    info = invoke_json("inspect", "info", str(pth))
    assert "heads" in info["inferred"]
    table = invoke("inspect", "info", str(pth))
    heads_row = next(line for line in table.stdout.splitlines() if "attention heads" in line)
    assert "(inferred)" in heads_row
    read = invoke_json("inspect", "info", "minilm-l6")  # config.json: nothing guessed
    assert read["inferred"] == [] and read["heads"] == 12
    plain = invoke("inspect", "info", "minilm-l6").stdout
    assert "(inferred)" not in plain
