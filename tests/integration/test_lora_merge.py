"""`lora merge` against PEFT's own merge_and_unload, and `lora convert` read back by PEFT,
gguf-py and transformers' GGUF loader."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

from conftest import build_tiny_model
from entrenar_tui.core.errors import CorruptFileError, InvalidInputError, UnsupportedError
from entrenar_tui.core.lora.convert import convert_adapter
from entrenar_tui.core.lora.merge import merge_adapter
from entrenar_tui.core.models.safetensors_format import read_header

LLAMA_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CASES = {
    "llama_lora": (
        "llama",
        dict(r=4, lora_alpha=8, target_modules=LLAMA_ALL, modules_to_save=["lm_head"]),
    ),
    "llama_rslora": (
        "llama",
        dict(r=8, lora_alpha=4, target_modules=LLAMA_ALL + ["embed_tokens"], use_rslora=True),
    ),
    "llama_dora_patterns": (
        "llama",
        dict(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"],
            use_dora=True,
            rank_pattern={"v_proj": 2},
            alpha_pattern={"down_proj": 3},
            modules_to_save=["norm"],
        ),
    ),
    "gpt2_conv1d": (
        "gpt2",
        dict(
            r=4,
            lora_alpha=8,
            target_modules=["c_attn", "c_proj", "c_fc"],
            fan_in_fan_out=True,
            lora_bias=True,
            modules_to_save=["ln_f"],
        ),
    ),
    "gpt2_dora": (
        "gpt2",
        dict(
            r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, use_dora=True
        ),
    ),
}


def trained_peft_model(arch: str, dtype=torch.float32, **lora):
    """A PEFT model whose B (and DoRA magnitudes, saved modules) are non-trivial."""
    model = get_peft_model(
        build_tiny_model(arch).to(dtype), LoraConfig(init_lora_weights=False, **lora)
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_magnitude" in name or "modules_to_save" in name:
                param.mul_(1.25).add_(0.01)  # differ from the base's values
    return model


def merged_state(peft_model) -> dict:
    return {k: v.detach().clone() for k, v in peft_model.merge_and_unload().state_dict().items()}


def assert_same_model(folder, expected: dict, atol: float = 1e-5) -> None:
    """transformers loads the output, and every tensor equals PEFT's merged model."""
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder).state_dict()
    assert set(loaded) == set(expected)
    for name, value in expected.items():
        assert loaded[name].dtype == value.dtype, name
        diff = (loaded[name].float() - value.float()).abs().max().item()
        assert diff <= atol, f"{name}: {diff}"


@pytest.fixture(scope="module")
def cases(tmp_path_factory, tiny_model_dir):
    """Per case: (base folder, adapter folder, PEFT's merged state dict)."""
    root = tmp_path_factory.mktemp("merge")
    built = {}
    for key, (arch, lora) in CASES.items():
        peft_model = trained_peft_model(arch, **lora)
        peft_model.save_pretrained(root / key)
        built[key] = (tiny_model_dir(arch), root / key, merged_state(peft_model))
    return built


@pytest.mark.parametrize("key", list(CASES))
def test_merge_equals_peft_merge_and_unload(cases, key, tmp_path):
    base, adapter, expected = cases[key]
    result = merge_adapter(str(base), str(adapter), tmp_path / "out")
    assert_same_model(tmp_path / "out", expected)
    out = tmp_path / "out"
    assert json.loads((out / "config.json").read_text()) == json.loads(
        (base / "config.json").read_text()
    )
    names = [t.name for t in read_header(base / "model.safetensors").tensors]
    assert [t.name for t in read_header(out / "model.safetensors").tensors] == names
    with safe_open(out / "model.safetensors", "np") as f:
        assert f.metadata()["format"] == "pt"
    assert (
        result.tensors_merged > 0
        and result.dtype == "F32"
        and result.files == ["model.safetensors"]
    )
    assert result.tensors_merged + result.tensors_replaced + result.tensors_copied == len(names)
    assert json.loads(json.dumps(result.to_dict()))["modules"] == len(result.module_names)


def test_scale_multiplies_the_update(cases, tmp_path):
    _, lora = CASES["llama_lora"]
    peft_model = trained_peft_model("llama", **lora)
    peft_model.save_pretrained(tmp_path / "adapter")
    for layer in peft_model.modules():
        if isinstance(layer, LoraLayer):
            layer.scale_layer(0.5)
    merge_adapter(cases["llama_lora"][0], tmp_path / "adapter", tmp_path / "out")
    # an earlier merge output is replaced whole
    merge_adapter(cases["llama_lora"][0], tmp_path / "adapter", tmp_path / "out", scale=0.5)
    assert_same_model(tmp_path / "out", merged_state(peft_model))


def test_sharded_base_keeps_its_shards(tmp_path):
    _, lora = CASES["llama_lora"]
    build_tiny_model("llama").save_pretrained(tmp_path / "base", max_shard_size="50KB")
    index = json.loads((tmp_path / "base" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    peft_model = trained_peft_model("llama", **lora)
    peft_model.save_pretrained(tmp_path / "adapter")
    result = merge_adapter(tmp_path / "base", tmp_path / "adapter", tmp_path / "out")
    assert sorted(result.files) == shards
    assert json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text()) == index
    assert_same_model(tmp_path / "out", merged_state(peft_model))


def test_bf16_base_stays_bf16(tmp_path):
    _, lora = CASES["llama_dora_patterns"]
    build_tiny_model("llama").to(torch.bfloat16).save_pretrained(tmp_path / "base")
    peft_model = trained_peft_model("llama", dtype=torch.bfloat16, **lora)
    peft_model.save_pretrained(tmp_path / "adapter")
    result = merge_adapter(tmp_path / "base", tmp_path / "adapter", tmp_path / "out")
    assert result.dtype == "BF16"
    assert {t.dtype for t in read_header(tmp_path / "out" / "model.safetensors").tensors} == {
        "BF16"
    }
    expected = merged_state(peft_model)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    for name, value in expected.items():
        ours = loaded[name].float()
        # float32 sums may round to neighbouring bf16 values: at most one bf16 step apart
        assert torch.allclose(ours, value.float(), rtol=2**-7, atol=1e-6), name
    differ = sum(int((loaded[n] != v).sum()) for n, v in expected.items())
    assert differ <= sum(v.numel() for v in expected.values()) // 100  # bit-identical here today


def _copy_adapter(source, dest, **changes) -> None:
    dest.mkdir()
    state = load_file(source / "adapter_model.safetensors")
    for name, fill in changes.items():
        state[name][0, 0] = fill
    save_file(state, dest / "adapter_model.safetensors", metadata={"format": "pt"})
    shutil.copy(source / "adapter_config.json", dest)


def test_bad_inputs_fail_with_hints_and_leave_nothing(cases, tmp_path, tiny_model_dir):
    base, adapter, _ = cases["llama_lora"]
    out = tmp_path / "out"
    nan_name = "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"
    _copy_adapter(adapter, tmp_path / "nan", **{nan_name: float("nan")})
    with pytest.raises(CorruptFileError, match="NaN") as err:
        merge_adapter(base, tmp_path / "nan", out)
    assert err.value.hint and not out.exists()
    (tmp_path / "noconfig").mkdir()
    shutil.copy(adapter / "adapter_model.safetensors", tmp_path / "noconfig")
    with pytest.raises(InvalidInputError, match="adapter_config.json"):
        merge_adapter(base, tmp_path / "noconfig", out)
    with pytest.raises(InvalidInputError, match="has no tensor") as err:
        merge_adapter(tiny_model_dir("llama"), cases["gpt2_conv1d"][1], out)
    assert "different model" in err.value.hint or "does not belong" in err.value.hint
    with pytest.raises(InvalidInputError, match="overwrite"):
        merge_adapter(base, adapter, adapter / "merged")
    assert not out.exists()


def test_adapter_for_another_size_is_refused(cases, tmp_path):
    config = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "small")
    with pytest.raises(InvalidInputError, match=r"is \[") as err:
        merge_adapter(tmp_path / "small", cases["llama_lora"][1], tmp_path / "out")
    assert err.value.hint and not (tmp_path / "out").exists()


def test_lora_modules_import_no_torch():
    code = (
        "import sys, entrenar_tui.core.lora, entrenar_tui.core.lora.adapter, entrenar_tui.core.lora.merge,"
        " entrenar_tui.core.lora.inspect, entrenar_tui.core.lora.convert\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'textual', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- convert


def test_convert_pth_and_back_loads_in_peft(cases, tmp_path):
    base, adapter, expected = cases["llama_dora_patterns"]
    to_pth = convert_adapter(adapter, "pth", tmp_path / "pth")
    assert "adapter_model.bin" in to_pth.files and to_pth.format == "pth"
    back = convert_adapter(tmp_path / "pth", "safetensors", tmp_path / "st")
    assert back.parameters == to_pth.parameters
    tokens = torch.randint(0, 256, (1, 6))
    outputs = []
    for folder in (adapter, tmp_path / "pth", tmp_path / "st"):
        model = PeftModel.from_pretrained(
            transformers.AutoModelForCausalLM.from_pretrained(base), folder
        )
        outputs.append(model(tokens).logits)
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])
    merge_adapter(base, tmp_path / "pth", tmp_path / "merged")  # a .bin adapter merges the same
    assert_same_model(tmp_path / "merged", expected)


def test_convert_gguf_matches_llama_cpp_layout(tmp_path, tiny_model_dir):
    base = tiny_model_dir("llama")
    lora = dict(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "k_proj", "down_proj", "embed_tokens"],
        use_rslora=True,
    )
    peft_model = trained_peft_model("llama", **lora)
    peft_model.save_pretrained(tmp_path / "adapter")
    result = convert_adapter(tmp_path / "adapter", "gguf", tmp_path / "a.gguf", base=base)
    assert result.alpha == 8 and result.notes  # rsLoRA folded into lora_b
    reader = gguf.GGUFReader(tmp_path / "a.gguf")
    fields = {
        k: reader.fields[k].contents()
        for k in ("general.type", "adapter.type", "adapter.lora.alpha", "general.architecture")
    }
    assert fields == {
        "general.type": "adapter",
        "adapter.type": "lora",
        "adapter.lora.alpha": 8.0,
        "general.architecture": "llama",
    }
    tensors = {t.name: t for t in reader.tensors}
    assert [int(d) for d in tensors["blk.0.attn_q.weight.lora_a"].shape] == [64, 4]  # ne: [in, r]
    assert [int(d) for d in tensors["blk.0.attn_k.weight.lora_b"].shape] == [4, 32]  # ne: [r, out]
    assert [int(d) for d in tensors["token_embd.weight.lora_a"].shape] == [4, 256]
    config = json.loads((base / "config.json").read_text())
    unpermute = LlamaTensorProcessor(config)
    state = peft_model.state_dict()
    for layer, gguf_kind, hf in [
        (0, "attn_q", "self_attn.q_proj"),
        (1, "attn_k", "self_attn.k_proj"),
        (2, "ffn_down", "mlp.down_proj"),
    ]:
        name = f"blk.{layer}.{gguf_kind}.weight"
        a, b = (np.array(tensors[f"{name}.lora_{p}"].data) for p in "ab")
        llama_cpp_delta = unpermute.process(
            b @ a * (8 / 4), name
        ).weights  # llama.cpp: alpha / rank
        prefix = f"base_model.model.model.layers.{layer}.{hf}"
        peft_a, peft_b = (state[f"{prefix}.lora_{p}.default.weight"].numpy() for p in "AB")
        assert np.allclose(
            llama_cpp_delta, peft_b @ peft_a * (8 / 2), atol=1e-5
        )  # rsLoRA: alpha/sqrt(r)


def test_convert_gguf_refusals(cases, tmp_path, tiny_model_dir):
    with pytest.raises(UnsupportedError, match="llama-family"):
        convert_adapter(
            cases["gpt2_conv1d"][1], "gguf", tmp_path / "a.gguf", base=tiny_model_dir("gpt2")
        )
    with pytest.raises(UnsupportedError, match="DoRA") as err:
        convert_adapter(
            cases["llama_dora_patterns"][1],
            "gguf",
            tmp_path / "a.gguf",
            base=tiny_model_dir("llama"),
        )
    assert "merge" in err.value.hint
    with pytest.raises(InvalidInputError, match="base model"):
        convert_adapter(cases["llama_rslora"][1], "gguf", tmp_path / "a.gguf")
    with pytest.raises(InvalidInputError, match="unknown adapter format"):
        convert_adapter(cases["llama_rslora"][1], "onnx", tmp_path / "x")
    assert not (tmp_path / "a.gguf").exists()
