"""Exact module inventories per architecture family, read from config.json (or ArchInfo).

Each family lists its modules the way transformers builds them (names, shapes, biases, tied
heads), so parameter counts equal `sum(p.numel() for p in model.parameters())` of the real
model, and LoRA targets resolve with PEFT's rule (a module matches a target when its name is
the target or ends with "." + target). The memory estimator reads these groups to know which
weights NF4 converts (linear layers inside the blocks), what a LoRA adapter adds, and the
widths its activation formulas need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InvalidInputError, UnsupportedError
from .models.arch import ArchInfo

LLAMA_LIKE = ("llama", "mistral", "qwen2")
FAMILIES = (*LLAMA_LIKE, "gpt2", "gpt_neox", "bert", "roberta", "t5")

# LoRA targets when none are given: every attention projection (query, key, value, output).
DEFAULT_LORA_TARGETS = {
    "gpt2": ["c_attn", "attn.c_proj"],
    "gpt_neox": ["query_key_value", "attention.dense"],
    "bert": ["query", "key", "value", "attention.output.dense"],
    "roberta": ["query", "key", "value", "attention.output.dense"],
    "t5": ["q", "k", "v", "o"],
}
_LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass(frozen=True)
class ModuleGroup:
    """`count` identical modules (one per layer, usually) with one dotted name."""

    path: str  # e.g. "self_attn.q_proj"; inside blocks the layer index is left out
    kind: str  # "linear", "embedding", "norm" or "table" (a bare parameter)
    in_features: int
    out_features: int
    count: int = 1
    bias: bool = False
    in_blocks: bool = True  # inside a transformer block: what NF4 quantisation converts

    @property
    def each(self) -> int:
        if self.kind == "linear":
            return self.in_features * self.out_features + (self.out_features if self.bias else 0)
        if self.kind == "norm":
            return self.out_features * (2 if self.bias else 1)
        return self.in_features * self.out_features

    @property
    def parameters(self) -> int:
        return self.each * self.count

    def matches(self, target: str) -> bool:
        return self.path == target or self.path.endswith("." + target)


@dataclass(frozen=True)
class ModelShape:
    """The widths, module groups and training-time options of one model."""

    family: str
    layers: int  # transformer blocks (the encoder's for T5)
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    groups: tuple[ModuleGroup, ...]
    tied: bool = False
    decoder_layers: int = 0  # T5's decoder blocks
    dropout: dict = field(default_factory=dict)  # "attention", "hidden", "embedding" -> p
    gated: bool = True  # SwiGLU / gated-GELU MLP
    rope_dim: int = 0  # rotary width per head (tables saved once per forward)
    options: dict = field(default_factory=dict)  # family switches: parallel residual, GELU kind

    @property
    def parameters(self) -> int:
        return sum(g.parameters for g in self.groups)

    @property
    def linear_groups(self) -> list[ModuleGroup]:
        return [g for g in self.groups if g.kind == "linear"]

    @property
    def default_lora_targets(self) -> list[str]:
        """PEFT `target_modules` for every attention projection of this family."""
        return list(DEFAULT_LORA_TARGETS.get(self.family, _LLAMA_TARGETS))

    def lora_targets(self, targets: list[str] | None) -> list[ModuleGroup]:
        """The linear groups that PEFT would wrap for `targets` ("all-linear" as in PEFT)."""
        if targets is None:
            targets = self.default_lora_targets
        blocks = [g for g in self.linear_groups if g.in_blocks]
        if targets == ["all-linear"] or targets == "all-linear":
            return blocks
        unknown = [t for t in targets if not any(g.matches(t) for g in self.linear_groups)]
        if unknown:
            names = sorted({g.path.rsplit(".", 1)[-1] for g in self.linear_groups})
            raise InvalidInputError(
                f"LoRA target(s) {', '.join(unknown)} match no linear module of this {self.family} model",
                f"use module names such as {', '.join(names)}, or all-linear",
            )
        return [g for g in self.linear_groups if any(g.matches(t) for t in targets)]


def _linear(path: str, n_in: int, n_out: int, count: int, bias: bool = False) -> ModuleGroup:
    return ModuleGroup(path, "linear", n_in, n_out, count, bias)


def _norm(path: str, width: int, count: int, bias: bool, in_blocks: bool = True) -> ModuleGroup:
    return ModuleGroup(path, "norm", 0, width, count, bias, in_blocks)


def _outside(path: str, kind: str, n_in: int, n_out: int, bias: bool = False) -> ModuleGroup:
    return ModuleGroup(path, kind, n_in, n_out, 1, bias, in_blocks=False)


def _llama_groups(s: dict, cfg: dict, family: str) -> list[ModuleGroup]:
    h, n, i, v = s["hidden"], s["layers"], s["intermediate"], s["vocab"]
    q_out, kv_out = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"]
    qkv_bias = family == "qwen2" or bool(cfg.get("attention_bias", False))
    o_bias = family != "qwen2" and bool(cfg.get("attention_bias", False))
    mlp_bias = bool(cfg.get("mlp_bias", False))
    groups = [
        _outside("model.embed_tokens", "embedding", v, h),
        _linear("self_attn.q_proj", h, q_out, n, qkv_bias),
        _linear("self_attn.k_proj", h, kv_out, n, qkv_bias),
        _linear("self_attn.v_proj", h, kv_out, n, qkv_bias),
        _linear("self_attn.o_proj", q_out, h, n, o_bias),
        _linear("mlp.gate_proj", h, i, n, mlp_bias),
        _linear("mlp.up_proj", h, i, n, mlp_bias),
        _linear("mlp.down_proj", i, h, n, mlp_bias),
        _norm("input_layernorm", h, n, False),
        _norm("post_attention_layernorm", h, n, False),
        _norm("model.norm", h, 1, False, in_blocks=False),
    ]
    return groups + ([] if s["tied"] else [_outside("lm_head", "linear", h, v)])


def _gpt2_groups(s: dict, cfg: dict) -> list[ModuleGroup]:
    h, n, i, v = s["hidden"], s["layers"], s["intermediate"], s["vocab"]
    groups = [
        _outside("transformer.wte", "embedding", v, h),
        _outside("transformer.wpe", "embedding", int(cfg.get("n_positions", 1024)), h),
        _norm("ln_1", h, n, True),
        _linear("attn.c_attn", h, 3 * h, n, True),
        _linear("attn.c_proj", h, h, n, True),
        _norm("ln_2", h, n, True),
        _linear("mlp.c_fc", h, i, n, True),
        _linear("mlp.c_proj", i, h, n, True),
        _norm("transformer.ln_f", h, 1, True, in_blocks=False),
    ]
    return groups + ([] if s["tied"] else [_outside("lm_head", "linear", h, v)])


def _neox_groups(s: dict, cfg: dict) -> list[ModuleGroup]:
    h, n, i, v = s["hidden"], s["layers"], s["intermediate"], s["vocab"]
    attn_bias = bool(cfg.get("attention_bias", True))
    groups = [
        _outside("gpt_neox.embed_in", "embedding", v, h),
        _norm("input_layernorm", h, n, True),
        _norm("post_attention_layernorm", h, n, True),
        _linear("attention.query_key_value", h, 3 * h, n, attn_bias),
        _linear("attention.dense", h, h, n, attn_bias),
        _linear("mlp.dense_h_to_4h", h, i, n, True),
        _linear("mlp.dense_4h_to_h", i, h, n, True),
        _norm("gpt_neox.final_layer_norm", h, 1, True, in_blocks=False),
    ]
    return groups + ([] if s["tied"] else [_outside("lm_head", "linear", h, v)])


def _bert_groups(s: dict, cfg: dict, family: str) -> list[ModuleGroup]:
    h, n, i, v = s["hidden"], s["layers"], s["intermediate"], s["vocab"]
    head = "cls.predictions" if family == "bert" else "lm_head"
    groups = [
        _outside("embeddings.word_embeddings", "embedding", v, h),
        _outside(
            "embeddings.position_embeddings",
            "embedding",
            int(cfg.get("max_position_embeddings", 512)),
            h,
        ),
        _outside(
            "embeddings.token_type_embeddings", "embedding", int(cfg.get("type_vocab_size", 2)), h
        ),
        _norm("embeddings.LayerNorm", h, 1, True, in_blocks=False),
        _linear("attention.self.query", h, h, n, True),
        _linear("attention.self.key", h, h, n, True),
        _linear("attention.self.value", h, h, n, True),
        _linear("attention.output.dense", h, h, n, True),
        _norm("attention.output.LayerNorm", h, n, True),
        _linear("intermediate.dense", h, i, n, True),
        _linear("output.dense", i, h, n, True),
        _norm("output.LayerNorm", h, n, True),
        _outside(f"{head}{'.transform' if family == 'bert' else ''}.dense", "linear", h, h, True),
        _norm(
            f"{head}{'.transform.LayerNorm' if family == 'bert' else '.layer_norm'}",
            h,
            1,
            True,
            False,
        ),
        _outside(f"{head}.bias", "table", 1, v),
    ]
    # untied, the decoder keeps its own bias next to the head's (tied, they are one parameter)
    return groups + ([] if s["tied"] else [_outside(f"{head}.decoder", "linear", h, v, bias=True)])


def _t5_stack(prefix: str, s: dict, n: int, cross: bool, buckets: int) -> list[ModuleGroup]:
    h, inner, i = s["hidden"], s["heads"] * s["head_dim"], s["intermediate"]
    ff_index = 2 if cross else 1
    attn_kinds = ["SelfAttention"] + (["EncDecAttention"] if cross else [])
    groups = [
        _outside(
            f"{prefix}.block.0.layer.0.SelfAttention.relative_attention_bias",
            "embedding",
            buckets,
            s["heads"],
        )
    ]
    for index, kind in enumerate(attn_kinds):
        base = f"{prefix}.layer.{index}.{kind}"
        groups += [_linear(f"{base}.{p}", h, inner, n) for p in ("q", "k", "v")]
        groups += [
            _linear(f"{base}.o", inner, h, n),
            _norm(f"{prefix}.layer.{index}.layer_norm", h, n, False),
        ]
    ff = f"{prefix}.layer.{ff_index}.DenseReluDense"
    ins = ("wi_0", "wi_1") if s["gated"] else ("wi",)
    groups += [_linear(f"{ff}.{p}", h, i, n) for p in ins]
    groups += [
        _linear(f"{ff}.wo", i, h, n),
        _norm(f"{prefix}.layer.{ff_index}.layer_norm", h, n, False),
    ]
    return groups + [_norm(f"{prefix}.final_layer_norm", h, 1, False, in_blocks=False)]


def _t5_groups(s: dict, cfg: dict) -> list[ModuleGroup]:
    buckets = int(cfg.get("relative_attention_num_buckets", 32))
    groups = [_outside("shared", "embedding", s["vocab"], s["hidden"])]
    groups += _t5_stack("encoder", s, s["layers"], False, buckets)
    groups += _t5_stack("decoder", s, s["decoder_layers"], True, buckets)
    return groups + ([] if s["tied"] else [_outside("lm_head", "linear", s["hidden"], s["vocab"])])


def _dropouts(family: str, cfg: dict) -> dict:
    """Dropout probabilities in training mode, with transformers' defaults for missing keys."""
    if family == "gpt2":
        keys = {
            "attention": ("attn_pdrop", 0.1),
            "hidden": ("resid_pdrop", 0.1),
            "embedding": ("embd_pdrop", 0.1),
        }
    elif family in ("bert", "roberta"):
        keys = {
            "attention": ("attention_probs_dropout_prob", 0.1),
            "hidden": ("hidden_dropout_prob", 0.1),
        }
        keys["embedding"] = keys["hidden"]
    elif family == "gpt_neox":
        keys = {"attention": ("attention_dropout", 0.0), "hidden": ("hidden_dropout", 0.0)}
    elif family == "t5":
        keys = {name: ("dropout_rate", 0.1) for name in ("attention", "hidden", "embedding")}
    else:
        keys = {"attention": ("attention_dropout", 0.0)}
    return {name: float(cfg.get(key, default) or 0.0) for name, (key, default) in keys.items()}


def _required(arch: ArchInfo) -> dict:
    needed = {
        "layers": arch.layers,
        "hidden": arch.hidden_size,
        "heads": arch.heads,
        "vocab": arch.vocab_size,
    }
    missing = [name for name, value in needed.items() if not value]
    if missing:
        raise InvalidInputError(
            f"the architecture of this {arch.family} model lacks {', '.join(missing)}",
            "estimate from a model folder with config.json, or a GGUF file with full metadata",
        )
    return needed


def model_shape(arch: ArchInfo, config: dict | None = None) -> ModelShape:
    """Module groups and widths from an ArchInfo, refined by config.json when given."""
    cfg = dict(config or {})
    family = arch.model_type
    if family not in FAMILIES:
        if not arch.gated_mlp and family != "unknown":
            raise UnsupportedError(
                f"memory estimates do not know the {arch.family} architecture",
                f"supported families: {', '.join(FAMILIES)}",
            )
        family = "llama"  # a LLaMA-shaped decoder is the safest reading of an unknown gated model
        cfg["read_as"] = arch.model_type
    s = _required(arch)
    s["kv_heads"] = arch.kv_heads or s["heads"]
    s["head_dim"] = arch.head_dim or s["hidden"] // s["heads"]
    s["intermediate"] = arch.intermediate_size or 4 * s["hidden"]
    # transformers 5 ties T5's head to its embeddings whatever config.json says (v1.1 included)
    s["tied"] = bool(arch.tied_embeddings) or family == "t5"
    s["gated"] = bool(arch.gated_mlp) if family == "t5" else family in LLAMA_LIKE
    s["decoder_layers"] = (arch.decoder_layers or s["layers"]) if family == "t5" else 0
    if family in LLAMA_LIKE:
        groups = _llama_groups(s, cfg, family)
    elif family == "gpt2":
        groups = _gpt2_groups(s, cfg)
    elif family == "gpt_neox":
        groups = _neox_groups(s, cfg)
    elif family in ("bert", "roberta"):
        groups = _bert_groups(s, cfg, family)
    else:
        groups = _t5_groups(s, cfg)
    rope = 0
    if family in LLAMA_LIKE:
        rope = s["head_dim"]
    elif family == "gpt_neox":
        factor = (cfg.get("rope_parameters") or {}).get(
            "partial_rotary_factor", cfg.get("rotary_pct", 0.25)
        )
        rope = int(s["head_dim"] * factor)
    options = {
        "parallel_residual": bool(cfg.get("use_parallel_residual", True)),
        "gelu_saves": 4 if str(cfg.get("activation_function", "gelu_new")) == "gelu_new" else 1,
        "max_positions": int(cfg.get("max_position_embeddings", 512)),
        "loss_bytes": 4 if family not in ("bert", "roberta", "t5") else 0,  # 0: the compute dtype
        "read_as": cfg.get("read_as"),  # the model_type a LLaMA reading stands in for
    }
    dropout = _dropouts(family, cfg)
    return ModelShape(family=family, groups=tuple(groups), dropout=dropout, rope_dim=rope, options=options, **s)  # fmt: skip


def count_parameters(arch: ArchInfo, config: dict | None = None) -> int:
    """Parameters the transformers model of this config holds (tied weights counted once)."""
    return model_shape(arch, config).parameters


# ---- activations: what autograd keeps for backward, per token, per family ---------------------
# Each family lists the tensors its forward saves for backward, as transformers 5 and torch 2.x
# build them (checked tensor by tensor with saved-tensor hooks in tests/unit/test_memory.py).
# Korthikanti et al. 2022 ("Reducing Activation Recomputation", sbh(34 + 5as/h) for GPT in
# 16 bits) is the same bookkeeping done once for one layer shape; here each family, dtype,
# trainability and attention kernel gets its own list. CPU kernels are checked; on CUDA the
# lists assume what torch documents: SDPA runs flash / memory-efficient kernels (dropout
# included, so no s x s tensors), dropout keeps a bool mask, LayerNorm keeps fp32 statistics.


@dataclass(frozen=True)
class Saved:
    """What decides which tensors autograd keeps."""

    compute: int  # bytes per activation element: 4 (fp32) or 2 (fp16/bf16)
    full: bool  # every weight trains
    lora: frozenset  # paths of LoRA-wrapped groups
    rank: int
    device: str  # "cuda" or "cpu"
    attention: str  # "sdpa" or "eager"
    input_grads: bool  # embedding output requires grad (full fine-tuning, or checkpointing)

    def grad_in(self, *paths: str) -> bool:
        """A linear keeps its input when its weight trains, or when its LoRA adapter reads that
        same tensor (over 16-bit activations the adapter keeps its own fp32 copy instead)."""
        return self.full or (self.compute == 4 and any(p in self.lora for p in paths))

    @property
    def mask(self) -> int:  # dropout mask: bool on CUDA (native_dropout), a float tensor on CPU
        return 1 if self.device == "cuda" else self.compute

    @property
    def stat(self) -> int:  # LayerNorm mean / rstd: fp32 on CUDA, the input dtype on CPU
        return 4 if self.device == "cuda" else self.compute

    def adapters(self, shape: ModelShape, prefix: str = "") -> int:
        """LoRA keeps A's output (fp32) and, over 16-bit activations, an fp32 copy of its input."""
        total = 0
        for g in shape.groups:
            if g.path in self.lora and g.path.startswith(prefix):
                total += 4 * self.rank + (4 * g.in_features if self.compute != 4 else 0)
        return total


@dataclass(frozen=True)
class Inventory:
    """Bytes autograd keeps: `blocks` as (count, bytes per token), the rest per token or fixed."""

    blocks: tuple
    outside: int  # per token, embeddings and head (not the loss)
    fixed: int  # per forward, independent of batch (rotary tables, position buffers)
    block_input: int  # per token: what a checkpointed block keeps (its input)
    head: int = 0  # per token, the part of `outside` that the head's backward frees


def _attention(sh: ModelShape, sv: Saved, seq: int, o_path: str, fp32_softmax: bool, out_copy: bool, fused_v: bool = False) -> int:  # fmt: skip
    """q, k, v, the output and whatever the kernel keeps (lse; or probabilities and dropout)."""
    c, a = sv.compute, sh.heads
    ad, gd = a * sh.head_dim, sh.kv_heads * sh.head_dim
    p = sh.dropout.get("attention", 0.0)
    o_in = ad * c if sv.grad_in(o_path) else 0
    if sv.attention == "sdpa" and (sv.device == "cuda" or p == 0):  # flash / memory-efficient
        fused = 2 * ad if fused_v else 0  # a value viewing a fused qkv output keeps all of it
        return (2 * ad + 2 * gd + fused) * c + 4 * a + (o_in if out_copy else 0)
    if sv.attention == "sdpa":  # CPU with dropout: SDPA's math kernel, which computes in fp32
        return 3 * ad * 4 + a * seq * 4 * (3 if p else 1) + o_in
    probs = a * seq * ((4 + (c if c != 4 else 0)) if fp32_softmax else c)
    if p:
        probs += a * seq * (sv.mask + c)
    return 3 * ad * c + probs + o_in


def _llama(sh: ModelShape, sv: Saved, seq: int) -> Inventory:
    c, h, i = sv.compute, sh.hidden, sh.intermediate
    n = 4 if c != 4 else c  # RMSNorm upcasts its input to fp32 and keeps that copy
    qkv_in = sv.grad_in("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    up_in = sv.grad_in("mlp.gate_proj", "mlp.up_proj")
    norms = 2 * 4 + (2 * h * c if sv.full else 0) + h * c * (qkv_in + up_in)  # rsqrt, normed, out
    mlp = 3 * i * c + (i * c if sv.grad_in("mlp.down_proj") else 0)
    attn = _attention(sh, sv, seq, "self_attn.o_proj", True, False)
    block = 2 * h * n + norms + attn + mlp + sv.adapters(sh)
    head = 4 + (h * c if sv.full else 0) + (h * c if sv.grad_in("lm_head") else 0)
    ids = 8 if sv.full else 0  # the embedding's backward keeps the token ids
    outside = head + (h * n if sv.input_grads else -4) + ids
    return Inventory(((sh.layers, block),), outside, 2 * seq * sh.rope_dim * c, h * c, head)


def _gpt2(sh: ModelShape, sv: Saved, seq: int, gelu_saves: int) -> Inventory:
    c, h, i, st = sv.compute, sh.hidden, sh.intermediate, sv.stat
    drop = h * sv.mask if sh.dropout.get("hidden") else 0
    norms = 4 * st + h * c * (sv.grad_in("attn.c_attn") + sv.grad_in("mlp.c_fc"))
    mlp = gelu_saves * i * c + (i * c if sv.grad_in("mlp.c_proj") else 0)
    attn = _attention(sh, sv, seq, "attn.c_proj", False, False)
    block = norms + attn + 2 * drop + 2 * h * c + mlp + sv.adapters(sh)
    embed_drop = h * sv.mask if sh.dropout.get("embedding") else 0
    embed = (h * c + embed_drop) if sv.input_grads else -2 * st
    head = 2 * st + (h * c if sv.grad_in("lm_head") else 0) + (8 if sv.full else 0)
    return Inventory(((sh.layers, block),), embed + head, 8 * seq if sv.full else 0, h * c, head)


def _neox(sh: ModelShape, sv: Saved, seq: int, parallel: bool) -> Inventory:
    c, h, i, st = sv.compute, sh.hidden, sh.intermediate, sv.stat
    drop = h * sv.mask if sh.dropout.get("hidden") else 0
    qkv_in, up_in = sv.grad_in("attention.query_key_value"), sv.grad_in("mlp.dense_h_to_4h")
    norms = 4 * st + h * c * (qkv_in + up_in)
    mlp = i * c + (i * c if sv.grad_in("mlp.dense_4h_to_h") else 0)
    attn = _attention(sh, sv, seq, "attention.dense", True, True, fused_v=True)
    block = norms + attn + mlp + 2 * drop + h * c * (1 if parallel else 2) + sv.adapters(sh)
    # without input grads the first block's norm (and, in parallel, its MLP branch) keeps nothing
    first = 2 * st + ((2 * st + i * c + drop) if parallel else 0)
    embed = (h * c + drop if sv.input_grads else -first) + (8 if sv.full else 0)
    head = 2 * st + (h * c if sv.grad_in("lm_head") else 0)
    return Inventory(((sh.layers, block),), embed + head, 2 * seq * sh.rope_dim * 4, h * c, head)


def _bert(sh: ModelShape, sv: Saved, seq: int) -> Inventory:
    c, h, i, st = sv.compute, sh.hidden, sh.intermediate, sv.stat
    drop = h * sv.mask if sh.dropout.get("hidden") else 0
    qkv = ("attention.self.query", "attention.self.key", "attention.self.value")
    attn = _attention(sh, sv, seq, "attention.output.dense", False, False)
    block = (h * c if sv.grad_in(*qkv) else 0) + attn + 2 * (drop + h * c + 2 * st) + i * c
    block += h * c * sv.grad_in("intermediate.dense") + i * c * sv.grad_in("output.dense")
    block += sv.adapters(sh)
    head = "cls.predictions" if sh.family == "bert" else "lm_head"
    outside = 2 * h * c + 2 * st + (h * c if sv.grad_in(f"{head}.decoder") else 0)
    outside += h * c if sv.grad_in(f"{head}.transform.dense", f"{head}.dense") else 0
    head_part = outside
    outside += (h * c + 2 * st + drop) if sv.input_grads else 0
    roberta = sh.family == "roberta"  # RoBERTa derives position ids per token; BERT slices a buffer
    outside += (16 if roberta else 8) if sv.full else 0
    positions = 0 if roberta else 8 * sh.options.get("max_positions", 512)
    fixed = (8 * seq + positions) if sv.full else 0
    return Inventory(((sh.layers, block),), outside, fixed, h * c, head_part)


def _t5_norm(sv: Saved, h: int, *paths: str) -> int:
    return 4 + (h * sv.compute if sv.full else 0) + (h * sv.compute if sv.grad_in(*paths) else 0)


def _t5_ff(sh: ModelShape, sv: Saved, prefix: str) -> int:
    c, i = sv.compute, sh.intermediate
    p = sh.dropout.get("hidden", 0.0)
    wo_in = sv.grad_in(f"{prefix}.wo")
    if sh.gated:  # gelu_new(wi_0 x) * wi_1 x
        return 4 * i * c + 2 * i * c + ((i * sv.mask + i * c * wo_in) if p else i * c * wo_in)
    return i * c + ((i * sv.mask + i * c * wo_in) if p else 0)


def _t5(sh: ModelShape, sv: Saved, seq: int) -> Inventory:
    c, h = sv.compute, sh.hidden
    n = c + (4 if c != 4 else 0)  # T5's norm keeps its input and, over 16 bits, an fp32 copy
    drop = h * sv.mask if sh.dropout.get("hidden") else 0
    blocks = []
    stacks = (
        ("encoder", ("SelfAttention",), 1),
        ("decoder", ("SelfAttention", "EncDecAttention"), 2),
    )
    for stack, attns, ff in stacks:
        block = 0
        for index, kind in enumerate(attns):
            base = f"{stack}.layer.{index}.{kind}"
            block += _t5_norm(sv, h, f"{base}.q", f"{base}.k", f"{base}.v")
            block += _attention(sh, sv, seq, f"{base}.o", False, False) + drop + h * n
        mlp = f"{stack}.layer.{ff}.DenseReluDense"
        block += _t5_norm(sv, h, f"{mlp}.wi", f"{mlp}.wi_0", f"{mlp}.wi_1")
        block += _t5_ff(sh, sv, mlp) + drop + h * n + sv.adapters(sh, stack)
        blocks.append((sh.layers if stack == "encoder" else sh.decoder_layers, block))
    ends = 2 * (4 + (h * c if sv.full else 0) + drop) + (h * c if sv.grad_in("lm_head") else 0)
    ends += h * c if any(sv.grad_in(f"decoder.layer.1.EncDecAttention.{p}") for p in "kv") else 0
    embed = 2 * (h * n + drop) + 8 if sv.input_grads else -8
    buckets = 2 * 8 * seq * seq if sv.full else 0  # relative-position bucket ids, per stack
    return Inventory(tuple(blocks), ends + embed + 8, buckets, h * c, ends)


def saved_inventory(shape: ModelShape, saved: Saved, seq: int) -> Inventory:
    """The tensors a forward pass keeps for backward, by family."""
    if shape.family in LLAMA_LIKE:
        return _llama(shape, saved, seq)
    if shape.family == "gpt2":
        return _gpt2(shape, saved, seq, shape.options.get("gelu_saves", 4))
    if shape.family == "gpt_neox":
        return _neox(shape, saved, seq, shape.options.get("parallel_residual", True))
    if shape.family in ("bert", "roberta"):
        return _bert(shape, saved, seq)
    return _t5(shape, saved, seq)
