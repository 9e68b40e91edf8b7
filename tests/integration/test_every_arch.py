"""Every `inspect` command, with --json, on a tiny real model of each supported architecture."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import ARCHES, build_tiny_model
from entrenar_tui.cli.main import app

runner = CliRunner()
GGUF_ARCHES = {"llama", "mistral", "qwen2"}


def invoke_json(*args: str, code: int = 0) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("arch", ARCHES)
def test_memory_validate_convert_compare(arch, tiny_model_dir, tmp_path):
    folder = str(tiny_model_dir(arch))
    mem = invoke_json("inspect", "memory", folder, "--batch-size", "2", "--sequence-length", "64")
    # full fine-tuning at bf16 (the default) with fp32 master weights and AdamW, by hand from
    # the real model's parameter count: 2 + 4 + 2 x 4 bytes per parameter
    parameters = sum(p.numel() for p in build_tiny_model(arch).parameters())
    assert mem["parameters"] == mem["trainable_parameters"] == parameters
    weights, master, optimizer = (
        mem["breakdown"][k] for k in ("weights", "master_weights", "optimizer")
    )
    assert (weights, master, optimizer) == (2 * parameters, 4 * parameters, 8 * parameters)
    assert mem["total_bytes"] > weights + master + optimizer  # activations and overhead on top
    report = invoke_json("inspect", "validate", folder, "--strict")
    assert report["ok"] and report["tensors_checked"] > 0
    for fmt, out in (
        ("safetensors", tmp_path / "m.safetensors"),
        ("apr", tmp_path / "m.apr"),
        ("pth", tmp_path / "m.pth"),
    ):
        conv = invoke_json("inspect", "convert", folder, "--to", fmt, "--output", str(out))
        assert conv["verified"]
        same = invoke_json("inspect", "compare", folder, str(out), "--values")
        assert same["identical_structure"] and same["max_abs_diff"] == 0.0
    gguf = tmp_path / "m.gguf"
    if arch in GGUF_ARCHES:
        assert invoke_json(
            "inspect",
            "convert",
            folder,
            "--to",
            "gguf",
            "--quantize",
            "q8_0",
            "--output",
            str(gguf),
        )["verified"]
        assert invoke_json("inspect", "info", str(gguf))["architecture"] in {"LLaMA", "Qwen2"}
    else:
        err = invoke_json(
            "inspect", "convert", folder, "--to", "gguf", "--output", str(gguf), code=2
        )["error"]
        assert "llama" in (err["message"] + err["hint"]).lower() and not gguf.exists()
