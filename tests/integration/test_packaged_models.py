"""Every `inspect` command, with --json, on the two packaged real models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from entrenar_tui.cli.main import app
from entrenar_tui.core.models.handle import Model

runner = CliRunner()
LORA_RANK = 8
# PEFT's default LoRA targets for each family, as named in each file
LORA_TARGETS = {
    "smollm2-135m": ("attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"),
    "minilm-l6": ("query.weight", "key.weight", "value.weight", "attention.output.dense.weight"),
}


def invoke_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def file_tensor_shapes(ref: str, floating_only: bool = True) -> dict[str, tuple[int, ...]]:
    """Tensor shapes as (out, in), read with the format's own library, not ours; MiniLM's
    file also holds an int64 buffer (position_ids), which is not a parameter."""
    path = Model.open(ref).source.weight_files[0]
    if path.suffix == ".gguf":
        import gguf

        reader = gguf.GGUFReader(path)  # GGUF dims run innermost first: (in, out)
        return {t.name: tuple(reversed(t.shape.tolist())) for t in reader.tensors}
    from safetensors import safe_open

    with safe_open(path, "np") as f:
        slices = {name: f.get_slice(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
    return {
        k: tuple(s.get_shape())
        for k, s in slices.items()
        if s.get_dtype().startswith("F") or not floating_only
    }


def trained_parameters(ref: str) -> int:
    """What training the model holds in memory: the file's tensors for the causal LM; for
    MiniLM, BertForMaskedLM (the MLM head the estimate trains, no pooler), built on meta."""
    if ref != "minilm-l6":
        return sum(int(np.prod(s)) for s in file_tensor_shapes(ref).values())
    import torch
    import transformers

    config = transformers.BertConfig(**Model.open(ref).source.config)
    with torch.device("meta"):
        model = transformers.BertForMaskedLM(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("ref", ["smollm2-135m", "minilm-l6"])
def test_layers_memory_validate(ref):
    shapes = file_tensor_shapes(ref)
    in_file = sum(int(np.prod(s)) for s in shapes.values())
    layers = invoke_json("inspect", "layers", ref)
    assert layers["parameters"] == invoke_json("inspect", "info", ref)["parameters"] == in_file
    mem = invoke_json(
        "inspect", "memory", ref, "-b", "2", "-s", "128", "--lora-rank", str(LORA_RANK)
    )
    # independent arithmetic: the weights at bf16 (the default), fp32 adapters of
    # r x (in + out) per targeted matrix, and AdamW's two fp32 moments per adapter parameter
    lora = sum(
        LORA_RANK * sum(shape)  # (out, in)
        for name, shape in shapes.items()
        if name.endswith(LORA_TARGETS[ref])
    )
    assert mem["parameters"] == trained_parameters(ref)
    assert mem["trainable_parameters"] == lora > 0
    assert mem["breakdown"]["weights"] == 2 * mem["parameters"]
    assert mem["breakdown"]["adapters"] == 4 * lora
    assert mem["breakdown"]["optimizer"] == 2 * 4 * lora
    report = invoke_json("inspect", "validate", ref, "--strict")
    assert report["ok"] and report["tensors_checked"] == len(file_tensor_shapes(ref, False))


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


def test_compare_two_different_models_lists_every_tensor():
    shapes_a, shapes_b = file_tensor_shapes("smollm2-135m"), file_tensor_shapes("minilm-l6")
    diff = invoke_json("inspect", "compare", "smollm2-135m", "minilm-l6")
    assert not diff["identical_structure"] and diff["common"] == 0
    assert sorted(diff["removed"]) == sorted(shapes_a)
    assert sorted(diff["added"]) == sorted(file_tensor_shapes("minilm-l6", floating_only=False))
    assert diff["parameters_a"] == sum(int(np.prod(s)) for s in shapes_a.values())
    assert diff["parameters_b"] == sum(int(np.prod(s)) for s in shapes_b.values())


def test_compare_finds_the_one_value_changed(tmp_path):
    """A copy of MiniLM with one weight moved by a known amount: compare --values must name
    that tensor alone, with that difference."""
    from safetensors.numpy import load_file, save_file

    source = Path(Model.open("minilm-l6").source.weight_files[0])
    tensors = load_file(source)
    name = "encoder.layer.3.attention.self.query.weight"
    before = tensors[name][5, 7]
    tensors[name][5, 7] = before + np.float32(0.25)
    expected = abs(float(tensors[name][5, 7]) - float(before))
    save_file(tensors, tmp_path / "moved.safetensors")
    diff = invoke_json(
        "inspect", "compare", "minilm-l6", str(tmp_path / "moved.safetensors"), "--values"
    )
    assert diff["identical_structure"] and diff["max_abs_diff"] == pytest.approx(expected, rel=1e-6)
    moved = [v for v in diff["values"] if v["max_abs_diff"] > 0]
    assert [v["name"] for v in moved] == [name]
