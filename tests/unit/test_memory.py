"""The memory estimator against the real thing.

Parameter counts are compared with `sum(p.numel())` of real transformers models (tiny ones,
and big configs built on the meta device); the activation inventory with the tensors autograd
actually saves (saved-tensor hooks); the peak with torch's own allocation events (profiler);
and, once, the whole estimate with the resident memory of real training steps in a fresh process.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MODEL_CLASSES, TINY_CONFIGS, build_tiny_model
from entrenar_tui.core.errors import InvalidInputError, UnsupportedError
from entrenar_tui.core.memory import (
    KEYS,
    MemoryEstimate,
    estimate_for_model,
    estimate_memory,
    measure_training_step,
)
from entrenar_tui.core.memory.activations import Saved, saved_inventory
from entrenar_tui.core.memory.shape import ModelShape, count_parameters, model_shape
from entrenar_tui.core.models.arch import ArchInfo, from_config

# meta-llama/Llama-2-7b-hf config.json, as published
LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.31.0.dev0",
    "use_cache": True,
    "vocab_size": 32000,
}
BIG_CONFIGS = {
    "llama-2-7b": LLAMA2_7B,
    "mistral-7b": dict(
        model_type="mistral",
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
    ),
    "qwen2-0.5b": dict(
        model_type="qwen2",
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    ),
    "gpt2": dict(
        model_type="gpt2", vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024
    ),
    "t5-v1_1-small": dict(
        model_type="t5",
        vocab_size=32128,
        d_model=512,
        d_kv=64,
        d_ff=1024,
        num_layers=8,
        num_decoder_layers=8,
        num_heads=6,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    ),
}
# configs whose options the tiny ones leave at their defaults
VARIANTS = {
    "llama-biases": dict(
        TINY_CONFIGS["llama"], attention_bias=True, mlp_bias=True, tie_word_embeddings=True
    ),
    "qwen2-untied": dict(TINY_CONFIGS["qwen2"], tie_word_embeddings=False),
    "gpt2-inner-untied": dict(TINY_CONFIGS["gpt2"], n_inner=96, tie_word_embeddings=False),
    "neox-no-bias-sequential": dict(
        TINY_CONFIGS["gpt_neox"], attention_bias=False, use_parallel_residual=False
    ),
    "bert-types-untied": dict(TINY_CONFIGS["bert"], type_vocab_size=4, tie_word_embeddings=False),
    "t5-gated": dict(TINY_CONFIGS["t5"], feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}
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


def _model_from(config: dict, meta: bool = False):
    import torch
    import transformers

    params = dict(config)
    model_type = params.pop("model_type")
    kind = MODEL_CLASSES.get(model_type, "AutoModelForCausalLM")
    cfg = transformers.AutoConfig.for_model(model_type, **params)
    with warnings.catch_warnings(), torch.device("meta" if meta else "cpu"):
        warnings.simplefilter("ignore")
        return getattr(transformers, kind).from_config(cfg)


def _numel(model) -> int:
    return sum(p.numel() for p in model.parameters())  # shared (tied) parameters once


# ---- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_parameter_formula_equals_the_real_tiny_model(arch):
    model = build_tiny_model(arch)
    saved_config = model.config.to_dict()  # what config.json holds
    assert count_parameters(from_config(TINY_CONFIGS[arch]), TINY_CONFIGS[arch]) == _numel(model)
    assert count_parameters(from_config(saved_config), saved_config) == _numel(model)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parameter_formula_follows_biases_ties_and_widths(name):
    config = VARIANTS[name]
    assert count_parameters(from_config(config), config) == _numel(_model_from(config))


@pytest.mark.parametrize("name", list(BIG_CONFIGS))
def test_parameter_formula_equals_big_models_built_on_meta(name):
    config = BIG_CONFIGS[name]
    assert count_parameters(from_config(config), config) == _numel(_model_from(config, meta=True))


def test_llama2_7b_has_its_published_parameter_count():
    assert count_parameters(from_config(LLAMA2_7B), LLAMA2_7B) == 6_738_415_616
    # without config.json (a GGUF's metadata gives the same ArchInfo) the count is the same
    assert (
        estimate_memory(from_config(LLAMA2_7B), batch_size=1, sequence_length=16).parameters
        == 6_738_415_616
    )


def test_lora_targets_resolve_like_peft_and_count_r_times_in_plus_out():
    shape = model_shape(from_config(LLAMA2_7B), LLAMA2_7B)
    default = shape.lora_targets(None)
    assert [g.path for g in default] == [f"self_attn.{p}_proj" for p in "qkvo"]
    est = estimate_memory(
        from_config(LLAMA2_7B), config=LLAMA2_7B, batch_size=1, sequence_length=8, lora_rank=64
    )
    assert est.trainable_parameters == 32 * 4 * 64 * (4096 + 4096) == 67_108_864
    gpt2 = model_shape(from_config(TINY_CONFIGS["gpt2"]), TINY_CONFIGS["gpt2"])
    assert [g.path for g in gpt2.lora_targets(["c_proj"])] == [
        "attn.c_proj",
        "mlp.c_proj",
    ]  # suffix rule
    assert len(gpt2.lora_targets(["all-linear"])) == 4  # the tied head is not a block linear
    with pytest.raises(InvalidInputError) as caught:
        shape.lora_targets(["query"])
    assert "q_proj" in caught.value.hint


def test_lora_parameters_match_peft():
    import peft

    for arch in ("llama", "gpt2", "bert", "t5"):
        config = TINY_CONFIGS[arch]
        shape = model_shape(from_config(config), config)
        targets = shape.default_lora_targets
        model = peft.get_peft_model(
            build_tiny_model(arch), peft.LoraConfig(r=4, target_modules=targets)
        )
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        est = estimate_memory(
            from_config(config), config=config, batch_size=1, sequence_length=8, lora_rank=4
        )
        assert est.trainable_parameters == trainable, arch


# ---- persistent tensors: weights, gradients and optimizer state of a real step ------------------


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _real_step_bytes(config: dict, precision: str, optimizer: str, lora_rank: int | None) -> dict:
    """Bytes held by a real training step: frozen and trainable weights, the gradients after
    backward, the optimizer state after step() (torch's fused AdamW, or SGD with momentum)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    model = _model_from(config).to(dtype).train()
    if lora_rank:
        import peft

        targets = model_shape(from_config(config), config).default_lora_targets
        lora = peft.LoraConfig(r=lora_rank, target_modules=targets, lora_dropout=0.0)
        model = peft.get_peft_model(model, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adamw":
        step = torch.optim.AdamW(trainable, lr=1e-3, fused=True)
    else:
        step = torch.optim.SGD(trainable, lr=1e-3, momentum=0.9)
    ids = torch.randint(0, config["vocab_size"], (1, 8))
    kwargs = {"decoder_input_ids": ids} if config["model_type"] == "t5" else {}
    model(input_ids=ids, labels=ids.clone(), **kwargs).loss.backward()
    held = {
        "frozen": _nbytes(p for p in model.parameters() if not p.requires_grad),
        "trainable": _nbytes(trainable),
        "gradients": _nbytes(p.grad for p in trainable),
    }
    step.step()
    states = [t for state in step.state.values() for t in state.values()]
    held["optimizer"] = _nbytes(t for t in states if torch.is_tensor(t) and t.dim())  # not `step`
    return held


@pytest.mark.parametrize(
    ("arch", "precision", "optimizer", "lora_rank"),
    [(arch, "fp32", "adamw", None) for arch in ("llama", "gpt2", "bert", "t5")]
    + [
        ("llama", "fp32", "sgd", None),
        ("llama", "bf16", "adamw", None),
        ("llama", "fp32", "adamw", 4),
        ("gpt2", "bf16", "adamw", 4),
    ],
)
def test_weights_gradients_and_optimizer_state_match_a_real_step(
    arch, precision, optimizer, lora_rank
):
    config = TINY_CONFIGS[arch]
    real = _real_step_bytes(config, precision, optimizer, lora_rank)
    est = estimate_memory(
        from_config(config),
        config=config,
        batch_size=1,
        sequence_length=8,
        optimizer=optimizer,
        precision=precision,
        lora_rank=lora_rank,
        device="cpu",
        master_weights=False,
    )
    assert est.breakdown["optimizer"] == real["optimizer"]
    if lora_rank:  # fp32 adapters over a frozen base
        assert (est.breakdown["weights"], est.breakdown["adapters"]) == (
            real["frozen"],
            real["trainable"],
        )
        assert est.trainable_parameters * 4 == real["gradients"]
    else:  # at 8 tokens the end of backward, with every gradient alive, is the peak
        assert est.breakdown["weights"] == real["trainable"] and real["frozen"] == 0
        assert est.peak_phase == "the end of backward"
        assert est.breakdown["gradients"] == real["gradients"]


# ---- activations: the tensors autograd keeps ---------------------------------------------------


def _saved_by_autograd(arch: str, attention: str, bf16: bool, lora: bool) -> tuple[int, ModelShape]:
    """Bytes of distinct storages the forward saves for backward, less the loss's."""
    import torch

    config = dict(TINY_CONFIGS[arch])
    model = _model_from(config)
    model.config._attn_implementation = attention
    model.config.use_cache = False
    if arch == "t5":
        model.config.decoder_start_token_id = 0
    model = model.to(torch.bfloat16 if bf16 else torch.float32).train()
    shape = model_shape(from_config(config), config)
    if lora:
        import peft

        targets = shape.default_lora_targets
        model = peft.get_peft_model(
            model, peft.LoraConfig(r=4, target_modules=targets, lora_dropout=0.0)
        )
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weights |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    kept: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    torch.manual_seed(0)
    ids = torch.randint(0, config["vocab_size"], (2, 32))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids.clone())
    return sum(kept.values()), shape


def _inventory_bytes(
    shape, attention: str, bf16: bool, lora: bool, batch: int = 2, seq: int = 32
) -> int:
    compute = 2 if bf16 else 4
    paths = frozenset(g.path for g in shape.lora_targets(None)) if lora else frozenset()
    saved = Saved(compute, not lora, paths, 4 if lora else 0, "cpu", attention, not lora)
    inv = saved_inventory(shape, saved, seq)
    tokens = batch * seq
    per_token = sum(count * per for count, per in inv.blocks) + inv.outside
    loss = shape.options["loss_bytes"] or compute
    return (
        tokens * per_token + inv.fixed + tokens * shape.vocab * loss + tokens * 8 + loss
    )  # + labels, loss


@pytest.mark.parametrize(
    ("arch", "attention", "bf16", "lora"),
    [(a, "sdpa", False, lora) for a in TINY_CONFIGS for lora in (False, True)]
    + [
        (a, attn, True, lora)
        for a in ("llama", "gpt2", "gpt_neox", "bert")
        for attn in ("sdpa", "eager")
        for lora in (False, True)
    ]
    + [
        (a, "eager", False, lora)
        for a in ("llama", "mistral", "gpt2", "t5")
        for lora in (False, True)
    ],
)
def test_saved_activation_inventory_matches_autograd(arch, attention, bf16, lora):
    real, shape = _saved_by_autograd(arch, attention, bf16, lora)
    predicted = _inventory_bytes(shape, attention, bf16, lora)
    if arch in ("llama", "mistral", "qwen2", "gpt2"):
        assert predicted == real  # tensor for tensor
    else:  # a few bytes per token of ids and norm statistics are not tracked exactly
        assert abs(predicted - real) <= 32 * 64 + 0.005 * real


# ---- the peak: estimate against torch's own allocation events ----------------------------------


def _exact_peak(config: dict, batch: int, seq: int, **settings) -> int:
    """Live tensor bytes at the peak of the second training step (profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    from entrenar_tui.core.memory.probe import _build, _train

    lora = settings.get("lora_rank")
    targets = model_shape(from_config(config), config).default_lora_targets if lora else None
    spec = dict(
        config=config,
        batch=batch,
        seq=seq,
        optimizer=settings.get("optimizer", "adamw"),
        precision=settings.get("precision", "fp32"),
        checkpointing=settings.get("gradient_checkpointing", False),
        lora_rank=lora,
        lora_targets=targets,
        attention="sdpa",
        device="cpu",
        steps=1,
    )
    model, optimizer, vocab = _build(spec)
    _train(model, optimizer, vocab, spec, batch, seq, 1)  # the first step allocates optimizer state
    persistent = sum(p.numel() * p.element_size() for p in model.parameters())
    persistent += sum(
        t.numel() * t.element_size()
        for s in optimizer.state.values()
        for t in s.values()
        if t.dim()
    )
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _train(model, optimizer, vocab, spec, batch, seq, 1)
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return persistent + peak


@pytest.mark.parametrize(
    ("arch", "settings"),
    [
        ("llama", dict()),
        ("llama", dict(lora_rank=8, gradient_checkpointing=True)),
        ("llama", dict(precision="bf16", lora_rank=8)),
        ("gpt2", dict(gradient_checkpointing=True, optimizer="sgd")),
        ("bert", dict(lora_rank=8)),
    ],
)
def test_estimated_peak_matches_the_allocator(arch, settings):
    config = TINY_CONFIGS[arch]
    real = _exact_peak(config, 4, 64, **settings)
    est = estimate_memory(
        from_config(config),
        config=config,
        batch_size=4,
        sequence_length=64,
        device="cpu",
        master_weights=False,
        **settings,
    )
    assert est.peak_tensor_bytes == pytest.approx(real, rel=0.03), est.summary()


def test_logits_dominated_peak_matches_the_allocator():
    """A causal LM's loss holds the fp32 log-softmax, its gradient and the logits' gradient at
    once: at a wide vocabulary that is most of the peak, which must still match the allocator."""
    config = dict(TINY_CONFIGS["llama"], vocab_size=16384)
    real = _exact_peak(config, 4, 64)
    est = estimate_memory(
        from_config(config),
        config=config,
        batch_size=4,
        sequence_length=64,
        device="cpu",
        master_weights=False,
    )
    assert est.peak_phase == "the loss backward"
    assert est.breakdown["logits"] > est.peak_tensor_bytes / 2
    assert est.peak_tensor_bytes == pytest.approx(real, rel=0.03), est.summary()


# ---- the whole estimate against a real process -------------------------------------------------


@pytest.fixture(scope="module")
def measured_small_llama():
    """Full fine-tuning and LoRA r=8 of a small LLaMA, two steps each, side by side."""
    runs = [dict(), dict(lora_rank=8)]
    with ThreadPoolExecutor(2) as pool:
        measured = list(
            pool.map(
                lambda s: measure_training_step(
                    LLAMA_SMALL, batch_size=2, sequence_length=64, threads=1, **s
                ),
                runs,
            )
        )
    estimates = [
        estimate_memory(
            from_config(LLAMA_SMALL),
            config=LLAMA_SMALL,
            batch_size=2,
            sequence_length=64,
            device="cpu",
            **s,
        )
        for s in runs
    ]
    return list(zip(runs, measured, estimates, strict=True))


def test_cpu_estimate_is_within_ten_percent_of_resident_memory(measured_small_llama):
    # The estimate's tensors are exact to the allocator (above); the resident set also holds
    # 1.3-3 MiB of non-tensor memory the steps touch (autograd graph, oneDNN scratch, small-block
    # arenas), which step_bytes counts as a constant. Measured here: full -1 %, LoRA -3 %.
    for run, measured, estimate in measured_small_llama:
        error = (estimate.step_bytes - measured.peak_bytes) / measured.peak_bytes
        assert abs(error) <= 0.10, (run, measured, estimate.summary())
        assert measured.trainable_parameters == estimate.trainable_parameters
        assert measured.parameters == estimate.parameters + estimate.trainable_parameters * bool(
            run
        )
        assert measured.model_bytes == pytest.approx(
            estimate.breakdown["weights"] + estimate.breakdown["adapters"], rel=0.05
        )


def test_cpu_runtime_overhead_matches_the_measured_baseline(measured_small_llama):
    # The runtime's resident size (Python + torch + transformers before the model exists) is
    # a property of the machine, not of the run: 410-490 MB on the dev box, ~510 MB on CI with
    # the same package versions. The estimate's constant (400 MiB) must stay in that band; the
    # training step itself is held to 10 % above, independent of it.
    for run, measured, estimate in measured_small_llama:
        baseline = measured.baseline_bytes
        assert estimate.breakdown["overhead"] == pytest.approx(baseline, rel=0.35), (run, baseline)


def test_measuring_rejects_what_it_cannot_run():
    with pytest.raises(InvalidInputError):
        measure_training_step(LLAMA_SMALL, batch_size=1, sequence_length=8, optimizer="adamw8bit")
    with pytest.raises(InvalidInputError, match="lacks"):  # checked before any process starts
        measure_training_step(
            dict(model_type="llama", vocab_size=10, hidden_size=7), batch_size=1, sequence_length=8
        )


# ---- conventions, quantisation, optimizers -----------------------------------------------------


def _llama7b(**settings) -> MemoryEstimate:
    base = dict(batch_size=1, sequence_length=2048, config=LLAMA2_7B)
    return estimate_memory(from_config(LLAMA2_7B), **(base | settings))


def test_full_fine_tuning_bytes_per_parameter_follow_the_conventions():
    p = 6_738_415_616
    fp32 = _llama7b(sequence_length=8)
    assert fp32.breakdown["weights"] == 4 * p and fp32.breakdown["optimizer"] == 8 * p
    mixed = _llama7b(sequence_length=8, precision="bf16")  # ZeRO accounting: 2 + 4 + 8 (+ 2 grads)
    assert (
        mixed.breakdown["weights"],
        mixed.breakdown["master_weights"],
        mixed.breakdown["optimizer"],
    ) == (2 * p, 4 * p, 8 * p)
    pure = _llama7b(sequence_length=8, precision="bf16", master_weights=False)
    assert (pure.breakdown["master_weights"], pure.breakdown["optimizer"]) == (0, 4 * p)
    sgd = _llama7b(sequence_length=8, optimizer="sgd")
    assert sgd.breakdown["optimizer"] == 4 * p
    assert fp32.peak_phase == "the end of backward" and fp32.breakdown["gradients"] == 4 * p


def test_nf4_bytes_follow_the_qlora_paper():
    """Dettmers et al. 2023, section 3: an fp32 absmax per 64 weights costs 32/64 = 0.5 bits a
    parameter; double quantisation brings it to 8/64 + 32/(64 x 256) = 0.127 bits. So a 4-bit
    base stores 4.5 or 4.127 bits per block linear weight; everything else stays fp32."""
    block_linear = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    kept_fp32 = 6_738_415_616 - block_linear  # embeddings, head, norms
    for double_quant, bits in ((True, 4 + 8 / 64 + 32 / (64 * 256)), (False, 4 + 32 / 64)):
        est = _llama7b(
            precision="bf16", lora_rank=64, quantize_base="nf4", double_quant=double_quant
        )
        assert est.breakdown["weights"] == pytest.approx(
            block_linear * bits / 8 + 4 * kept_fp32, rel=1e-4
        ), double_quant


def test_adamw8bit_keeps_one_byte_per_moment_above_4096_elements():
    adamw = _llama7b(precision="bf16", lora_rank=16)
    eight = _llama7b(precision="bf16", lora_rank=16, optimizer="adamw8bit")
    trainable = adamw.trainable_parameters
    assert adamw.breakdown["optimizer"] == 8 * trainable
    assert eight.breakdown["optimizer"] == pytest.approx(2 * trainable * (1 + 4 / 256), rel=1e-6)
    tiny = estimate_memory(
        from_config(TINY_CONFIGS["llama"]),
        batch_size=1,
        sequence_length=4,
        lora_rank=2,
        optimizer="adamw8bit",
    )
    assert (
        tiny.breakdown["optimizer"] == 8 * tiny.trainable_parameters
    )  # all tensors under 4096: 32-bit state


def test_checkpointing_lora_and_quantisation_each_cut_the_peak():
    full = _llama7b(precision="bf16", master_weights=False)
    lora = _llama7b(precision="bf16", lora_rank=16)
    qlora = _llama7b(precision="bf16", lora_rank=16, quantize_base="nf4")
    qlora_gc = _llama7b(
        precision="bf16", lora_rank=16, quantize_base="nf4", gradient_checkpointing=True
    )
    assert full.total_bytes > lora.total_bytes > qlora.total_bytes > qlora_gc.total_bytes
    assert qlora_gc.breakdown["activations"] < qlora.breakdown["activations"] / 10
    assert lora.peak_phase == "the loss backward"  # its size is measured in the allocator test


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.slow
@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA device")
def test_cuda_tensor_peak_matches_max_memory_allocated():
    """On CUDA the step is measured by torch's allocator (max_memory_allocated), so the
    estimate's tensor peak must match it as closely as the CPU allocator test does."""
    for run in (dict(), dict(lora_rank=8), dict(precision="bf16", lora_rank=8)):
        measured = measure_training_step(
            LLAMA_SMALL, batch_size=2, sequence_length=64, device="cuda", **run
        )
        est = estimate_memory(
            from_config(LLAMA_SMALL),
            config=LLAMA_SMALL,
            batch_size=2,
            sequence_length=64,
            device="cuda",
            master_weights=False,
            **run,
        )
        assert est.peak_tensor_bytes == pytest.approx(measured.peak_bytes, rel=0.05), run


# ---- invariants --------------------------------------------------------------------------------


@st.composite
def _settings(draw):
    lora = draw(st.one_of(st.none(), st.integers(1, 256)))
    return dict(
        batch_size=draw(st.integers(1, 64)),
        sequence_length=draw(st.integers(1, 4096)),
        optimizer=draw(st.sampled_from(["adamw", "adamw8bit", "sgd"])),
        precision=draw(st.sampled_from(["fp32", "fp16", "bf16"])),
        gradient_checkpointing=draw(st.booleans()),
        lora_rank=lora,
        quantize_base=draw(st.sampled_from([None, "nf4"])) if lora else None,
        double_quant=draw(st.booleans()),
        attention=draw(st.sampled_from(["sdpa", "eager"])),
        device=draw(st.sampled_from(["cuda", "cpu"])),
        master_weights=draw(st.sampled_from([None, True, False])),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=st.sampled_from([*TINY_CONFIGS, "llama-2-7b"]), settings_=_settings())
def test_estimates_are_well_formed_and_grow_with_the_batch(arch, settings_):
    config = LLAMA2_7B if arch == "llama-2-7b" else TINY_CONFIGS[arch]
    est = estimate_memory(from_config(config), config=config, **settings_)
    assert set(est.breakdown) == set(KEYS)
    assert all(isinstance(v, int) and v >= 0 for v in est.breakdown.values())
    assert est.trainable_parameters > 0
    assert settings_["lora_rank"] or est.trainable_parameters == est.parameters
    data = json.loads(json.dumps(est.to_dict()))
    assert (
        data["total_bytes"] == est.total_bytes
        and data["peak_tensor_bytes"] == est.peak_tensor_bytes
    )
    bigger = estimate_memory(
        from_config(config),
        config=config,
        **(settings_ | {"batch_size": settings_["batch_size"] + 1}),
    )
    assert bigger.total_bytes >= est.total_bytes


# ---- inputs and models -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (dict(optimizer="lion"), "optimizer"),
        (dict(precision="int8"), "precision"),
        (dict(batch_size=0), "batch_size"),
        (dict(lora_rank=0), "lora_rank"),
        (dict(quantize_base="nf4"), "LoRA"),
        (dict(attention="flash"), "attention"),
        (dict(device="tpu"), "device"),
    ],
)
def test_bad_settings_are_invalid_input_with_a_hint(settings, words):
    base = dict(batch_size=1, sequence_length=8)
    with pytest.raises(InvalidInputError) as caught:
        estimate_memory(from_config(TINY_CONFIGS["llama"]), **(base | settings))
    assert words in caught.value.message and caught.value.hint


def test_architectures_that_cannot_be_estimated_say_why():
    with pytest.raises(InvalidInputError, match="lacks"):
        estimate_memory(ArchInfo("llama", "LLaMA", layers=2), batch_size=1, sequence_length=8)
    unknown = ArchInfo("unknown", "unknown", 2, 64, 4, 4, 16, 128, 256, gated_mlp=True)
    read_as_llama = estimate_memory(unknown, batch_size=1, sequence_length=8)
    assert any("LLaMA-shaped" in note for note in read_as_llama.notes)
    with pytest.raises(UnsupportedError):
        estimate_memory(
            ArchInfo("whisper", "whisper", 2, 64, 4, vocab_size=100),
            batch_size=1,
            sequence_length=8,
        )


def test_estimate_for_model_reads_folders_and_packaged_models(tiny_model_dir):
    folder = estimate_for_model(tiny_model_dir("llama"), batch_size=2, sequence_length=16)
    assert folder.parameters == _numel(build_tiny_model("llama"))
    gguf = estimate_for_model(
        "smollm2-135m", batch_size=1, sequence_length=512, lora_rank=8, precision="bf16"
    )
    assert gguf.parameters == 134_515_008  # the GGUF's tensors and the formula agree
    assert gguf.inputs["lora_targets"] == [f"{p}_proj" for p in "qkvo"]  # PEFT target_modules
    bert = estimate_for_model("minilm-l6", batch_size=8, sequence_length=128)
    assert bert.inputs["sequence_length"] == 128 and bert.peak_phase


def test_importing_the_estimator_loads_no_torch():
    code = "import sys, entrenar_tui.core.memory, entrenar_tui.core.sizes; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_summary_names_the_phase_and_the_parts():
    est = _llama7b(precision="bf16", lora_rank=16)
    assert est.peak_phase in est.summary() and "GiB" in est.summary()
    assert math.isclose(est.total_bytes / 2**30, float(est.summary().split()[0]), rel_tol=0.01)


def test_the_memory_package_imports_run_one_way():
    """options -> settings -> shape -> activations -> notes -> estimate, probe: no module
    imports one later in line."""
    import ast
    from pathlib import Path

    import entrenar_tui.core.memory as package

    order = ["options", "settings", "shape", "activations", "notes", "estimate", "probe"]
    folder = Path(package.__file__).parent
    for name in order:
        tree = ast.parse((folder / f"{name}.py").read_text())
        siblings = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        }
        later = siblings & set(order[order.index(name) :])
        assert not later, f"{name}.py imports {later}"
