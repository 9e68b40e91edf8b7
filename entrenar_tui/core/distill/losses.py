"""Distillation losses: logit KD, label CE, hidden-state (FitNets) and attention (MiniLM) transfer.

Imported only by the trainer, so it imports torch at the top (the rest of core stays torch-free).

Conventions (what is averaged over what):

* Inputs are aligned: `student_logits[b, i]` predicts `labels[b, i]`. A causal LM's trainer shifts
  (logits[:, :-1], labels[:, 1:]) before calling; the losses never shift.
* Tokens: a position counts for KD and CE when its label is not `ignore_index` (-100), or for
  `KDLoss` alone when its `mask` is true. Padding therefore contributes nothing.
* KD = T^2 x sum over counted tokens of D(teacher_T, student_T) / num_tokens, where D is the chosen
  divergence between the distributions softened by temperature T (`softmax(logits / T)`) and
  T^2 (Hinton et al., 2015) keeps gradient magnitudes comparable across temperatures.
  CE = sum over counted tokens of -log p_student(label) / num_tokens (T = 1).
* `num_tokens` defaults to this batch's count. With gradient accumulation the trainer passes the
  count over the whole accumulation window and sums (does not average) the micro-batch losses:
  the gradient is then exactly that of one big batch, however the tokens fall into micro-batches.
* Hidden and attention losses are per position, averaged over non-padding positions
  (`attention_mask` == 1; `num_positions` plays the role of `num_tokens`), then over mapped layers.
* Layer indices are 0-based transformer blocks: pass per-block outputs, i.e. Hugging Face's
  `hidden_states[1:]` (index 0 there is the embedding output) and `attentions` as they come.
* Teacher inputs are detached; everything is computed in at least float32.
* Total = alpha x KD + (1 - alpha) x CE + hidden_weight x hidden + attention_weight x attention.
  A term whose weight is 0 is not computed and its inputs are not needed.

Divergences D(p_teacher, p_student), each >= 0 and 0 exactly when the distributions agree:
  forward_kl: KL(p_t || p_s), mass-covering (the classic KD loss).
  reverse_kl: KL(p_s || p_t), mode-seeking.
  jsd: beta KL(p_t || m) + (1 - beta) KL(p_s || m), m = beta p_t + (1 - beta) p_s; beta = 0.5
       gives the symmetric Jensen-Shannon divergence, bounded by log 2. For small differences it is
       a quarter of the KL, so the same alpha weighs it about four times less.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import InvalidInputError
from .logit_grads import CrossEntropySum, ForwardKLSum
from .logit_grads import compute_dtype as _compute_dtype

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
IGNORE_INDEX = -100
# 512 rows x 128k vocab x 4 bytes = 256 MiB per float32 temporary: a few of them fit beside a model.
DEFAULT_CHUNK_TOKENS = 512


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / T), with -inf (masked vocabulary) clamped so 0 x log 0 stays 0."""
    log_p = F.log_softmax(logits.to(_compute_dtype(logits)) / temperature, dim=-1)
    return log_p.clamp_min(torch.finfo(log_p.dtype).min)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    divergence: Divergence = "forward_kl",
    temperature: float = 1.0,
    jsd_beta: float = 0.5,
) -> torch.Tensor:
    """Divergence per token (shape = logits.shape[:-1]), without the T^2 factor."""
    log_p_s = _log_probs(student_logits, temperature)
    log_p_t = _log_probs(teacher_logits, temperature)
    if divergence == "forward_kl":
        return _kl(log_p_t, log_p_s)
    if divergence == "reverse_kl":
        return _kl(log_p_s, log_p_t)
    if divergence == "jsd":
        log_m = torch.logaddexp(log_p_t + math.log(jsd_beta), log_p_s + math.log(1 - jsd_beta))
        return jsd_beta * _kl(log_p_t, log_m) + (1 - jsd_beta) * _kl(log_p_s, log_m)
    raise InvalidInputError(f"unknown divergence {divergence!r}", f"use one of {DIVERGENCES}")


def _batch_seq(tensor: torch.Tensor, trailing: int) -> torch.Tensor:
    """View as (batch, seq, *trailing dims); a view, so shifted logits are not copied."""
    if tensor.dim() == trailing + 1:
        return tensor.unsqueeze(0)
    return tensor.reshape(-1, *tensor.shape[tensor.dim() - trailing - 1 :])


def _chunked_sum(token_loss, tensors: Sequence[torch.Tensor], chunk_tokens: int, recompute: bool):
    """Sum of `token_loss(*chunk)` over chunks of the sequence (dim 1) of about chunk_tokens tokens.

    With autograd on, each chunk is checkpointed: its float32 softmax temporaries are freed after
    the forward and rebuilt one chunk at a time in the backward, so the peak is one chunk's worth
    instead of (tokens x vocab) floats per temporary.
    """
    first = tensors[0]
    use_checkpoint = recompute and torch.is_grad_enabled() and first.requires_grad
    total = first.new_zeros((), dtype=_compute_dtype(first))
    step = max(1, chunk_tokens // first.shape[0])
    for start in range(0, first.shape[1], step):
        chunk = [t[:, start : start + step] for t in tensors]
        if use_checkpoint:
            total = total + checkpoint(token_loss, *chunk, use_reentrant=False)
        else:
            total = total + token_loss(*chunk)
    return total


def _denominator(count: torch.Tensor | int | None, weights: torch.Tensor) -> torch.Tensor:
    """The token count to divide by: the caller's window total, else this batch's; at least 1."""
    if count is None:
        count = weights.sum()
    return torch.as_tensor(count, dtype=weights.dtype, device=weights.device).clamp_min(1)


def _same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise InvalidInputError(
            f"{what}: student shape {tuple(a.shape)} != teacher shape {tuple(b.shape)}",
            "student and teacher must share the tokenizer (same vocabulary) and see the same batch",
        )


def count_tokens(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> int:
    """Tokens that count for KD and CE; sum it over an accumulation window for `num_tokens`."""
    return int((labels != ignore_index).sum())


class KDLoss(nn.Module):
    """T^2 x divergence between temperature-softened teacher and student, per counted token.

    Computed over chunks of `chunk_tokens` tokens so a 128k vocabulary does not need several
    (batch x sequence x vocab) float32 copies; chunked and unchunked results agree to rounding.
    None: forward KL sizes its chunks to its workspaces (logit_grads), the others take 512.
    """

    def __init__(
        self,
        temperature: float = 2.0,
        divergence: Divergence = "forward_kl",
        *,
        jsd_beta: float = 0.5,
        scale_by_t_squared: bool = True,
        chunk_tokens: int | None = None,
        recompute: bool = True,
    ) -> None:
        super().__init__()
        if temperature <= 0 or not 0 < jsd_beta < 1 or (chunk_tokens or 1) < 1:
            raise InvalidInputError(
                f"bad KD settings: temperature={temperature}, jsd_beta={jsd_beta}, "
                f"chunk_tokens={chunk_tokens}",
                "temperature must be > 0 (try 2.0), jsd_beta in (0, 1), chunk_tokens >= 1",
            )
        if divergence not in DIVERGENCES:
            raise InvalidInputError(
                f"unknown divergence {divergence!r}", f"use one of {DIVERGENCES}"
            )
        self.temperature = float(temperature)
        self.divergence = divergence
        self.jsd_beta = jsd_beta
        self.scale = self.temperature**2 if scale_by_t_squared else 1.0
        self.chunk_tokens = chunk_tokens
        self.recompute = recompute

    def _tokens_sum(self, student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor):
        div = token_divergence(student, teacher, self.divergence, self.temperature, self.jsd_beta)
        return (div * weights).sum()

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        mask: torch.Tensor | None = None,
        num_tokens: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Logits (..., vocab); mask (...) true where a token counts; num_tokens: see module doc."""
        _same_shape(student_logits, teacher_logits, "logits")
        student = _batch_seq(student_logits, 1)
        teacher = _batch_seq(teacher_logits.detach(), 1)
        dtype = _compute_dtype(student_logits)
        shape = student.shape[:2]
        weights = student.new_ones(shape, dtype=dtype) if mask is None else mask.reshape(shape)
        weights = weights.to(dtype)
        if self.divergence == "forward_kl":  # chunked inside, keeps no buffers for backward
            total = ForwardKLSum.apply(
                student, teacher, weights, self.temperature, self.chunk_tokens
            )
        else:
            parts = (student, teacher, weights)
            chunk = self.chunk_tokens or DEFAULT_CHUNK_TOKENS
            total = _chunked_sum(self._tokens_sum, parts, chunk, self.recompute)
        return self.scale * total / _denominator(num_tokens, weights)


def cross_entropy_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    num_tokens: torch.Tensor | int | None = None,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """Sum of -log p(label) over labels != ignore_index, divided by num_tokens (default: count);
    chunk_tokens None: sized to its workspaces."""
    logits = _batch_seq(logits, 1)
    labels = labels.reshape(logits.shape[:2])
    total = CrossEntropySum.apply(logits, labels, ignore_index, chunk_tokens)
    return total / _denominator(num_tokens, (labels != ignore_index).to(total.dtype))


def _pick(states: Sequence[torch.Tensor], layer: int, what: str) -> torch.Tensor:
    if not -len(states) <= layer < len(states):
        raise InvalidInputError(
            f"layer_mapping names {what} layer {layer}, but the model gave {len(states)} layers",
            "layer indices are 0-based transformer blocks; fix the layer_mapping in the config",
        )
    return states[layer]


class _MappedLayerLoss(nn.Module):
    """Mean over mapped (student_layer, teacher_layer) pairs of a per-position loss, averaged
    over non-padding positions (`num_positions` overrides the count, as `num_tokens` does)."""

    kinds: tuple[str, ...] = ()

    def __init__(self, layer_mapping: Sequence[Sequence[int]], loss: str) -> None:
        super().__init__()
        if loss not in self.kinds:
            name = type(self).__name__
            raise InvalidInputError(f"unknown {name} loss {loss!r}", f"use one of {self.kinds}")
        self.layer_mapping = [(int(s), int(t)) for s, t in layer_mapping]
        if not self.layer_mapping:
            raise InvalidInputError("layer_mapping is empty", "give pairs like [[0, 2], [1, 5]]")
        self.loss = loss

    def _per_position(self, layer: int, student: torch.Tensor, teacher: torch.Tensor):
        raise NotImplementedError

    def forward(
        self,
        student_states: Sequence[torch.Tensor],
        teacher_states: Sequence[torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        num_positions: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        per_layer = []
        for student_layer, teacher_layer in self.layer_mapping:
            student = _pick(student_states, student_layer, "student")
            teacher = _pick(teacher_states, teacher_layer, "teacher").detach()
            per_position = self._per_position(student_layer, student, teacher)  # (batch, seq)
            weights = (
                torch.ones_like(per_position)
                if attention_mask is None
                else attention_mask.to(per_position.dtype)
            )
            per_layer.append((per_position * weights).sum() / _denominator(num_positions, weights))
        return torch.stack(per_layer).mean()


class HiddenStateLoss(_MappedLayerLoss):
    """FitNets / Patient-KD: match mapped per-block hidden states (batch, seq, width).

    Where the widths differ, a learned linear projection (student -> teacher width) per student
    layer sits here, not in the student, so it never reaches the exported student; save it with
    `projection_state_dict()`. Per position: `mse` = mean over features, `cosine` = 1 - cosine.
    """

    kinds = ("mse", "cosine")

    def __init__(
        self,
        layer_mapping: Sequence[Sequence[int]],
        student_hidden_size: int,
        teacher_hidden_size: int,
        loss: Literal["mse", "cosine"] = "mse",
    ) -> None:
        super().__init__(layer_mapping, loss)
        sizes = (student_hidden_size, teacher_hidden_size)
        make = nn.Identity if sizes[0] == sizes[1] else lambda: nn.Linear(*sizes)
        self.projections = nn.ModuleDict({str(s): make() for s, _ in self.layer_mapping})

    def projection_state_dict(self) -> dict[str, torch.Tensor]:
        """The projections' weights (empty when widths match), for saving beside the student."""
        return self.projections.state_dict()

    def load_projection_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.projections.load_state_dict(state)

    def _per_position(self, layer: int, student: torch.Tensor, teacher: torch.Tensor):
        projection = self.projections[str(layer)]
        if isinstance(projection, nn.Linear):
            student = projection(student.to(projection.weight.dtype))
        dtype = torch.promote_types(_compute_dtype(student), teacher.dtype)
        student, teacher = student.to(dtype), teacher.to(dtype)
        _same_shape(student, teacher, f"hidden state of student layer {layer} (after projection)")
        if self.loss == "mse":
            return (student - teacher).pow(2).mean(-1)
        return 1 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-8)


class AttentionLoss(_MappedLayerLoss):
    """Attention transfer (MiniLM): match mapped layers' attention distributions.

    Attentions are (batch, heads, query, key) probabilities. With equal head counts each head is
    compared with its counterpart; otherwise both sides are first averaged over heads. Per query
    position: `kl` = KL(teacher || student) over keys, `mse` = mean squared difference over keys;
    then the mean over heads, the mean over non-padding query positions, the mean over layers.
    Masked key positions already have probability 0 on both sides, so they add nothing.
    """

    kinds = ("kl", "mse")

    def __init__(
        self, layer_mapping: Sequence[Sequence[int]], loss: Literal["kl", "mse"] = "kl"
    ) -> None:
        super().__init__(layer_mapping, loss)

    def _per_position(self, layer: int, student: torch.Tensor, teacher: torch.Tensor):
        dtype = torch.promote_types(_compute_dtype(student), teacher.dtype)
        student, teacher = student.to(dtype), teacher.to(dtype)
        if student.shape[1] != teacher.shape[1]:
            student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
        _same_shape(student, teacher, f"attention of student layer {layer}")
        if self.loss == "kl":
            log_student = student.clamp_min(torch.finfo(dtype).tiny).log()
            per_head = (torch.xlogy(teacher, teacher) - teacher * log_student).sum(-1)
        else:
            per_head = (student - teacher).pow(2).mean(-1)
        return per_head.mean(1)


@dataclass
class LossTerms:
    """The total and each term (0 when skipped), as tensors; `loss` is the one to backward."""

    loss: torch.Tensor
    loss_kd: torch.Tensor
    loss_ce: torch.Tensor
    loss_hidden: torch.Tensor
    loss_attention: torch.Tensor

    def to_dict(self) -> dict[str, float]:
        return {name: float(value.detach()) for name, value in vars(self).items()}


class DistillationLoss(nn.Module):
    """alpha x KD + (1 - alpha) x CE + hidden_weight x hidden + attention_weight x attention.

    Holds the hidden-state projections (if any): move it to the device and give its
    `parameters()` to the optimizer along with the student's.
    """

    def __init__(
        self,
        *,
        temperature: float = 2.0,
        alpha: float = 0.5,
        divergence: Divergence = "forward_kl",
        hidden_loss: HiddenStateLoss | None = None,
        hidden_weight: float = 0.0,
        attention_loss: AttentionLoss | None = None,
        attention_weight: float = 0.0,
        ignore_index: int = IGNORE_INDEX,
        chunk_tokens: int | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= alpha <= 1 or hidden_weight < 0 or attention_weight < 0:
            raise InvalidInputError(
                "alpha must be in [0, 1] and the hidden/attention weights >= 0",
                "fix distillation.alpha / progressive.weight / attention.weight",
            )
        if (hidden_weight and hidden_loss is None) or (attention_weight and attention_loss is None):
            raise InvalidInputError(
                "a hidden or attention weight > 0 needs its HiddenStateLoss / AttentionLoss",
                "pass the loss module, or set its weight to 0",
            )
        self.kd = KDLoss(temperature, divergence, chunk_tokens=chunk_tokens)
        self.alpha = float(alpha)
        self.hidden = hidden_loss
        self.hidden_weight = float(hidden_weight)
        self.attention = attention_loss
        self.attention_weight = float(attention_weight)
        self.ignore_index = ignore_index
        self.chunk_tokens = chunk_tokens

    # What the trainer must compute: teacher logits, output_hidden_states, output_attentions.
    needs_teacher_logits = property(lambda self: self.alpha > 0)
    needs_hidden_states = property(lambda self: self.hidden_weight > 0)
    needs_attentions = property(lambda self: self.attention_weight > 0)

    def forward(
        self,
        student_logits: torch.Tensor,
        labels: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        num_tokens: torch.Tensor | int | None = None,
        num_positions: torch.Tensor | int | None = None,
        student_hidden: Sequence[torch.Tensor] | None = None,
        teacher_hidden: Sequence[torch.Tensor] | None = None,
        student_attentions: Sequence[torch.Tensor] | None = None,
        teacher_attentions: Sequence[torch.Tensor] | None = None,
    ) -> LossTerms:
        """Aligned logits/labels (see module doc); hidden states/attentions only when weighted."""
        zero = student_logits.new_zeros((), dtype=_compute_dtype(student_logits))
        kd = ce = hidden = attention = zero
        if self.needs_teacher_logits:
            _require((teacher_logits,), "teacher logits", "alpha > 0")
            mask = labels != self.ignore_index
            kd = self.kd(student_logits, teacher_logits, mask, num_tokens)
        if self.alpha < 1:
            ce = cross_entropy_loss(
                student_logits,
                labels,
                ignore_index=self.ignore_index,
                num_tokens=num_tokens,
                chunk_tokens=self.chunk_tokens,
            )
        if self.needs_hidden_states:
            _require((student_hidden, teacher_hidden), "hidden states", "hidden_weight > 0")
            hidden = self.hidden(student_hidden, teacher_hidden, attention_mask, num_positions)
        if self.needs_attentions:
            _require((student_attentions, teacher_attentions), "attentions", "weight > 0")
            attention = self.attention(
                student_attentions, teacher_attentions, attention_mask, num_positions
            )
        total = (
            self.alpha * kd
            + (1 - self.alpha) * ce
            + self.hidden_weight * hidden
            + self.attention_weight * attention
        )
        return LossTerms(total, kd, ce, hidden, attention)


def _require(values: tuple, what: str, because: str) -> None:
    if any(value is None or len(value) == 0 for value in values):
        raise InvalidInputError(
            f"the distillation loss needs {what} (student and teacher) because {because}",
            "run the models with the matching output_* flag, or set that weight to 0",
        )
