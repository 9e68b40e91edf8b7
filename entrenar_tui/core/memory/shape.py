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

from ..errors import InvalidInputError, UnsupportedError
from ..models.arch import ArchInfo, count_or_none

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


def _size(cfg: dict, key: str, default: int) -> int:
    """A count from config.json, or transformers' default when it is missing or not a count."""
    value = count_or_none(cfg.get(key))
    return default if value is None else value


def _fraction(cfg: dict, key: str, default: float) -> float:
    """A probability or ratio in [0, 1] from config.json; anything else reads as the default."""
    value = cfg.get(key, default)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        return default
    return float(value)


def _linear(path: str, n_in: int, n_out: int, count: int, bias: bool = False) -> ModuleGroup:
    return ModuleGroup(path, "linear", n_in, n_out, count, bias)


def _norm(path: str, width: int, count: int, bias: bool, in_blocks: bool = True) -> ModuleGroup:
    return ModuleGroup(path, "norm", 0, width, count, bias, in_blocks)


def _outside(path: str, kind: str, n_in: int, n_out: int, bias: bool = False) -> ModuleGroup:
    return ModuleGroup(path, kind, n_in, n_out, 1, bias, in_blocks=False)


def _llama_groups(sizes: dict, cfg: dict, family: str) -> list[ModuleGroup]:
    hidden, layers = sizes["hidden"], sizes["layers"]
    intermediate, vocab = sizes["intermediate"], sizes["vocab"]
    q_out, kv_out = sizes["heads"] * sizes["head_dim"], sizes["kv_heads"] * sizes["head_dim"]
    qkv_bias = family == "qwen2" or bool(cfg.get("attention_bias", False))
    o_bias = family != "qwen2" and bool(cfg.get("attention_bias", False))
    mlp_bias = bool(cfg.get("mlp_bias", False))
    groups = [
        _outside("model.embed_tokens", "embedding", vocab, hidden),
        _linear("self_attn.q_proj", hidden, q_out, layers, qkv_bias),
        _linear("self_attn.k_proj", hidden, kv_out, layers, qkv_bias),
        _linear("self_attn.v_proj", hidden, kv_out, layers, qkv_bias),
        _linear("self_attn.o_proj", q_out, hidden, layers, o_bias),
        _linear("mlp.gate_proj", hidden, intermediate, layers, mlp_bias),
        _linear("mlp.up_proj", hidden, intermediate, layers, mlp_bias),
        _linear("mlp.down_proj", intermediate, hidden, layers, mlp_bias),
        _norm("input_layernorm", hidden, layers, False),
        _norm("post_attention_layernorm", hidden, layers, False),
        _norm("model.norm", hidden, 1, False, in_blocks=False),
    ]
    return groups + ([] if sizes["tied"] else [_outside("lm_head", "linear", hidden, vocab)])


def _gpt2_groups(sizes: dict, cfg: dict) -> list[ModuleGroup]:
    hidden, layers = sizes["hidden"], sizes["layers"]
    intermediate, vocab = sizes["intermediate"], sizes["vocab"]
    groups = [
        _outside("transformer.wte", "embedding", vocab, hidden),
        _outside("transformer.wpe", "embedding", _size(cfg, "n_positions", 1024), hidden),
        _norm("ln_1", hidden, layers, True),
        _linear("attn.c_attn", hidden, 3 * hidden, layers, True),
        _linear("attn.c_proj", hidden, hidden, layers, True),
        _norm("ln_2", hidden, layers, True),
        _linear("mlp.c_fc", hidden, intermediate, layers, True),
        _linear("mlp.c_proj", intermediate, hidden, layers, True),
        _norm("transformer.ln_f", hidden, 1, True, in_blocks=False),
    ]
    return groups + ([] if sizes["tied"] else [_outside("lm_head", "linear", hidden, vocab)])


def _neox_groups(sizes: dict, cfg: dict) -> list[ModuleGroup]:
    hidden, layers = sizes["hidden"], sizes["layers"]
    intermediate, vocab = sizes["intermediate"], sizes["vocab"]
    attn_bias = bool(cfg.get("attention_bias", True))
    groups = [
        _outside("gpt_neox.embed_in", "embedding", vocab, hidden),
        _norm("input_layernorm", hidden, layers, True),
        _norm("post_attention_layernorm", hidden, layers, True),
        _linear("attention.query_key_value", hidden, 3 * hidden, layers, attn_bias),
        _linear("attention.dense", hidden, hidden, layers, attn_bias),
        _linear("mlp.dense_h_to_4h", hidden, intermediate, layers, True),
        _linear("mlp.dense_4h_to_h", intermediate, hidden, layers, True),
        _norm("gpt_neox.final_layer_norm", hidden, 1, True, in_blocks=False),
    ]
    return groups + ([] if sizes["tied"] else [_outside("lm_head", "linear", hidden, vocab)])


def _bert_groups(sizes: dict, cfg: dict, family: str) -> list[ModuleGroup]:
    hidden, layers = sizes["hidden"], sizes["layers"]
    intermediate, vocab = sizes["intermediate"], sizes["vocab"]
    head = "cls.predictions" if family == "bert" else "lm_head"
    groups = [
        _outside("embeddings.word_embeddings", "embedding", vocab, hidden),
        _outside(
            "embeddings.position_embeddings",
            "embedding",
            _size(cfg, "max_position_embeddings", 512),
            hidden,
        ),
        _outside(
            "embeddings.token_type_embeddings",
            "embedding",
            _size(cfg, "type_vocab_size", 2),
            hidden,
        ),
        _norm("embeddings.LayerNorm", hidden, 1, True, in_blocks=False),
        _linear("attention.self.query", hidden, hidden, layers, True),
        _linear("attention.self.key", hidden, hidden, layers, True),
        _linear("attention.self.value", hidden, hidden, layers, True),
        _linear("attention.output.dense", hidden, hidden, layers, True),
        _norm("attention.output.LayerNorm", hidden, layers, True),
        _linear("intermediate.dense", hidden, intermediate, layers, True),
        _linear("output.dense", intermediate, hidden, layers, True),
        _norm("output.LayerNorm", hidden, layers, True),
        _outside(
            f"{head}{'.transform' if family == 'bert' else ''}.dense",
            "linear",
            hidden,
            hidden,
            True,
        ),
        _norm(
            f"{head}{'.transform.LayerNorm' if family == 'bert' else '.layer_norm'}",
            hidden,
            1,
            True,
            False,
        ),
        _outside(f"{head}.bias", "table", 1, vocab),
    ]
    # untied, the decoder keeps its own bias next to the head's (tied, they are one parameter)
    return groups + (
        [] if sizes["tied"] else [_outside(f"{head}.decoder", "linear", hidden, vocab, bias=True)]
    )


def _t5_stack(
    prefix: str, sizes: dict, layers: int, cross: bool, buckets: int
) -> list[ModuleGroup]:
    hidden, intermediate = sizes["hidden"], sizes["intermediate"]
    inner = sizes["heads"] * sizes["head_dim"]
    ff_index = 2 if cross else 1
    attn_kinds = ["SelfAttention"] + (["EncDecAttention"] if cross else [])
    groups = [
        _outside(
            f"{prefix}.block.0.layer.0.SelfAttention.relative_attention_bias",
            "embedding",
            buckets,
            sizes["heads"],
        )
    ]
    for index, kind in enumerate(attn_kinds):
        base = f"{prefix}.layer.{index}.{kind}"
        groups += [_linear(f"{base}.{p}", hidden, inner, layers) for p in ("q", "k", "v")]
        groups += [
            _linear(f"{base}.o", inner, hidden, layers),
            _norm(f"{prefix}.layer.{index}.layer_norm", hidden, layers, False),
        ]
    ff = f"{prefix}.layer.{ff_index}.DenseReluDense"
    ins = ("wi_0", "wi_1") if sizes["gated"] else ("wi",)
    groups += [_linear(f"{ff}.{p}", hidden, intermediate, layers) for p in ins]
    groups += [
        _linear(f"{ff}.wo", intermediate, hidden, layers),
        _norm(f"{prefix}.layer.{ff_index}.layer_norm", hidden, layers, False),
    ]
    return groups + [_norm(f"{prefix}.final_layer_norm", hidden, 1, False, in_blocks=False)]


def _t5_groups(s: dict, cfg: dict) -> list[ModuleGroup]:
    buckets = _size(cfg, "relative_attention_num_buckets", 32)
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
    return {name: _fraction(cfg, key, default) for name, (key, default) in keys.items()}


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
    sizes = _required(arch)
    sizes["kv_heads"] = arch.kv_heads or sizes["heads"]
    sizes["head_dim"] = arch.head_dim or sizes["hidden"] // sizes["heads"]
    sizes["intermediate"] = arch.intermediate_size or 4 * sizes["hidden"]
    # transformers 5 ties T5's head to its embeddings whatever config.json says (v1.1 included)
    sizes["tied"] = bool(arch.tied_embeddings) or family == "t5"
    sizes["gated"] = bool(arch.gated_mlp) if family == "t5" else family in LLAMA_LIKE
    sizes["decoder_layers"] = (arch.decoder_layers or sizes["layers"]) if family == "t5" else 0
    if family in LLAMA_LIKE:
        groups = _llama_groups(sizes, cfg, family)
    elif family == "gpt2":
        groups = _gpt2_groups(sizes, cfg)
    elif family == "gpt_neox":
        groups = _neox_groups(sizes, cfg)
    elif family in ("bert", "roberta"):
        groups = _bert_groups(sizes, cfg, family)
    else:
        groups = _t5_groups(sizes, cfg)
    rope = 0
    if family in LLAMA_LIKE:
        rope = sizes["head_dim"]
    elif family == "gpt_neox":
        rope_parameters = cfg.get("rope_parameters")
        factor = _fraction(cfg, "rotary_pct", 0.25)
        if isinstance(rope_parameters, dict):
            factor = _fraction(rope_parameters, "partial_rotary_factor", factor)
        rope = int(sizes["head_dim"] * factor)
    options = {
        "parallel_residual": bool(cfg.get("use_parallel_residual", True)),
        "gelu_saves": 4 if str(cfg.get("activation_function", "gelu_new")) == "gelu_new" else 1,
        "max_positions": _size(cfg, "max_position_embeddings", 512),
        "loss_bytes": 4 if family not in ("bert", "roberta", "t5") else 0,  # 0: the compute dtype
        "read_as": cfg.get("read_as"),  # the model_type a LLaMA reading stands in for
    }
    dropout = _dropouts(family, cfg)
    return ModelShape(
        family=family,
        groups=tuple(groups),
        dropout=dropout,
        rope_dim=rope,
        options=options,
        **sizes,
    )


def count_parameters(arch: ArchInfo, config: dict | None = None) -> int:
    """Parameters the transformers model of this config holds (tied weights counted once)."""
    return model_shape(arch, config).parameters
