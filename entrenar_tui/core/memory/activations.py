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


def _attention(
    sh: ModelShape,
    sv: Saved,
    seq: int,
    o_path: str,
    fp32_softmax: bool,
    out_copy: bool,
    fused_v: bool = False,
) -> int:
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
