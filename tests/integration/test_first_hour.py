"""A new user's first hour from a clean clone: what the README shows runs, and mistakes get
an answer that says what went wrong (issue 10, "A new user's first hour")."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from entrenar_tui.cli.main import app
from entrenar_tui.core.errors import InvalidInputError, ModelNotFoundError
from entrenar_tui.core.models import Model, resolve
from entrenar_tui.core.sizes import parse_size

ROOT = Path(__file__).resolve().parents[2]
LLAMA2 = ROOT / "examples" / "llama-2-7b" / "config.json"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


# ---- examples/llama-2-7b/config.json and the README's lora plan lines -------------------------


def test_llama2_config_is_the_real_meta_config():
    config = json.loads(LLAMA2.read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    expected = {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 11008,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
    }
    assert {k: config[k] for k in expected} == expected
    # 6.74B: embeddings and head 2 x 32000 x 4096, 32 blocks of 4 x 4096^2 + 3 x 4096 x 11008
    blocks = 32 * (4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096)
    assert Model.open(LLAMA2).arch.model_type == "llama"
    assert 2 * 32000 * 4096 + blocks + 4096 == 6_738_415_616


def _readme_commands(prefix: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    lines = re.findall(r"^\$ (entrenar .*)$", text, flags=re.MULTILINE)
    return [line.split("  #")[0].strip() for line in lines if line.startswith(prefix)]


def test_readme_lora_plan_lines_run_from_a_clone(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    commands = [c for c in _readme_commands("entrenar lora plan") if "--write-config" not in c]
    assert commands and all("examples/llama-2-7b/config.json" in c for c in commands)
    for command in commands:
        result = invoke(*command.split()[1:], "--json")
        assert result.exit_code == 0, (command, result.output)
        assert json.loads(result.stdout)["parameters"] == 6_738_415_616


def test_a_folder_holding_only_config_json_resolves_like_the_bare_file(tmp_path):
    shutil.copy(LLAMA2, tmp_path / "config.json")
    by_folder, by_file = resolve(tmp_path), resolve(tmp_path / "config.json")
    assert by_folder.kind == by_file.kind == "config"
    assert by_folder.config == by_file.config
    result = invoke("lora", "plan", "--model", str(tmp_path), "--vram", "24GB", "--json")
    assert result.exit_code == 0, result.output


# ---- references that do not exist ---------------------------------------------------------------


@pytest.mark.parametrize("ref", ["./model.safetensors", "x/config.json", "a/b/c", "~/nope.gguf"])
def test_a_missing_path_says_no_such_file_not_hub(ref, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as caught:
        resolve(ref)
    assert "no such file" in caught.value.message
    assert "hf download" not in caught.value.hint and "hub" not in caught.value.message


def test_a_misspelt_packaged_name_suggests_the_nearest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as caught:
        resolve("smollm-135m")
    assert "did you mean 'smollm2-135m'?" in caught.value.hint
    result = invoke("inspect", "info", "minilm-l5")
    assert result.exit_code == 2 and "minilm-l6" in result.output


# ---- sizes ----------------------------------------------------------------------------------


def test_a_bare_number_is_not_taken_as_bytes():
    for text in ("8", "16e9", "1024"):
        with pytest.raises(InvalidInputError) as caught:
            parse_size(text)
        assert "unit" in caught.value.message and "GB" in caught.value.hint
    result = invoke("lora", "plan", "--model", str(LLAMA2), "--vram", "8")
    assert result.exit_code == 2 and "8GB" in result.output
    assert parse_size("16e9B") == 16_000_000_000 and parse_size(4096) == 4096


# ---- command help and tables ----------------------------------------------------------------


def test_distill_estimate_options_have_help_and_defaults():
    result = runner.invoke(app, ["distill", "estimate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    flat = " ".join(result.output.split())
    assert re.search(r"--batch-size.*\[default: \(?4\b", flat), flat
    assert re.search(r"--sequence-length.*\[default: \(?128\b", flat), flat
    assert "distill estimate" in (ROOT / "README.md").read_text()


def test_lora_plan_why_not_table_has_a_header_for_every_column(monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    result = invoke("lora", "plan", "--model", str(LLAMA2), "--vram", "16GB")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "smallest tried" in line)
    cells = [c.strip() for c in re.split(r"[┃│]", header)[1:-1]]
    assert cells and all(cells), header


def test_lora_compare_says_why_fits_is_blank_without_vram():
    result = invoke("lora", "compare", "--model", str(LLAMA2), "--methods", "lora-16")
    assert result.exit_code == 0, result.output
    assert "fits: - without --vram" in " ".join(result.output.split())
    with_vram = invoke(
        "lora", "compare", "--model", str(LLAMA2), "--methods", "lora-16", "--vram", "80GB"
    )
    assert "without --vram" not in with_vram.output


def test_inspect_memory_takes_every_estimator_option():
    from entrenar_tui.core.memory import estimate_for_model

    args = [
        "inspect",
        "memory",
        str(LLAMA2),
        "--batch-size",
        "2",
        "--sequence-length",
        "1024",
        "--json",
    ]
    qlora = invoke(
        *args,
        "--lora-rank",
        "16",
        "--quantize-base",
        "nf4",
        "--lora-targets",
        "q_proj,v_proj",
        "--attention",
        "eager",
    )
    assert qlora.exit_code == 0, qlora.output
    expected = estimate_for_model(
        str(LLAMA2),
        batch_size=2,
        sequence_length=1024,
        precision="bf16",
        lora_rank=16,
        quantize_base="nf4",
        lora_targets=["q_proj", "v_proj"],
        attention="eager",
    )
    assert json.loads(qlora.stdout)["total_bytes"] == expected.total_bytes
    pure = invoke(*args, "--no-master-weights")
    mixed = invoke(*args)
    pure_doc, mixed_doc = json.loads(pure.stdout), json.loads(mixed.stdout)
    # fp32 master weights are 4 bytes per parameter, the only difference at the end of backward
    assert pure_doc["breakdown"]["master_weights"] == 0
    assert mixed_doc["breakdown"]["master_weights"] == 4 * 6_738_415_616


# ---- packaging ------------------------------------------------------------------------------


def test_license_is_an_spdx_string_setuptools_accepts(monkeypatch):
    """PEP 639: `license = "Apache-2.0"`; the table form warns at every install."""
    import warnings

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    # setuptools reads a license expression from 77 on; the build must not get an older one
    assert "setuptools>=77" in pyproject["build-system"]["requires"]
    monkeypatch.chdir(ROOT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dist = apply_configuration(Distribution(), "pyproject.toml")
    assert dist.metadata.license_expression == "Apache-2.0"


def test_the_demo_config_is_one_file_in_two_places_and_says_its_real_time():
    packaged = (ROOT / "entrenar_tui" / "examples" / "demo.yaml").read_text()
    assert packaged == (ROOT / "examples" / "demo.yaml").read_text()
    assert "a few minutes" not in packaged and "126 s of\n# training" in packaged


def test_a_hub_repo_cached_with_only_its_config_plans_offline(tmp_path, monkeypatch):
    """`hf download meta-llama/Llama-2-7b-hf config.json` is enough to plan, as a bare file is."""
    import huggingface_hub.constants as hc

    repo = tmp_path / "hub" / "models--meta-llama--Llama-2-7b-hf"
    (repo / "snapshots" / ("c" * 40)).mkdir(parents=True)
    shutil.copy(LLAMA2, repo / "snapshots" / ("c" * 40) / "config.json")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c" * 40)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    source = resolve("meta-llama/Llama-2-7b-hf")
    assert source.kind == "config" and source.config["hidden_size"] == 4096


def test_outputs_are_readable_by_others_as_the_umask_allows(tmp_path, monkeypatch):
    """Atomic writes go through mkstemp/mkdtemp (0600/0700): a converted model, or a run folder
    on a shared disk, must end with the mode a plain open()/mkdir() gives (0644/0755 at 022)."""
    import os
    import stat

    monkeypatch.chdir(tmp_path)
    umask = os.umask(0o022)
    os.umask(umask)
    assert (
        invoke("inspect", "convert", "minilm-l6", "--to", "apr", "--output", "m.apr").exit_code == 0
    )
    result = invoke("inspect", "convert", "minilm-l6", "--to", "safetensors", "--output", "hf/")
    assert result.exit_code == 0, result.output
    for path in (tmp_path / "m.apr", tmp_path / "hf" / "model.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert stat.S_IMODE((tmp_path / "hf").stat().st_mode) == 0o777 & ~umask


def test_export_of_a_stopped_run_names_its_last_checkpoint(tmp_path):
    """After Ctrl-C a run has checkpoints but no final/: `distill export --input RUN` must say
    that and point at the checkpoint, not call the folder "not a run directory"."""
    run = tmp_path / "a"
    (run / "checkpoints" / "step-000050").mkdir(parents=True)
    (run / "config.yaml").write_text("teacher:\n  model_id: smollm2-135m\n")
    args = ["distill", "export", "--input", str(run), "--format", "gguf", "--output", "s.gguf"]
    result = invoke(*args)
    assert result.exit_code == 2
    assert "no final/ and no checkpoint yet" in result.stderr
    (run / "checkpoints" / "step-000050" / "trainer.pt").write_bytes(b"")
    result = invoke(*args)
    assert result.exit_code == 2
    assert "has no final/ yet" in result.stderr
    assert f"--input {run / 'checkpoints' / 'step-000050'}" in result.stderr
    assert "not a run directory" not in result.stderr
