"""The loops bench_trainer.py times beside entrenar's trainer: a bare PyTorch KD loop (the fair
anchor: SDPA attention, the teacher in inference mode) and TRL's GKD trainer (what a user would
pick instead; a benchmark-only dependency, `pip install trl`). Each returns per-step clock marks
(seconds since its first step started), cumulative tokens and its first loss.

All load teacher, student and blocks exactly as the trainer's `build` does (entrenar's loaders;
the student is the teacher's chosen layers), so the sides differ only in their loops.
"""

from __future__ import annotations

import time


def bare_setup(args):
    """Teacher, student, tokenizer, blocks and device as the trainer's `build` makes them."""
    import torch

    from entrenar_tui.core.distill.data import build_dataset, load_documents
    from entrenar_tui.core.distill.modeling import (
        load_causal_lm,
        load_tokenizer,
        pick_device,
        student_from_teacher,
        torch_dtype,
    )

    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    tokenizer = load_tokenizer(args.teacher)
    teacher = load_causal_lm(args.teacher, device, precision=args.teacher_precision)
    teacher = teacher.eval().requires_grad_(False)
    student = student_from_teacher(teacher, args.layers).to(device)
    student = student.to(torch_dtype(args.student_precision)).requires_grad_(True)
    docs = load_documents("builtin", None, None, "train", "text", False, args.max_documents)
    blocks = build_dataset(docs, tokenizer, args.seq, 0.05).train
    return teacher, student, tokenizer, blocks, device


def kd_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    """alpha x T^2 x KL(teacher_T || student_T) + (1 - alpha) x CE, mean over tokens."""
    import torch.nn.functional as F

    vocab = student_logits.size(-1)
    s_flat = student_logits.reshape(-1, vocab).float()
    t_flat = teacher_logits.reshape(-1, vocab).float()
    kd = F.kl_div(
        F.log_softmax(s_flat / temperature, -1),
        F.log_softmax(t_flat / temperature, -1),
        reduction="batchmean",
        log_target=True,
    )
    if alpha >= 1.0:
        return temperature**2 * kd
    ce = F.cross_entropy(s_flat, labels.reshape(-1))
    return alpha * temperature**2 * kd + (1 - alpha) * ce


def run_bare(args, on_start=None) -> dict:
    """The loop a PyTorch user writes, with the teacher in inference mode: the speed reference."""
    import torch

    teacher, student, _, blocks, device = bare_setup(args)
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-4, weight_decay=0.0)
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(args.seed * 1000))
    batch = args.batch
    student.train()
    if on_start:
        on_start()
    marks, tokens, losses, clock = [], [], [], time.perf_counter()
    for step in range(args.warmup + args.steps):
        chosen = order[step * batch : (step + 1) * batch].tolist()
        ids = torch.tensor([blocks[i] for i in chosen], dtype=torch.long, device=device)
        with torch.inference_mode():
            teacher_logits = teacher(input_ids=ids).logits[:, :-1]
        teacher_logits = teacher_logits.clone()  # out of inference mode (loss saves it)
        student_logits = student(input_ids=ids).logits[:, :-1]
        loss = kd_loss(student_logits, teacher_logits, ids[:, 1:], args.temperature, args.alpha)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())  # a sync, as the trainer's logging does
        marks.append(time.perf_counter() - clock)
        tokens.append((step + 1) * ids.numel())
    return {"marks": marks, "tokens": tokens, "first_loss": losses[0]}


def run_trl(args, workdir) -> dict:
    """TRL's GKDTrainer, off-policy (lmbda 0: no student generations) with beta 0 (its
    generalized JSD is then the forward KL), on the same models, blocks and batch. GKD's loss is
    KD alone: compare it with our trainer at alpha 1."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    teacher, student, tokenizer, blocks, device = bare_setup(args)
    steps = args.warmup + args.steps
    marks: list[float] = []
    clock = [0.0]

    class Clock(TrainerCallback):
        def on_step_begin(self, arguments, state, control, **kwargs):
            if state.global_step == 0 and not marks:
                clock[0] = time.perf_counter()

        def on_step_end(self, arguments, state, control, **kwargs):
            marks.append(time.perf_counter() - clock[0])

    def collate(rows):
        ids = torch.tensor([row["input_ids"] for row in rows], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    config = GKDConfig(
        output_dir=str(workdir / "trl"),
        per_device_train_batch_size=args.batch,
        max_steps=steps,
        learning_rate=3e-4,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        lmbda=0.0,
        beta=0.0,
        seq_kd=False,
        max_length=args.seq,
        logging_steps=args.log_every,
        save_strategy="no",
        report_to=[],
        use_cpu=device == "cpu",
        bf16=False,
        dataloader_num_workers=0,
        seed=args.seed,
        disable_tqdm=True,
    )
    dataset = Dataset.from_dict({"input_ids": blocks[: steps * args.batch]})
    trainer = GKDTrainer(
        model=student,
        teacher_model=teacher,
        args=config,
        data_collator=collate,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Clock()],
    )
    losses: list[float] = []
    original = trainer.compute_loss

    def recorded(*a, **k):
        loss = original(*a, **k)
        if not losses:
            losses.append(float(loss if not isinstance(loss, tuple) else loss[0]))
        return loss

    trainer.compute_loss = recorded
    trainer.train()
    assert len(marks) == steps, (len(marks), steps)
    return {
        "marks": marks,
        "tokens": [(i + 1) * args.batch * args.seq for i in range(steps)],
        "first_loss": losses[0],
    }
