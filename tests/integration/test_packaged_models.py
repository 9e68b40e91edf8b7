"""Every `inspect` command, with --json, on the two packaged real models."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from entrenar_tui.cli.main import app

runner = CliRunner()


def invoke_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("ref", ["smollm2-135m", "minilm-l6"])
def test_layers_memory_validate(ref):
    layers = invoke_json("inspect", "layers", ref)
    assert layers["parameters"] == invoke_json("inspect", "info", ref)["parameters"]
    mem = invoke_json(
        "inspect",
        "memory",
        ref,
        "--batch-size",
        "2",
        "--sequence-length",
        "128",
        "--lora-rank",
        "8",
    )
    assert mem["total_bytes"] == sum(mem["breakdown"].values())
    assert 0 < mem["trainable_parameters"] < mem["parameters"]
    report = invoke_json("inspect", "validate", ref, "--strict")
    assert report["ok"] and report["tensors_checked"] == len(
        invoke_json("inspect", "layers", ref, "--verbose")["tensors"]
    )


def test_minilm_converts_to_every_format_and_back(tmp_path):
    for fmt, out in (("apr", "m.apr"), ("pth", "m.pth"), ("safetensors", "m.safetensors")):
        assert invoke_json(
            "inspect", "convert", "minilm-l6", "--to", fmt, "--output", str(tmp_path / out)
        )["verified"]
        same = invoke_json("inspect", "compare", "minilm-l6", str(tmp_path / out), "--values")
        assert same["identical_structure"] and same["max_abs_diff"] == 0.0


def test_minilm_to_gguf_is_refused_with_the_supported_list(tmp_path):
    result = runner.invoke(
        app,
        ["inspect", "convert", "minilm-l6", "--to", "gguf", "--output", str(tmp_path / "m.gguf")],
    )
    assert result.exit_code == 2 and "llama" in result.stderr.lower()
    assert not (tmp_path / "m.gguf").exists()


def test_compare_smollm2_gguf_with_itself():
    same = invoke_json("inspect", "compare", "smollm2-135m", "smollm2-135m")
    assert same["identical_structure"] and same["common"] == 272
