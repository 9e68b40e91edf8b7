"""Reading PEFT adapters and inspecting them, against adapters PEFT itself made and saved."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file

from conftest import build_tiny_model
from entrenar_tui.core.errors import CorruptFileError, InvalidInputError
from entrenar_tui.core.lora.adapter import read_adapter
from entrenar_tui.core.lora.inspect import inspect_adapter

LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "down_proj"]
CONFIGS = {
    "plain": ("llama", dict(r=4, lora_alpha=8, target_modules=LLAMA_TARGETS)),
    "rslora": ("llama", dict(r=4, lora_alpha=8, target_modules=LLAMA_TARGETS, use_rslora=True)),
    "dora_patterns": (
        "llama",
        dict(
            r=4,
            lora_alpha=8,
            target_modules=LLAMA_TARGETS,
            use_dora=True,
            rank_pattern={"v_proj": 2},
            alpha_pattern={"down_proj": 3},
            modules_to_save=["lm_head"],
        ),
    ),
    "gpt2": (
        "gpt2",
        dict(
            r=4,
            lora_alpha=16,
            target_modules=["c_attn", "c_fc"],
            fan_in_fan_out=True,
            modules_to_save=["ln_f"],
        ),
    ),
}


def save_adapter(folder, arch: str, trained: bool = True, **lora):
    """A real PEFT adapter; `trained` gives B random values (PEFT initialises B to zero)."""
    model = get_peft_model(
        build_tiny_model(arch), LoraConfig(init_lora_weights=not trained, **lora)
    )
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        key: (root / key, save_adapter(root / key, arch, **lora))
        for key, (arch, lora) in CONFIGS.items()
    }


def lora_layers(peft_model):
    prefix = "base_model.model."
    for name, layer in peft_model.named_modules():
        if isinstance(layer, LoraLayer) and "default" in layer.r:
            yield name.removeprefix(prefix), layer


@pytest.mark.parametrize("key", list(CONFIGS))
def test_modules_ranks_and_scalings_match_peft(adapters, key):
    folder, peft_model = adapters[key]
    adapter = read_adapter(folder)
    layers = dict(lora_layers(peft_model))
    assert set(adapter.modules) == set(layers)
    for name, layer in layers.items():
        module = adapter.modules[name]
        assert module.rank == layer.r["default"]
        assert module.scaling == pytest.approx(layer.scaling["default"], rel=1e-12)
        assert module.magnitude is not None if key == "dora_patterns" else module.magnitude is None
        assert module.fan_in_fan_out == (key == "gpt2")


def test_config_fields_are_normalized(adapters):
    adapter = read_adapter(adapters["dora_patterns"][0])
    assert (adapter.r, adapter.lora_alpha, adapter.use_dora, adapter.use_rslora) == (
        4,
        8.0,
        True,
        False,
    )
    assert adapter.rank_pattern == {"v_proj": 2} and adapter.alpha_pattern == {"down_proj": 3}
    assert adapter.target_modules == sorted(LLAMA_TARGETS)
    assert adapter.modules_to_save == ["lm_head"] and list(adapter.saved) == ["lm_head.weight"]
    assert adapter.scaling_for("model.layers.0.self_attn.v_proj") == 8 / 2
    assert adapter.scaling_for("model.layers.2.mlp.down_proj") == 3 / 4
    rs = read_adapter(adapters["rslora"][0])
    assert rs.scaling_for("model.layers.1.self_attn.q_proj") == pytest.approx(8 / math.sqrt(4))


def test_raw_state_dict_names_with_adapter_segment_read_the_same(adapters, tmp_path):
    """model.state_dict() of a PeftModel keeps `.default.` and has no PEFT prefix stripped."""
    folder, peft_model = adapters["dora_patterns"]
    raw = {
        k: v.contiguous()
        for k, v in peft_model.state_dict().items()
        if "lora_" in k or "modules_to_save" in k
    }
    assert any(".lora_A.default.weight" in k for k in raw)
    save_file(raw, tmp_path / "adapter_model.safetensors")
    shutil.copy(folder / "adapter_config.json", tmp_path)
    saved, again = read_adapter(folder), read_adapter(tmp_path)
    assert list(saved.modules) == list(again.modules)
    for name, module in saved.modules.items():
        other = again.modules[name]
        assert (module.a.shape, module.b.shape, module.magnitude.shape) == (
            other.a.shape,
            other.b.shape,
            other.magnitude.shape,
        )
        assert np.array_equal(saved.read(module.b), again.read(other.b))
    assert list(again.saved) == ["lm_head.weight"]


@pytest.mark.parametrize("key", list(CONFIGS))
def test_inspect_reports_rank_alpha_scale_and_parameters_exactly(adapters, key):
    folder, peft_model = adapters[key]
    trainable, _ = peft_model.get_nb_trainable_parameters()
    report = inspect_adapter(folder)
    _, lora = CONFIGS[key]
    saved = sum(
        t.numel()
        for k, t in load_file(folder / "adapter_model.safetensors").items()
        if "lora_" not in k
    )
    assert (report.rank, report.alpha) == (lora["r"], lora["lora_alpha"])
    expected_scale = lora["lora_alpha"] / (math.sqrt(4) if lora.get("use_rslora") else 4)
    assert report.scale == pytest.approx(expected_scale)
    assert report.total_parameters == trainable
    assert report.parameters == trainable - saved and report.saved_parameters == saved
    assert report.target_modules == sorted(lora["target_modules"])
    assert report.ok and report.problems == []
    data = json.loads(json.dumps(report.to_dict()))
    assert {
        "rank",
        "alpha",
        "scale",
        "target_modules",
        "parameters",
        "modules",
        "ok",
    } <= data.keys()
    assert all("effective_rank" in m for m in data["modules"])


def test_inspect_singular_values_match_a_full_svd(adapters):
    folder, _ = adapters["dora_patterns"]
    adapter = read_adapter(folder)
    report = inspect_adapter(folder, top_k=3)
    assert report.ranks == [2, 4]
    assert report.targets["v_proj"] == {"modules": 3, "layers": [0, 1, 2]}
    for entry in report.modules:
        module = adapter.modules[entry.name]
        delta = torch.from_numpy(adapter.read(module.b) @ adapter.read(module.a)).double()
        full = torch.linalg.svdvals(delta * module.scaling).numpy()
        assert len(entry.singular_values) == min(3, module.rank)
        assert np.allclose(entry.singular_values, full[: min(3, module.rank)], rtol=1e-5)
        assert entry.norm_delta == pytest.approx(float(np.linalg.norm(full)), rel=1e-5)
        assert 1 <= entry.effective_rank <= module.rank
        assert 0 < entry.energy_top_k <= 1 and entry.sparsity == 0


def test_inspect_with_base_reports_relative_update(adapters, tiny_model_dir):
    report = inspect_adapter(adapters["gpt2"][0], base=tiny_model_dir("gpt2"))
    assert report.ok
    assert all(m.relative_delta is not None and m.relative_delta > 0 for m in report.modules)


def test_untrained_adapter_is_a_problem(tmp_path):
    save_adapter(tmp_path, "llama", trained=False, r=2, target_modules=["q_proj"])
    report = inspect_adapter(tmp_path)
    assert not report.ok
    (problem,) = report.problems
    assert (problem.severity, problem.code) == ("error", "zero_b")
    assert "3 of 3" in problem.message and problem.hint
    assert all(m.b_zero and m.effective_rank == 0 for m in report.modules)


def test_nan_is_a_problem_naming_the_module(adapters, tmp_path):
    folder, _ = adapters["plain"]
    state = load_file(folder / "adapter_model.safetensors")
    bad = "base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight"
    state[bad][0, 0] = float("nan")
    save_file(state, tmp_path / "adapter_model.safetensors", metadata={"format": "pt"})
    shutil.copy(folder / "adapter_config.json", tmp_path)
    report = inspect_adapter(tmp_path)
    assert not report.ok
    (problem,) = report.problems
    assert (problem.code, problem.module) == ("nonfinite", "model.layers.1.self_attn.k_proj")


def test_shapes_that_do_not_fit_the_base_are_problems(adapters, tmp_path):
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    report = inspect_adapter(adapters["plain"][0], base=tmp_path)
    assert not report.ok
    assert [p.code for p in report.problems] == ["shape_mismatch"]


def test_a_base_of_another_family_is_refused(adapters, tiny_model_dir):
    with pytest.raises(InvalidInputError, match="none of the") as err:
        inspect_adapter(adapters["gpt2"][0], base=tiny_model_dir("llama"))
    assert err.value.hint


def test_inspect_against_a_gguf_base(tmp_path):
    """A hand-made adapter with SmolLM2-135M's shapes, checked against the packaged GGUF."""
    r = 2
    state = {
        "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight": torch.randn(r, 576),
        "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight": torch.randn(192, r),
        "base_model.model.model.layers.3.mlp.down_proj.lora_A.weight": torch.randn(r, 1536),
        "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight": torch.randn(576, r),
    }
    save_file(state, tmp_path / "adapter_model.safetensors")
    config = {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": 4,
        "target_modules": ["k_proj", "down_proj"],
    }
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    report = inspect_adapter(tmp_path, base="smollm2-135m")
    assert report.ok and report.layers == 2
    assert all(m.relative_delta > 0 for m in report.modules)


def test_missing_config_and_non_adapters_give_hints(adapters, tmp_path, tiny_model_dir):
    shutil.copy(adapters["plain"][0] / "adapter_model.safetensors", tmp_path)
    with pytest.raises(InvalidInputError, match="no adapter_config.json") as err:
        read_adapter(tmp_path)
    assert "save_pretrained" in err.value.hint
    with pytest.raises(InvalidInputError, match="not a PEFT adapter"):
        read_adapter(tiny_model_dir("llama"))


def test_config_that_does_not_match_the_weights_is_corrupt(adapters, tmp_path):
    folder, _ = adapters["plain"]
    shutil.copy(folder / "adapter_model.safetensors", tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
    with pytest.raises(CorruptFileError, match="r=8"):
        read_adapter(tmp_path)
