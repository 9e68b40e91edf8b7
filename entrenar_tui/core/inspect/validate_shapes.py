"""Tensor shapes against the architecture a config.json (or GGUF metadata) declares.

transformers refuses a checkpoint whose shapes disagree with its config ("size mismatch"),
but only after loading it all; here the same facts are checked from headers in
milliseconds. Rules are matched by tensor-name suffix and cover the LLaMA family (llama,
mistral, qwen2), GPT-2, GPT-NeoX, BERT/RoBERTa, T5 and GGUF's llama.cpp names. A name no
rule knows is not judged.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ..models.arch import ArchInfo
from ..models.tensors import TensorInfo

_LAYER = re.compile(r"^(?P<stack>(?:.*?\.)?(?:layers|h|layer|block|blk))\.(?P<index>\d+)\.")
_NORMS = (
    r"(input_layernorm|post_attention_layernorm|(^|\.)norm|ln_1|ln_2|ln_f|LayerNorm|layer_norm"
    r"|final_layer_norm|attn_norm|ffn_norm|output_norm)"
)


@dataclass
class ShapeIssue:
    code: str  # "shape_vs_config" | "layer_count" | "config_inconsistent"
    tensor: str | None
    message: str


def _times(*factors: int | None) -> int | None:
    product = 1
    for factor in factors:
        if factor is None:
            return None
        product *= factor
    return product


def _rules(arch: ArchInfo) -> list[tuple[re.Pattern, tuple[int | None, ...], str]]:
    """(name pattern, expected row-major shape, what the dimensions are) in match order."""
    hidden, vocab, inner = arch.hidden_size, arch.vocab_size, arch.intermediate_size
    q_rows, kv_rows = _times(arch.heads, arch.head_dim), _times(arch.kv_heads, arch.head_dim)
    qkv_rows = _times(3, q_rows)
    table = [
        (
            r"(^|\.)(embed_tokens|wte|embed_in|word_embeddings|shared|token_embd)\.weight$",
            (vocab, hidden),
            "vocab_size x hidden_size",
        ),
        (
            r"((^|\.)lm_head|(^|\.)embed_out|^output)\.weight$",
            (vocab, hidden),
            "vocab_size x hidden_size",
        ),
        (
            r"(^|\.)(wpe|position_embeddings)\.weight$",
            (arch.max_positions, hidden),
            "max_position_embeddings x hidden_size",
        ),
        (
            r"(q_proj|attention\.self\.query|Attention\.q|attn_q)\.weight$",
            (q_rows, hidden),
            "num_attention_heads x head_dim by hidden_size",
        ),
        (
            r"(k_proj|v_proj|attn_k|attn_v)\.weight$",
            (kv_rows, hidden),
            "num_key_value_heads x head_dim by hidden_size",
        ),
        (
            r"(attention\.self\.(key|value)|Attention\.[kv])\.weight$",
            (q_rows, hidden),
            "num_attention_heads x head_dim by hidden_size",
        ),
        (
            r"(o_proj|attn_output|attention\.output\.dense|attention\.dense|Attention\.o)\.weight$",
            (hidden, q_rows),
            "hidden_size by num_attention_heads x head_dim",
        ),
        (r"q_proj\.bias$", (q_rows,), "num_attention_heads x head_dim"),
        (r"(k_proj|v_proj)\.bias$", (kv_rows,), "num_key_value_heads x head_dim"),
        (
            r"attention\.query_key_value\.weight$",
            (qkv_rows, hidden),
            "3 x hidden_size by hidden_size",
        ),
        (r"attn\.c_attn\.weight$", (hidden, qkv_rows), "hidden_size by 3 x hidden_size (Conv1D)"),
        (r"attn\.c_proj\.weight$", (q_rows, hidden), "hidden_size by hidden_size (Conv1D)"),
        (
            r"(gate_proj|up_proj|ffn_gate|ffn_up|intermediate\.dense|dense_h_to_4h|DenseReluDense\.wi(_0|_1)?)\.weight$",
            (inner, hidden),
            "intermediate_size by hidden_size",
        ),
        (
            r"(down_proj|ffn_down|dense_4h_to_h|DenseReluDense\.wo|layer\.\d+\.output\.dense)\.weight$",
            (hidden, inner),
            "hidden_size by intermediate_size",
        ),
        (r"mlp\.c_fc\.weight$", (hidden, inner), "hidden_size by intermediate_size (Conv1D)"),
        (r"mlp\.c_proj\.weight$", (inner, hidden), "intermediate_size by hidden_size (Conv1D)"),
        (r"(c_attn|query_key_value)\.bias$", (qkv_rows,), "3 x hidden_size"),
        (r"attention\.self\.(query|key|value)\.bias$", (q_rows,), "num_attention_heads x head_dim"),
        (r"(c_fc|dense_h_to_4h|intermediate\.dense)\.bias$", (inner,), "intermediate_size"),
        (r"(c_proj|dense_4h_to_h|attention\.dense|output\.dense)\.bias$", (hidden,), "hidden_size"),
        (r"(cls\.predictions|(^|\.)lm_head)\.bias$", (vocab,), "vocab_size"),
        (_NORMS + r"\.(weight|bias)$", (hidden,), "hidden_size"),
    ]
    return [(re.compile(pattern), shape, what) for pattern, shape, what in table]


def check_config(arch: ArchInfo, config: dict | None) -> list[ShapeIssue]:
    """Facts that contradict each other inside the config itself."""
    issues = []
    if arch.heads and arch.kv_heads and arch.heads % arch.kv_heads:
        issues.append(
            ShapeIssue(
                "config_inconsistent",
                None,
                f"num_attention_heads {arch.heads} is not a multiple of num_key_value_heads {arch.kv_heads}",
            )
        )
    explicit_head_dim = config and (config.get("head_dim") or config.get("d_kv"))
    if not explicit_head_dim and arch.heads and arch.hidden_size and arch.hidden_size % arch.heads:
        issues.append(
            ShapeIssue(
                "config_inconsistent",
                None,
                f"hidden_size {arch.hidden_size} is not a multiple of num_attention_heads {arch.heads}",
            )
        )
    return issues


def check_shapes(tensors: Iterable[TensorInfo], arch: ArchInfo) -> list[ShapeIssue]:
    """Each tensor a rule knows must have exactly the shape the architecture implies."""
    rules = _rules(arch)
    issues = []
    for tensor in tensors:
        for pattern, expected, what in rules:
            if not pattern.search(tensor.name):
                continue
            if None not in expected and tuple(tensor.shape) != expected:
                issues.append(
                    ShapeIssue(
                        "shape_vs_config",
                        tensor.name,
                        f"shape {list(tensor.shape)} but the config implies {list(expected)} ({what})",
                    )
                )
            break
    return issues


def _stacks(tensors: Iterable[TensorInfo]) -> dict[str, set[int]]:
    stacks: dict[str, set[int]] = defaultdict(set)
    for t in tensors:
        match = _LAYER.match(t.name)
        if match:
            stacks[match["stack"]].add(int(match["index"]))
    return stacks


def _describe(indices: Iterable[int]) -> str:
    items = sorted(indices)
    shown = ", ".join(map(str, items[:8]))
    return shown + (f" and {len(items) - 8} more" if len(items) > 8 else "")


def check_layers(tensors: list[TensorInfo], arch: ArchInfo) -> list[ShapeIssue]:
    """The layer indices present must be exactly 0..layers-1 (per stack for T5)."""
    stacks = _stacks(tensors)
    if not stacks or not arch.layers:
        return []
    if arch.model_type == "t5":
        wanted = {
            s: (arch.decoder_layers or arch.layers) if "decoder" in s else arch.layers
            for s in stacks
        }
    else:  # the main stack; a vision tower or MTP head in the same file is not judged here
        main = max(stacks, key=lambda s: len(stacks[s]))
        wanted = {main: arch.layers}
    issues = []
    for stack, count in wanted.items():
        present = stacks[stack]
        # a corrupt config may claim 2^40 layers: list the first missing indices, not all
        listed = min(count, len(present) + 64)
        missing, extra = set(range(listed)) - present, {i for i in present if i >= count}
        if missing or extra:
            found = f"missing {_describe(missing)}" if missing else ""
            found += ("; " if missing and extra else "") + (
                f"extra {_describe(extra)}" if extra else ""
            )
            issues.append(
                ShapeIssue(
                    "layer_count", None, f"config says {count} layers but {stack}.N has {found}"
                )
            )
    return issues
