"""Forward KL and cross-entropy over (batch, seq, vocab) logits with their gradients written
out, computed a chunk of positions at a time through three reused float32 workspaces.

Why not autograd: through log_softmax, exp and the product it keeps several (tokens x vocab)
float32 buffers for the backward (so the loss had to be checkpointed, running its forward
twice). Why chunks inside one Function rather than one Function per chunk: a sliced input's
gradient is a full-size zero tensor per slice, summed (SliceBackward), so small chunks got
slower, not faster. Why workspaces: every op on a whole (508 x 49152) block made a fresh
100 MB float32 temporary, and on a CPU run (the trainer gives every block of 64 KiB or more
straight back to the kernel, see trainer.return_freed_memory) each is page-faulted in anew.
Measured in the trainer's step on 4 x 127 x 49152 logits (fp32 student, bf16 teacher, T 1,
2 CPU cores): KD forward + backward took 1.40 s of a 4.0 s step before, 0.18 s after; the step
takes 3.1 s and its peak resident set fell from 2627 to 2258 MiB.
"""

from __future__ import annotations

import torch

from .loss_workspace import WORKSPACES
from .loss_workspace import chunk_tokens as default_chunk_tokens

_log_softmax_out = torch.ops.aten._log_softmax.out
_softmax_out = torch.ops.aten._softmax.out


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.promote_types(tensor.dtype, torch.float32)


class _Workspace:
    """Three float32 (batch, positions, vocab) buffers reused by every chunk of one call;
    `chunk_tokens` (batch x positions) defaults to loss_workspace's size for the device."""

    def __init__(self, like: torch.Tensor, chunk_tokens: int | None) -> None:
        batch, seq, vocab = like.shape
        if chunk_tokens is None:
            chunk_tokens = default_chunk_tokens(like.device.type, vocab)
        self.step = max(1, min(seq, chunk_tokens // batch))
        size = batch * self.step * vocab
        self.flat = [like.new_empty(size, dtype=compute_dtype(like)) for _ in range(WORKSPACES)]

    def chunks(self, like: torch.Tensor):
        """(start, stop, three contiguous (batch, stop - start, vocab) views) per chunk."""
        batch, seq, vocab = like.shape
        for start in range(0, seq, self.step):
            stop = min(seq, start + self.step)
            shape = (batch, stop - start, vocab)
            views = [flat[: batch * (stop - start) * vocab].view(shape) for flat in self.flat]
            yield start, stop, views


def _scaled(chunk: torch.Tensor, temperature: float, into: torch.Tensor) -> torch.Tensor:
    into.copy_(chunk)  # to float32, contiguous
    return into.div_(temperature) if temperature != 1 else into


def _log_softmax(chunk, temperature, scratch, out) -> torch.Tensor:
    """log softmax(chunk / T) into `out`; -inf (a masked vocabulary) clamped so 0 x log 0 is 0."""
    _log_softmax_out(_scaled(chunk, temperature, scratch), -1, False, out=out)
    return out.clamp_min_(torch.finfo(out.dtype).min)


def _softmax(chunk, temperature, scratch, out) -> torch.Tensor:
    return _softmax_out(_scaled(chunk, temperature, scratch), -1, False, out=out)


class ForwardKLSum(torch.autograd.Function):
    """Sum over positions of weight x KL(softmax(teacher / T) || softmax(student / T)); its
    gradient, (softmax(s / T) - softmax(t / T)) x weight / T, is rebuilt chunk by chunk in the
    backward from the saved inputs (views: nothing vocabulary-sized is kept)."""

    @staticmethod
    def forward(ctx, student, teacher, weights, temperature, chunk_tokens=None):
        ctx.save_for_backward(student, teacher, weights)
        ctx.temperature, ctx.chunk_tokens = temperature, chunk_tokens
        space = _Workspace(student, chunk_tokens)
        total = student.new_zeros((), dtype=compute_dtype(student))
        for start, stop, (log_s, log_t, scratch) in space.chunks(student):
            _log_softmax(student[:, start:stop], temperature, scratch, log_s)
            _log_softmax(teacher[:, start:stop], temperature, scratch, log_t)
            difference = log_s.sub_(log_t)  # log p_s - log p_t
            negative_kl = difference.mul_(log_t.exp_()).sum(-1)  # x p_t, over the vocabulary
            total -= (negative_kl * weights[:, start:stop]).sum()
        return total

    @staticmethod
    def backward(ctx, grad_total):
        student, teacher, weights = ctx.saved_tensors
        temperature = ctx.temperature
        grad = torch.empty(student.shape, dtype=student.dtype, device=student.device)
        scale = weights.to(compute_dtype(student)) * (grad_total / temperature)
        space = _Workspace(student, ctx.chunk_tokens)
        for start, stop, (p_s, p_t, scratch) in space.chunks(student):
            _softmax(student[:, start:stop], temperature, scratch, p_s)
            _softmax(teacher[:, start:stop], temperature, scratch, p_t)
            grad[:, start:stop] = p_s.sub_(p_t).mul_(scale[:, start:stop].unsqueeze(-1))
        return grad, None, None, None, None


class CrossEntropySum(torch.autograd.Function):
    """Sum of -log softmax(logits)[label] over labels != ignore_index; the gradient (softmax -
    one-hot at the label) is rebuilt chunk by chunk in the backward. F.cross_entropy would keep
    its (tokens x vocab) float32 log-probabilities for the backward."""

    @staticmethod
    def forward(ctx, logits, labels, ignore_index, chunk_tokens=None):
        counted = labels != ignore_index
        safe = torch.where(counted, labels, 0).unsqueeze(-1)
        ctx.save_for_backward(logits, safe, counted)
        ctx.chunk_tokens = chunk_tokens
        total = logits.new_zeros((), dtype=compute_dtype(logits))
        for start, stop, (log_p, scratch, _) in _Workspace(logits, chunk_tokens).chunks(logits):
            _log_softmax(logits[:, start:stop], 1.0, scratch, log_p)
            picked = log_p.gather(-1, safe[:, start:stop]).squeeze(-1)
            total -= (picked * counted[:, start:stop]).sum()
        return total

    @staticmethod
    def backward(ctx, grad_total):
        logits, safe, counted = ctx.saved_tensors
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        scale = counted.to(compute_dtype(logits)) * grad_total
        for start, stop, (p, scratch, _) in _Workspace(logits, ctx.chunk_tokens).chunks(logits):
            _softmax(logits[:, start:stop], 1.0, scratch, p)
            rows = safe[:, start:stop]
            p.scatter_add_(-1, rows, torch.full_like(rows, -1, dtype=p.dtype))
            grad[:, start:stop] = p.mul_(scale[:, start:stop].unsqueeze(-1))
        return grad, None, None, None
