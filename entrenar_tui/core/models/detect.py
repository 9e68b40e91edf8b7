"""Architecture facts from tensor names and shapes alone, for weights that came without config.json.

Shapes fix most facts exactly: layers (distinct block indices), hidden size and vocabulary (the
token embedding), MLP width, the query/key width ratio (GQA), whether a separate output head exists
(tied embeddings) and whether the MLP is gated. Some facts are not in the shapes at all:

- the absolute head count when q/k/v are plain matrices (T5 is the exception: its relative
  attention bias has one column per head). It is guessed as `_guess_head_dim` explains;
- LLaMA vs Mistral: their checkpoints are name-for-name identical, so "llama" is reported;
- BERT vs RoBERTa when the names carry neither a `bert.`/`roberta.` prefix nor a task head.

Every guessed field is named in `ArchInfo.inferred`; nothing guessed is presented as read.
Unknown layouts give `model_type="unknown"` with what could be found; this never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import gcd

from .arch import FAMILIES, ArchInfo
from .tensors import TensorInfo

# "<stack>.<index>.<rest>": model.layers.3.mlp, transformer.h.0.attn, encoder.block.1.layer.0...
# The prefix is non-greedy so T5's inner "layer.0" stays part of <rest>.
_BLOCK = re.compile(
    r"^(?P<stack>(?:.*?\.)?(?:layers|layer|blocks|block|h))\.(?P<index>\d+)\.(?P<rest>.+)$"
)

_GUESSED_ATTENTION = ["heads", "kv_heads", "head_dim"]
_AMBIGUOUS_FAMILY = ["model_type", "family"]


@dataclass(frozen=True)
class Layout:
    """How one family names its tensors. In-block names match as dotted endings of <rest>."""

    model_type: str
    signature: tuple[str, ...]  # in-block endings that together identify the family
    query: str  # in-block weight with heads*head_dim outputs (q, k and v stacked when key is None)
    key: str | None
    mlp_in: tuple[str, ...]  # in-block weights whose outputs are the MLP width (first present wins)
    embedding: tuple[str, ...]  # name endings of the token embedding
    output_head: tuple[str, ...]  # name endings of a separate (untied) output projection
    positions: tuple[str, ...] = ()  # learned position table, when the family has one
    gate: tuple[str, ...] = ()  # present only when the MLP is gated (SwiGLU / GEGLU)
    conv1d: bool = False  # GPT-2 stores its Linear weights transposed: outputs are columns


# Checked in order; signatures are disjoint for the eight families.
LAYOUTS = (
    Layout(
        "t5",
        ("SelfAttention.q.weight", "SelfAttention.o.weight"),
        "SelfAttention.q.weight",
        "SelfAttention.k.weight",
        ("DenseReluDense.wi.weight", "DenseReluDense.wi_0.weight"),
        ("shared.weight", "encoder.embed_tokens.weight"),
        ("lm_head.weight",),
        gate=("DenseReluDense.wi_0.weight",),
    ),
    Layout(
        "gpt_neox",
        ("attention.query_key_value.weight", "mlp.dense_h_to_4h.weight"),
        "attention.query_key_value.weight",
        None,
        ("mlp.dense_h_to_4h.weight",),
        ("embed_in.weight",),
        ("embed_out.weight",),
    ),
    Layout(
        "gpt2",
        ("attn.c_attn.weight", "mlp.c_fc.weight"),
        "attn.c_attn.weight",
        None,
        ("mlp.c_fc.weight",),
        ("wte.weight",),
        ("lm_head.weight",),
        positions=("wpe.weight",),
        conv1d=True,
    ),
    Layout(
        "bert",
        ("attention.self.query.weight", "intermediate.dense.weight"),
        "attention.self.query.weight",
        "attention.self.key.weight",
        ("intermediate.dense.weight",),
        ("word_embeddings.weight",),
        ("predictions.decoder.weight", "lm_head.decoder.weight"),
        positions=("embeddings.position_embeddings.weight",),
    ),
    Layout(
        "llama",
        ("self_attn.q_proj.weight", "mlp.down_proj.weight"),
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
        ("embed_tokens.weight", "tok_embeddings.weight"),
        ("lm_head.weight",),
        gate=("mlp.gate_proj.weight",),
    ),
)


def _ends(name: str, ending: str) -> bool:
    return name == ending or name.endswith("." + ending)


def _dim(t: TensorInfo | None, axis: int) -> int | None:
    return t.shape[axis] if t is not None and len(t.shape) > axis else None


class _Index:
    """Tensors by name; repeated blocks grouped by stack ("model.layers", "encoder.block")."""

    def __init__(self, tensors: list[TensorInfo]) -> None:
        self.tensors = list(tensors)
        self.stacks: dict[str, dict[int, dict[str, TensorInfo]]] = {}
        for t in self.tensors:
            match = _BLOCK.match(t.name)
            if match:
                blocks = self.stacks.setdefault(match["stack"], {})
                blocks.setdefault(int(match["index"]), {})[match["rest"]] = t

    def find(self, endings: tuple[str, ...]) -> TensorInfo | None:
        """First tensor (in or out of blocks) whose name ends with one of `endings`, in order."""
        for ending in endings:
            for t in self.tensors:
                if _ends(t.name, ending):
                    return t
        return None

    def has(self, component: str) -> bool:
        """Whether any name has `component` as a whole dotted part ("bert" in "bert.encoder...")."""
        return any(component in t.name.split(".") for t in self.tensors)

    def in_block(self, stack: str, endings: tuple[str, ...]) -> TensorInfo | None:
        """The tensor of the first block (lowest index) in `stack` that has one of `endings`."""
        for index in sorted(self.stacks.get(stack, {})):
            rests = self.stacks[stack][index]
            for ending in endings:
                for rest, t in rests.items():
                    if _ends(rest, ending):
                        return t
        return None

    def stacks_with(self, signature: tuple[str, ...]) -> list[str]:
        found = []
        for stack, blocks in self.stacks.items():
            rests = [rest for block in blocks.values() for rest in block]
            if all(any(_ends(rest, s) for rest in rests) for s in signature):
                found.append(stack)
        return found

    def layers(self, stack: str | None) -> int | None:
        return len(self.stacks[stack]) if stack in self.stacks else None


def _guess_head_dim(query_width: int, key_width: int, hidden: int | None) -> int:
    """The head width most models of this size use: 128 for hidden >= 3072, else 64.

    Right for GPT-2, BERT-base/large, LLaMA 7B+/Mistral/LLaMA-3, SmolLM2, TinyLlama, Qwen2-0.5B;
    wrong for e.g. MiniLM (32) or Qwen2-1.5B (128 at hidden 1536). It must divide both widths,
    so smaller powers of two are tried next; the q/k ratio (GQA) stays exact either way.
    """
    common = gcd(query_width, key_width)
    preferred = (128, 64) if (hidden or 0) >= 3072 else (64, 128)
    for head_dim in (*preferred, 32, 16, 8):
        if common % head_dim == 0:
            return head_dim
    return common


def _attention(
    index: _Index, layout: Layout, stack: str, hidden: int | None, inferred: list[str]
) -> dict:
    """heads, kv_heads and head_dim: the q/k width ratio is exact, the head width mostly guessed."""
    query = index.in_block(stack, (layout.query,))
    query_out = _dim(query, 1 if layout.conv1d else 0)
    if not query_out:
        return {}
    if layout.key is None:  # fused q, k, v of equal width (multi-head attention)
        query_width = key_width = query_out // 3
    else:
        query_width, key_width = query_out, _dim(index.in_block(stack, (layout.key,)), 0)
    if not key_width:
        return {}
    heads = _dim(index.in_block(stack, ("relative_attention_bias.weight",)), 1)  # T5: exact
    if heads and query_width % heads == 0 and key_width % (query_width // heads) == 0:
        head_dim = query_width // heads
    else:
        head_dim = _guess_head_dim(query_width, key_width, hidden)
        inferred.extend(_GUESSED_ATTENTION)
    return {
        "heads": query_width // head_dim,
        "kv_heads": key_width // head_dim,
        "head_dim": head_dim,
    }


def _encoder_family(index: _Index, inferred: list[str]) -> str:
    """BERT or RoBERTa. Names decide when they can; otherwise the position table's shape.

    RoBERTa offsets positions by padding_idx + 1, so its table has max_len + 2 rows (514, 130),
    and it usually has a single token type; BERT tables are round (512).
    """
    if index.has("roberta") or index.find(("lm_head.dense.weight",)):
        return "roberta"
    if index.has("bert") or index.find(("cls.predictions.bias",)):
        return "bert"
    inferred.extend(_AMBIGUOUS_FAMILY)
    positions = _dim(index.find(("embeddings.position_embeddings.weight",)), 0)
    token_types = _dim(index.find(("embeddings.token_type_embeddings.weight",)), 0)
    if (positions is not None and positions % 64 == 2) or token_types == 1:
        return "roberta"
    return "bert"


def _model_type(index: _Index, layout: Layout, inferred: list[str]) -> str:
    if layout.model_type == "bert":
        return _encoder_family(index, inferred)
    if layout.model_type == "llama":
        # Qwen2 biases q, k and v but not o; LLaMA-style checkpoints bias none (or all four).
        has_qkv_bias = index.find(("self_attn.q_proj.bias",)) is not None
        if has_qkv_bias and index.find(("self_attn.o_proj.bias",)) is None:
            return "qwen2"
        inferred.extend(_AMBIGUOUS_FAMILY)  # Mistral checkpoints look exactly the same
    return layout.model_type


def _main_stack(stacks: list[str], index: _Index) -> str:
    encoders = [s for s in stacks if "encoder" in s]
    return (encoders or sorted(stacks, key=lambda s: -len(index.stacks[s])))[0]


def _describe(index: _Index, layout: Layout, stacks: list[str]) -> ArchInfo:
    inferred: list[str] = []
    main = _main_stack(stacks, index)
    embedding = index.find(layout.embedding)
    query = index.in_block(main, (layout.query,))
    hidden = _dim(embedding, 1) or _dim(query, 0 if layout.conv1d else 1)
    mlp_in = index.in_block(main, layout.mlp_in)
    model_type = _model_type(index, layout, inferred)
    decoders = [s for s in stacks if "decoder" in s and s != main]
    return ArchInfo(
        model_type=model_type,
        family=FAMILIES.get(model_type, model_type),
        layers=index.layers(main),
        hidden_size=hidden,
        intermediate_size=_dim(mlp_in, 1 if layout.conv1d else 0),
        vocab_size=_dim(embedding, 0),
        max_positions=_dim(index.find(layout.positions), 0) if layout.positions else None,
        tied_embeddings=index.find(layout.output_head) is None,
        gated_mlp=bool(layout.gate) and index.in_block(main, layout.gate) is not None,
        decoder_layers=index.layers(decoders[0]) if decoders else None,
        source="tensors",
        inferred=inferred,
        **_attention(index, layout, main, hidden, inferred),
    )


def _unknown(index: _Index) -> ArchInfo:
    """Best effort: the longest block stack, and the largest 2-D tensor named like an embedding."""
    stack = max(index.stacks, key=lambda s: len(index.stacks[s]), default=None)
    embeddings = [
        t
        for t in index.tensors
        if len(t.shape) == 2 and any(k in t.name.lower() for k in ("embed", "wte", "shared", "tok"))
    ]
    embedding = max(embeddings, key=lambda t: t.shape[0], default=None)
    facts = {
        "layers": index.layers(stack),
        "vocab_size": _dim(embedding, 0),
        "hidden_size": _dim(embedding, 1),
    }
    return ArchInfo(
        model_type="unknown",
        family="unknown",
        source="tensors",
        inferred=[name for name, value in facts.items() if value is not None],
        **facts,
    )


def detect_from_tensors(tensors: list[TensorInfo]) -> ArchInfo:
    """ArchInfo from names and shapes only (source="tensors"); guesses are named in `inferred`."""
    index = _Index(tensors)
    for layout in LAYOUTS:
        stacks = index.stacks_with(layout.signature)
        if stacks:
            return _describe(index, layout, stacks)
    return _unknown(index)
