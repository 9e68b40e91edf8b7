"""Architecture facts from config.json (checked against transformers) and from tensors alone.

Every tiny model is a real transformers model saved with save_pretrained; the config-less cases
copy only its model.safetensors, so detection sees exactly what a user's bare weights file holds.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from conftest import ARCHES, MODEL_CLASSES
from entrenar_tui.core.models.arch import ArchInfo
from entrenar_tui.core.models.detect import LAYOUTS, detect_from_tensors
from entrenar_tui.core.models.handle import Model
from entrenar_tui.core.models.tensors import TensorInfo

# What detection can tell from names alone. LLaMA and Mistral checkpoints are name-for-name
# identical, so a Mistral file is reported as "llama" with the choice flagged in `inferred`.
EXPECTED_TYPE = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "gpt2": "gpt2",
    "gpt_neox": "gpt_neox",
    "bert": "bert",
    "roberta": "roberta",
    "t5": "t5",
}
AMBIGUOUS_TYPE = {"llama", "mistral"}
LEARNED_POSITIONS = {"gpt2", "bert", "roberta"}  # the others are rotary / relative: no table


@pytest.fixture(scope="module")
def hf_model():
    """The transformers model loaded back from each tiny folder: the ground truth."""
    import transformers

    cache = {}

    def load(folder: Path, arch: str):
        if arch not in cache:
            cls = getattr(transformers, MODEL_CLASSES[arch])
            cache[arch] = cls.from_pretrained(folder)
        return cache[arch]

    return load


@pytest.fixture(scope="module")
def bare_weights(tiny_model_dir, tmp_path_factory):
    """Factory: a folder holding only model.safetensors (no config.json) for an arch."""

    def make(arch: str) -> Path:
        folder = tmp_path_factory.mktemp(f"bare-{arch}")
        shutil.copy(tiny_model_dir(arch) / "model.safetensors", folder / "model.safetensors")
        return folder

    return make


def truth(model) -> dict:
    """Facts read from a loaded transformers model (config attributes and the modules)."""
    cfg = model.config
    heads = cfg.num_attention_heads
    hidden = cfg.hidden_size
    intermediate = next(
        (v for k in ("intermediate_size", "n_inner", "d_ff") if (v := getattr(cfg, k, None))),
        4 * hidden,  # GPT-2's n_inner=None means 4 x hidden
    )
    output, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    return {
        "layers": cfg.num_hidden_layers,
        "hidden_size": hidden,
        "heads": heads,
        "kv_heads": getattr(cfg, "num_key_value_heads", None) or heads,
        "head_dim": getattr(cfg, "d_kv", None) or hidden // heads,
        "intermediate_size": intermediate,
        "vocab_size": embedding.weight.shape[0],
        "tied_embeddings": output.weight.data_ptr() == embedding.weight.data_ptr(),
    }


@pytest.mark.parametrize("arch", ARCHES)
def test_arch_from_config_matches_transformers(arch, tiny_model_dir, hf_model):
    folder = tiny_model_dir(arch)
    model = Model.open(folder)
    expected = truth(hf_model(folder, arch))
    info = model.arch
    assert info.source == "config"
    assert info.model_type == arch
    assert {k: getattr(info, k) for k in expected} == expected
    assert info.inferred == []


@pytest.mark.parametrize("arch", ARCHES)
def test_parameter_count_is_exact(arch, tiny_model_dir, hf_model):
    """Tied weights are stored once and counted once, as transformers' parameters() does."""
    folder = tiny_model_dir(arch)
    model = hf_model(folder, arch)
    assert Model.open(folder).parameters == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ARCHES)
def test_detect_without_config(arch, bare_weights, tiny_model_dir, hf_model):
    folder = bare_weights(arch)
    assert not (folder / "config.json").exists()
    model = Model.open(folder)
    info = model.arch
    expected = truth(hf_model(tiny_model_dir(arch), arch))

    assert info.source == "tensors"
    assert info.model_type == EXPECTED_TYPE[arch]
    assert ("model_type" in info.inferred) == (arch in AMBIGUOUS_TYPE)
    for field in ("layers", "hidden_size", "intermediate_size", "vocab_size", "tied_embeddings"):
        assert getattr(info, field) == expected[field], field
        assert field not in info.inferred
    # The q/k width ratio (GQA) and the total attention width are exact even when heads are guessed.
    assert info.heads // info.kv_heads == expected["heads"] // expected["kv_heads"]
    assert info.heads * info.head_dim == expected["heads"] * expected["head_dim"]
    assert info.gated_mlp == (arch in {"llama", "mistral", "qwen2"})
    config_arch = Model.open(tiny_model_dir(arch)).arch
    expected_positions = config_arch.max_positions if arch in LEARNED_POSITIONS else None
    assert info.max_positions == expected_positions
    assert info.decoder_layers == config_arch.decoder_layers
    # Detection does not change what is counted.
    assert model.parameters == Model.open(tiny_model_dir(arch)).parameters


def test_t5_head_count_is_exact_from_relative_attention_bias(bare_weights):
    info = Model.open(bare_weights("t5")).arch
    assert (info.heads, info.kv_heads, info.head_dim) == (4, 4, 16)
    assert info.inferred == []


def test_guessed_head_counts_are_flagged(bare_weights):
    info = Model.open(bare_weights("gpt2")).arch
    assert {"heads", "kv_heads", "head_dim"} <= set(info.inferred)
    assert info.to_dict()["inferred"] == info.inferred


def test_packaged_minilm_without_config(tmp_path):
    packaged = Model.open("minilm-l6")
    shutil.copy(packaged.source.weight_files[0], tmp_path / "model.safetensors")
    model = Model.open(tmp_path)
    info = model.arch
    assert info.source == "tensors"
    assert (info.family, info.layers, info.hidden_size, info.vocab_size) == ("BERT", 6, 384, 30522)
    assert (info.intermediate_size, info.max_positions) == (1536, 512)
    assert info.heads == info.kv_heads and info.heads * info.head_dim == 384
    # No "bert." prefix and no MLM head: BERT vs RoBERTa came from the 512-row position table.
    assert "model_type" in info.inferred
    assert model.parameters == packaged.parameters == 22_713_216  # position_ids buffer excluded


def _renamed(folder: Path, rename, extra: list[TensorInfo] = ()) -> list[TensorInfo]:
    tensors = []
    for t in Model.open(folder).tensors:
        name = rename(t.name)
        if name is not None:
            tensors.append(replace(t, name=name))
    return tensors + list(extra)


@pytest.mark.parametrize(
    ("arch", "prefix"),
    [("llama", "base_model.model."), ("qwen2", "language_model."), ("gpt2", "module.")],
)
def test_prefixed_names_detect_the_same(arch, prefix, bare_weights):
    folder = bare_weights(arch)
    plain = Model.open(folder).arch
    prefixed = detect_from_tensors(_renamed(folder, lambda n: prefix + n))
    assert prefixed == plain


@pytest.mark.parametrize(("arch", "family"), [("bert", "bert"), ("roberta", "roberta")])
def test_headless_encoders_without_prefix(arch, family, bare_weights):
    """Strip `bert.`/`roberta.` and the MLM head: only the position table's shape is left."""
    strip = f"{arch}."
    info = detect_from_tensors(
        _renamed(
            bare_weights(arch),
            lambda n: n.removeprefix(strip) if n.startswith(strip) else None,
        )
    )
    assert info.model_type == family
    assert "model_type" in info.inferred
    assert (info.layers, info.hidden_size, info.vocab_size) == (2, 64, 256)


def test_gated_untied_t5_variant(bare_weights):
    """T5 v1.1 / Flan layout: wi_0 and wi_1 (gated) and a separate lm_head (untied)."""
    folder = bare_weights("t5")
    tensors = _renamed(folder, lambda n: n.replace("DenseReluDense.wi.", "DenseReluDense.wi_0."))
    shared = next(t for t in tensors if t.name == "shared.weight")
    extra = [replace(t, name=t.name.replace("wi_0", "wi_1")) for t in tensors if "wi_0" in t.name]
    info = detect_from_tensors(tensors + extra + [replace(shared, name="lm_head.weight")])
    assert (info.model_type, info.gated_mlp, info.tied_embeddings) == ("t5", True, False)
    assert (info.intermediate_size, info.layers, info.decoder_layers) == (128, 2, 2)


def test_unknown_layout_keeps_what_is_derivable(bare_weights):
    """A layout none of the families use: still layers, hidden and vocab, all flagged as guesses."""
    renames = {"self_attn.q_proj": "attn.wq", "mlp.down_proj": "ffn.w2", "mlp.gate_proj": "ffn.w1"}

    def rename(name: str) -> str:
        for old, new in renames.items():
            name = name.replace(old, new)
        return name

    info = detect_from_tensors(_renamed(bare_weights("llama"), rename))
    assert (info.model_type, info.family, info.source) == ("unknown", "unknown", "tensors")
    assert (info.layers, info.hidden_size, info.vocab_size) == (3, 64, 256)
    assert set(info.inferred) == {"layers", "hidden_size", "vocab_size"}


def test_empty_and_degenerate_inputs_do_not_raise():
    assert detect_from_tensors([]) == ArchInfo("unknown", "unknown", source="tensors")
    odd = [
        TensorInfo("model.layers.0.self_attn.q_proj.weight", (), "F32", 4, Path("x"), 0),
        TensorInfo("model.layers.0.self_attn.k_proj.weight", (0,), "F32", 0, Path("x"), 0),
        TensorInfo("model.layers.0.mlp.down_proj.weight", (7,), "F32", 28, Path("x"), 0),
    ]
    info = detect_from_tensors(odd)
    assert (info.model_type, info.layers, info.heads, info.vocab_size) == ("llama", 1, None, None)


_STACKS = ["model.layers", "transformer.h", "encoder.block", "decoder.block", "bert.encoder.layer"]
_OTHER = ["embed_tokens.weight", "wte.weight", "shared.weight", "lm_head.weight", "x.y", "layers.z"]
_EXTRA = [
    "self_attn.k_proj.weight",
    "SelfAttention.k.weight",
    "attention.self.key.weight",
    "layer.0.SelfAttention.relative_attention_bias.weight",
    "self_attn.q_proj.bias",
]
_SHAPES = st.lists(st.integers(0, 9), max_size=3).map(tuple)


@st.composite
def _checkpoints(draw) -> list[tuple[str, tuple]]:
    """A family's own tensor names (so the family code paths run) with random shapes and noise."""
    layout = draw(st.sampled_from(LAYOUTS))
    endings = [*layout.signature, layout.query, *layout.mlp_in, *layout.gate, *_EXTRA]
    stack = draw(st.sampled_from(_STACKS))
    entries = [
        (f"{stack}.{draw(st.integers(0, 2))}.{ending}", draw(_SHAPES))
        for ending in endings
        if draw(st.booleans()) or ending in layout.signature
    ]
    noise = st.tuples(st.sampled_from(_OTHER + [f"{stack}.0.{e}" for e in _EXTRA]), _SHAPES)
    return entries + draw(st.lists(noise, max_size=6))


@settings(max_examples=200, deadline=None)
@given(_checkpoints())
def test_detection_never_raises(entries):
    tensors = [TensorInfo(name, shape, "F32", 0, Path("x"), 0) for name, shape in entries]
    info = detect_from_tensors(tensors)
    assert info.source == "tensors"
    assert all(hasattr(info, field) for field in info.inferred)
    event(info.model_type)
    if info.heads is not None:
        assert min(info.heads, info.kv_heads, info.head_dim) >= 1
