"""Activation inventories: the tensors autograd keeps for backward, per token, per family.

Built on shape.py (module shapes); the estimator reads `saved_inventory`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .shape import LLAMA_LIKE, ModelShape

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
    lora_dropout: bool = False  # PEFT's dropout before A (lora_dropout > 0)

    def grad_in(self, *paths: str) -> bool:
        """A linear keeps its input when its weight trains, or when its LoRA adapter reads that
        same tensor (over 16-bit activations, or after LoRA dropout, the adapter reads its own
        copy instead)."""
        shared = self.compute == 4 and not self.lora_dropout
        return self.full or (shared and any(p in self.lora for p in paths))

    @property
    def mask(self) -> int:  # dropout mask: bool on CUDA (native_dropout), a float tensor on CPU
        return 1 if self.device == "cuda" else self.compute

    @property
    def stat(self) -> int:  # LayerNorm mean / rstd: fp32 on CUDA, the input dtype on CPU
        return 4 if self.device == "cuda" else self.compute

    def adapters(self, shape: ModelShape, prefix: str = "") -> int:
        """LoRA keeps A's output (fp32) and what A reads: over 16-bit activations an fp32 copy
        of the input; with LoRA dropout the dropped copy (fp32) and its mask (bool on CUDA, the
        fp32 input's dtype on CPU). Measured on CPU against a real step (test_plan_runs)."""
        if self.lora_dropout:
            own_input = 4 + (1 if self.device == "cuda" else 4)
        else:
            own_input = 4 if self.compute != 4 else 0
        total = 0
        for g in shape.groups:
            if g.path in self.lora and g.path.startswith(prefix):
                total += 4 * self.rank + own_input * g.in_features
        return total


@dataclass(frozen=True)
class Inventory:
    """Bytes autograd keeps: `blocks` as (count, bytes per token), the rest per token or fixed."""

    blocks: tuple
    outside: int  # per token, embeddings and head (not the loss)
    fixed: int  # per forward, independent of batch (rotary tables, position buffers)
    block_input: int  # per token: what a checkpointed block keeps (its input)
    head: int = 0  # per token, the part of `outside` that the head's backward frees


def _attention(
    shape: ModelShape,
    saved: Saved,
    seq: int,
    o_path: str,
    fp32_softmax: bool,
    out_copy: bool,
    fused_v: bool = False,
) -> int:
    """q, k, v, the output and whatever the kernel keeps (lse; or probabilities and dropout)."""
    compute, heads = saved.compute, shape.heads
    ad, gd = heads * shape.head_dim, shape.kv_heads * shape.head_dim
    attention_dropout = shape.dropout.get("attention", 0.0)
    o_in = ad * compute if saved.grad_in(o_path) else 0
    # flash / memory-efficient
    if saved.attention == "sdpa" and (saved.device == "cuda" or attention_dropout == 0):
        fused = 2 * ad if fused_v else 0  # a value viewing a fused qkv output keeps all of it
        return (2 * ad + 2 * gd + fused) * compute + 4 * heads + (o_in if out_copy else 0)
    if saved.attention == "sdpa":  # CPU with dropout: SDPA's math kernel, which computes in fp32
        return 3 * ad * 4 + heads * seq * 4 * (3 if attention_dropout else 1) + o_in
    probs = heads * seq * ((4 + (compute if compute != 4 else 0)) if fp32_softmax else compute)
    if attention_dropout:
        probs += heads * seq * (saved.mask + compute)
    return 3 * ad * compute + probs + o_in


def _llama(shape: ModelShape, saved: Saved, seq: int) -> Inventory:
    compute, hidden, intermediate = saved.compute, shape.hidden, shape.intermediate
    # RMSNorm upcasts its input to fp32 and keeps that copy
    norm_bytes = 4 if compute != 4 else compute
    qkv_in = saved.grad_in("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    up_in = saved.grad_in("mlp.gate_proj", "mlp.up_proj")
    # rsqrt, normed, out
    norms = (
        2 * 4 + (2 * hidden * compute if saved.full else 0) + hidden * compute * (qkv_in + up_in)
    )
    mlp = 3 * intermediate * compute + (
        intermediate * compute if saved.grad_in("mlp.down_proj") else 0
    )
    attn = _attention(shape, saved, seq, "self_attn.o_proj", True, False)
    block = 2 * hidden * norm_bytes + norms + attn + mlp + saved.adapters(shape)
    head = (
        4
        + (hidden * compute if saved.full else 0)
        + (hidden * compute if saved.grad_in("lm_head") else 0)
    )
    ids = 8 if saved.full else 0  # the embedding's backward keeps the token ids
    outside = head + (hidden * norm_bytes if saved.input_grads else -4) + ids
    return Inventory(
        ((shape.layers, block),),
        outside,
        2 * seq * shape.rope_dim * compute,
        hidden * compute,
        head,
    )


def _gpt2(shape: ModelShape, saved: Saved, seq: int, gelu_saves: int) -> Inventory:
    compute, stat = saved.compute, saved.stat
    hidden, intermediate = shape.hidden, shape.intermediate
    drop = hidden * saved.mask if shape.dropout.get("hidden") else 0
    norms = 4 * stat + hidden * compute * (saved.grad_in("attn.c_attn") + saved.grad_in("mlp.c_fc"))
    mlp = gelu_saves * intermediate * compute + (
        intermediate * compute if saved.grad_in("mlp.c_proj") else 0
    )
    attn = _attention(shape, saved, seq, "attn.c_proj", False, False)
    block = norms + attn + 2 * drop + 2 * hidden * compute + mlp + saved.adapters(shape)
    embed_drop = hidden * saved.mask if shape.dropout.get("embedding") else 0
    embed = (hidden * compute + embed_drop) if saved.input_grads else -2 * stat
    head = (
        2 * stat + (hidden * compute if saved.grad_in("lm_head") else 0) + (8 if saved.full else 0)
    )
    return Inventory(
        ((shape.layers, block),), embed + head, 8 * seq if saved.full else 0, hidden * compute, head
    )


def _neox(shape: ModelShape, saved: Saved, seq: int, parallel: bool) -> Inventory:
    compute, stat = saved.compute, saved.stat
    hidden, intermediate = shape.hidden, shape.intermediate
    drop = hidden * saved.mask if shape.dropout.get("hidden") else 0
    qkv_in, up_in = saved.grad_in("attention.query_key_value"), saved.grad_in("mlp.dense_h_to_4h")
    norms = 4 * stat + hidden * compute * (qkv_in + up_in)
    mlp = intermediate * compute + (
        intermediate * compute if saved.grad_in("mlp.dense_4h_to_h") else 0
    )
    attn = _attention(shape, saved, seq, "attention.dense", True, True, fused_v=True)
    block = (
        norms
        + attn
        + mlp
        + 2 * drop
        + hidden * compute * (1 if parallel else 2)
        + saved.adapters(shape)
    )
    # without input grads the first block's norm (and, in parallel, its MLP branch) keeps nothing
    first = 2 * stat + ((2 * stat + intermediate * compute + drop) if parallel else 0)
    embed = (hidden * compute + drop if saved.input_grads else -first) + (8 if saved.full else 0)
    head = 2 * stat + (hidden * compute if saved.grad_in("lm_head") else 0)
    return Inventory(
        ((shape.layers, block),), embed + head, 2 * seq * shape.rope_dim * 4, hidden * compute, head
    )


def _bert(shape: ModelShape, saved: Saved, seq: int) -> Inventory:
    compute, stat = saved.compute, saved.stat
    hidden, intermediate = shape.hidden, shape.intermediate
    drop = hidden * saved.mask if shape.dropout.get("hidden") else 0
    qkv = ("attention.self.query", "attention.self.key", "attention.self.value")
    attn = _attention(shape, saved, seq, "attention.output.dense", False, False)
    block = (
        (hidden * compute if saved.grad_in(*qkv) else 0)
        + attn
        + 2 * (drop + hidden * compute + 2 * stat)
        + intermediate * compute
    )
    block += hidden * compute * saved.grad_in(
        "intermediate.dense"
    ) + intermediate * compute * saved.grad_in("output.dense")
    block += saved.adapters(shape)
    head = "cls.predictions" if shape.family == "bert" else "lm_head"
    outside = (
        2 * hidden * compute
        + 2 * stat
        + (hidden * compute if saved.grad_in(f"{head}.decoder") else 0)
    )
    outside += hidden * compute if saved.grad_in(f"{head}.transform.dense", f"{head}.dense") else 0
    head_part = outside
    outside += (hidden * compute + 2 * stat + drop) if saved.input_grads else 0
    # RoBERTa derives position ids per token; BERT slices a buffer
    roberta = shape.family == "roberta"
    outside += (16 if roberta else 8) if saved.full else 0
    positions = 0 if roberta else 8 * shape.options.get("max_positions", 512)
    fixed = (8 * seq + positions) if saved.full else 0
    return Inventory(((shape.layers, block),), outside, fixed, hidden * compute, head_part)


def _t5_norm(saved: Saved, hidden: int, *paths: str) -> int:
    return (
        4
        + (hidden * saved.compute if saved.full else 0)
        + (hidden * saved.compute if saved.grad_in(*paths) else 0)
    )


def _t5_ff(shape: ModelShape, saved: Saved, prefix: str) -> int:
    compute, intermediate = saved.compute, shape.intermediate
    hidden_dropout = shape.dropout.get("hidden", 0.0)
    wo_in = saved.grad_in(f"{prefix}.wo")
    if shape.gated:  # gelu_new(wi_0 x) * wi_1 x
        return (
            4 * intermediate * compute
            + 2 * intermediate * compute
            + (
                (intermediate * saved.mask + intermediate * compute * wo_in)
                if hidden_dropout
                else intermediate * compute * wo_in
            )
        )
    return intermediate * compute + (
        (intermediate * saved.mask + intermediate * compute * wo_in) if hidden_dropout else 0
    )


def _t5(shape: ModelShape, saved: Saved, seq: int) -> Inventory:
    compute, hidden = saved.compute, shape.hidden
    # T5's norm keeps its input and, over 16 bits, an fp32 copy
    norm_bytes = compute + (4 if compute != 4 else 0)
    drop = hidden * saved.mask if shape.dropout.get("hidden") else 0
    blocks = []
    stacks = (
        ("encoder", ("SelfAttention",), 1),
        ("decoder", ("SelfAttention", "EncDecAttention"), 2),
    )
    for stack, attns, ff in stacks:
        block = 0
        for index, kind in enumerate(attns):
            base = f"{stack}.layer.{index}.{kind}"
            block += _t5_norm(saved, hidden, f"{base}.q", f"{base}.k", f"{base}.v")
            block += (
                _attention(shape, saved, seq, f"{base}.o", False, False)
                + drop
                + hidden * norm_bytes
            )
        mlp = f"{stack}.layer.{ff}.DenseReluDense"
        block += _t5_norm(saved, hidden, f"{mlp}.wi", f"{mlp}.wi_0", f"{mlp}.wi_1")
        block += (
            _t5_ff(shape, saved, mlp) + drop + hidden * norm_bytes + saved.adapters(shape, stack)
        )
        blocks.append((shape.layers if stack == "encoder" else shape.decoder_layers, block))
    ends = 2 * (4 + (hidden * compute if saved.full else 0) + drop) + (
        hidden * compute if saved.grad_in("lm_head") else 0
    )
    ends += (
        hidden * compute
        if any(saved.grad_in(f"decoder.layer.1.EncDecAttention.{p}") for p in "kv")
        else 0
    )
    embed = 2 * (hidden * norm_bytes + drop) + 8 if saved.input_grads else -8
    buckets = 2 * 8 * seq * seq if saved.full else 0  # relative-position bucket ids, per stack
    return Inventory(tuple(blocks), ends + embed + 8, buckets, hidden * compute, ends)


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
