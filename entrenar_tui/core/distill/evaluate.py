"""Held-out evaluation: student loss and perplexity, top-1 agreement with the teacher, samples."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

SAMPLE_PROMPTS = ("Return the number of", "This module provides", "The default value is")


@dataclass
class EvalResult:
    eval_loss: float
    eval_ppl: float
    eval_top1_agreement: float | None
    tokens: int
    teacher_loss: float | None = None  # from the same teacher pass as the agreement
    samples: list[dict] = field(default_factory=list)


def _batches(blocks: list[list[int]], batch_size: int, device: str):
    for i in range(0, len(blocks), batch_size):
        yield torch.tensor(blocks[i : i + batch_size], dtype=torch.long, device=device)


@torch.no_grad()
def evaluate(
    model, blocks: list[list[int]], batch_size: int, device: str, teacher=None
) -> EvalResult:
    """Mean next-token CE over every held-out token; with a teacher, how often argmaxes agree."""
    was_training = model.training
    model.eval()
    total_nll, total_tokens, agree, teacher_nll = 0.0, 0, 0, 0.0
    for ids in _batches(blocks, batch_size, device):
        logits = model(input_ids=ids).logits[:, :-1].float()
        targets = ids[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
        )
        total_nll += float(nll)
        total_tokens += targets.numel()
        if teacher is not None:
            t_logits = teacher(input_ids=ids).logits[:, :-1].float()
            agree += int((t_logits.argmax(-1) == logits.argmax(-1)).sum())
            teacher_nll += float(
                torch.nn.functional.cross_entropy(
                    t_logits.reshape(-1, t_logits.size(-1)), targets.reshape(-1), reduction="sum"
                )
            )
    model.train(was_training)
    if total_tokens == 0:
        return EvalResult(math.nan, math.nan, None, 0)
    loss = total_nll / total_tokens
    return EvalResult(
        loss,
        math.exp(min(loss, 50.0)),
        agree / total_tokens if teacher is not None else None,
        total_tokens,
        teacher_nll / total_tokens if teacher is not None else None,
    )


@torch.no_grad()
def greedy_samples(model, tokenizer, device: str, max_new_tokens: int = 16) -> list[dict]:
    """A few greedy continuations of fixed prompts, so a reader sees what the numbers mean."""
    was_training = model.training
    model.eval()
    out = []
    for prompt in SAMPLE_PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
        gen = model.generate(
            ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        out.append(
            {
                "prompt": prompt,
                "completion": tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True),
            }
        )
    model.train(was_training)
    return out
