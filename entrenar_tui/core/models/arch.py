"""Architecture facts (layers, widths, heads, vocab) from config.json, or from tensors alone.

Every consumer (inspect, the memory estimator, LoRA planning, distillation checks) reads
an `ArchInfo`, so where the facts came from is decided once, here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

# A width, count or vocabulary beyond this is a corrupt header, not a model: 2^40 is a
# thousand times any real value, and keeps arithmetic on it (sets, products) bounded.
MAX_COUNT = 1 << 40

# model_type -> family shown to users
FAMILIES = {
    "llama": "LLaMA",
    "mistral": "Mistral",
    "qwen2": "Qwen2",
    "gpt2": "GPT-2",
    "gpt_neox": "GPT-NeoX",
    "bert": "BERT",
    "roberta": "RoBERTa",
    "t5": "T5",
}

# Config keys differ by family; the first key present wins.
_KEYS = {
    "layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "heads": ("num_attention_heads", "n_head", "num_heads"),
    "kv_heads": ("num_key_value_heads",),
    "intermediate_size": ("intermediate_size", "n_inner", "d_ff"),
    "vocab_size": ("vocab_size",),
    "max_positions": ("max_position_embeddings", "n_positions", "n_ctx"),
}


@dataclass
class ArchInfo:
    model_type: str  # e.g. "llama"; "unknown" when nothing matched
    family: str  # e.g. "LLaMA"
    layers: int | None = None
    hidden_size: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    intermediate_size: int | None = None
    vocab_size: int | None = None
    max_positions: int | None = None
    tied_embeddings: bool | None = None
    gated_mlp: bool | None = None  # SwiGLU-style gate/up/down
    decoder_layers: int | None = None  # encoder-decoder models (T5)
    source: str = "config"  # "config", "tensors" or "gguf"
    inferred: list[str] = field(default_factory=list)  # fields guessed by a heuristic, not read

    def __post_init__(self) -> None:
        """config.json and GGUF metadata are untrusted: a string, list or 2^64 in a count
        field becomes unknown (None) here, before any consumer does arithmetic with it."""
        for spec in fields(self):
            if spec.type == "int | None":
                setattr(self, spec.name, count_or_none(getattr(self, spec.name)))
        if not isinstance(self.inferred, list):
            self.inferred = []

    def to_dict(self) -> dict:
        return asdict(self)


def count_or_none(value: object) -> int | None:
    """A plain non-negative integer up to MAX_COUNT, else None (bools, floats, strings...)."""
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    return None


def _first(config: dict, names: tuple[str, ...]) -> int | None:
    for key in names:
        if config.get(key) is not None:
            return count_or_none(config[key])
    return None


def _tied_default(model_type: str) -> bool:
    # transformers' per-model defaults when config.json omits tie_word_embeddings
    return model_type not in {"llama", "mistral", "qwen2", "gpt_neox"}


def from_config(config: dict) -> ArchInfo:
    """ArchInfo from a transformers config.json dict."""
    if not isinstance(config, dict):
        config = {}
    model_type = str(config.get("model_type", "unknown"))
    values = {field: _first(config, keys) for field, keys in _KEYS.items()}
    heads, hidden = values["heads"], values["hidden_size"]
    if values["kv_heads"] is None:
        values["kv_heads"] = heads
    if (
        values["intermediate_size"] is None
        and hidden is not None
        and model_type in {"gpt2", "gpt_neox"}
    ):
        values["intermediate_size"] = 4 * hidden
    head_dim = count_or_none(config.get("head_dim")) or count_or_none(config.get("d_kv"))
    if head_dim is None and heads and hidden:
        head_dim = hidden // heads
    tied = config.get("tie_word_embeddings")
    if tied is None:
        tied = _tied_default(model_type)
    gated = model_type in {"llama", "mistral", "qwen2"} or str(
        config.get("feed_forward_proj", "")
    ).startswith("gated")
    return ArchInfo(
        model_type=model_type,
        family=FAMILIES.get(model_type, model_type),
        head_dim=head_dim,
        tied_embeddings=bool(tied),
        gated_mlp=gated,
        decoder_layers=config.get("num_decoder_layers") if model_type == "t5" else None,
        source="config",
        **values,
    )
