"""The shell's memory commands: `memory` (the estimate by weight precision), `estimate` (the
distill run's memory and time), `profile` (a measured step beside the estimate) and `optimize`
(the plan that fits a GPU). Each calls the core function its CLI twin calls."""

from __future__ import annotations

from ..errors import InvalidInputError
from ..sizes import format_bytes
from .output import Output, table
from .parse import Command

PRECISIONS = (  # the memory table's rows: (label, estimator settings)
    ("fp32", {"precision": "fp32"}),
    ("fp16/bf16", {"precision": "bf16", "master_weights": False}),
    ("int8 + LoRA", {"precision": "bf16", "quantize_base": "int8"}),
    ("nf4 + LoRA", {"precision": "bf16", "quantize_base": "nf4"}),
)
METHOD_NAMES = {"full": "full fine-tuning", "lora": "LoRA (bf16 base)", "qlora": "QLoRA (NF4 base)"}


class MeasureCommands:
    """Mixed into the Evaluator (which provides `session` and `_current`)."""

    def _sizes(self, command: Command) -> tuple[int, int, int]:
        settings = self.session.settings
        return (
            command.options.get("batch", settings["batch"]),
            command.options.get("seq", settings["seq"]),
            command.options.get("rank", settings["rank"]),
        )

    def _memory(self, command: Command) -> Output:
        """Training memory by weight precision, at the session's (or given) batch and length."""
        from ..memory import estimate_for_model
        from ..models import Model

        ref = self._current(command.args[0] if command.args else None)
        model = Model.open(ref)
        batch, seq, rank = self._sizes(command)
        rows = []
        for label, options in PRECISIONS:
            lora = {"lora_rank": rank, "lora_dropout": 0.05} if "quantize_base" in options else {}
            estimate = estimate_for_model(
                model, batch_size=batch, sequence_length=seq, **options, **lora
            )
            parts = estimate.breakdown
            rows.append(
                {
                    "precision": label,
                    "model": parts["weights"] + parts.get("adapters", 0),
                    "state": parts["master_weights"] + parts["optimizer"] + parts["gradients"],
                    "activations": parts["activations"] + parts["logits"] + parts["workspace"],
                    "runtime": parts["overhead"],
                    "total": estimate.total_bytes,
                    "peak": estimate.peak_phase,
                }
            )
        title = f"Memory Estimate: {ref} (training, batch {batch} x {seq} tokens)"
        return Output("memory", {"title": title, "rows": rows})

    def _estimate(self, command: Command) -> Output:
        """The `distill --dry-run` plan's numbers as a table: what each term of the run needs."""
        from .training import distill_config, estimate_plan, plan_text

        parsed, estimate = estimate_plan(distill_config(self.session, command.options))
        total = estimate.total_bytes or 1
        rows = [
            [term, format_bytes(value), f"{100 * value / total:.1f}%"]
            for term, value in estimate.breakdown.items()
            if value
        ]
        rows.append(["total", format_bytes(estimate.total_bytes), "100%"])
        title = (
            f"Distillation estimate: {estimate.teacher} -> {estimate.student} "
            f"(batch {estimate.batch_size} x {estimate.sequence_length} on {estimate.device})"
        )
        message = plan_text(parsed, estimate).split("\n", 1)[1]  # without "Dry run ..."
        return table(title, ["term", "bytes", "share"], rows, message, estimate=estimate.to_dict())

    def _profile(self, command: Command) -> Output:
        """One real training step measured in a fresh process, beside what the estimator says."""
        from ..memory import estimate_memory, measure_training_step
        from ..models.arch import from_config

        ref = self._current(command.args[0] if command.args else None)
        config = _trainable_config(ref)
        batch, seq, _ = self._sizes(command)
        rank = command.options.get("rank")  # LoRA only when asked; else the trainer's full fp32
        device = _device(self.session.settings["device"])
        measured = measure_training_step(
            config, batch_size=batch, sequence_length=seq, lora_rank=rank, device=device
        )
        estimate = estimate_memory(
            from_config(config),
            config=config,
            batch_size=batch,
            sequence_length=seq,
            lora_rank=rank,
            device=device,
            master_weights=False,
        )
        error = (estimate.step_bytes - measured.peak_bytes) / max(measured.peak_bytes, 1)
        model_estimate = estimate.breakdown["weights"] + estimate.breakdown.get("adapters", 0)
        rows = [
            ["model (weights, adapters)", model_estimate, measured.model_bytes],
            ["training step peak", estimate.step_bytes, measured.peak_bytes],
            [
                "runtime before the model",
                estimate.total_bytes - estimate.step_bytes,
                measured.baseline_bytes,
            ],
        ]
        rows = [[label, format_bytes(guess), format_bytes(real)] for label, guess, real in rows]
        what = f"LoRA r={rank}" if rank else "full fine-tuning"
        title = f"Profile: {ref} ({what}, fp32 AdamW, batch {batch} x {seq} on {device})"
        message = (
            f"Measured step peak {format_bytes(measured.peak_bytes)} ({measured.method}); the "
            f"estimate is {error:+.1%} off it ({measured.steps} steps in {measured.seconds:.1f} s)"
        )
        return table(
            title,
            ["", "estimate", "measured"],
            rows,
            message,
            measured=measured.to_dict(),
            estimate=estimate.to_dict(),
        )

    def _optimize(self, command: Command) -> Output:
        """`lora plan`: the best method that fits --vram, and what the better ones would need."""
        from ..lora.plan import plan_lora

        if "vram" not in command.options:
            raise InvalidInputError("optimize needs --vram", "e.g. optimize --vram 16GB")
        ref = self._current(command.args[0] if command.args else None)
        plan = plan_lora(
            ref,
            command.options["vram"],
            method=command.options.get("method", "auto"),
            batch_size=command.options.get("batch"),
            sequence_length=command.options.get("seq"),
        )
        rows = _plan_rows(plan)
        rows += [
            [f"not {item.option}", f"needs {format_bytes(item.memory_bytes)}"]
            for item in plan.rejected
        ]
        method = METHOD_NAMES[plan.method] + (f" r={plan.rank}" if plan.rank else "")
        message = (
            f"✓ Fits: {method}, {format_bytes(plan.memory.total_bytes)} of"
            f" {format_bytes(plan.vram_bytes)} ({plan.utilization:.0%})"
        )
        title = f"Plan for {plan.model} in {format_bytes(plan.vram_bytes)}"
        return table(title, ["setting", "value"], rows, message, plan=plan.to_dict())


def _plan_rows(plan) -> list[list]:
    adapter = (
        f"r={plan.rank}, alpha={plan.alpha}, {plan.target_set}: {', '.join(plan.target_modules)}"
        if plan.rank
        else "-"
    )
    optimizer = " with 8-bit AdamW" if plan.optimizer == "adamw8bit" else ""
    return [
        ["method", METHOD_NAMES[plan.method] + optimizer],
        ["adapter", adapter],
        [
            "batch",
            f"{plan.batch_size} x {plan.gradient_accumulation} accumulation"
            f" = {plan.effective_batch_size}",
        ],
        ["gradient checkpointing", "on" if plan.gradient_checkpointing else "off"],
        ["sequence length", plan.sequence_length],
        ["trainable", f"{plan.trainable_parameters:,} ({plan.trainable_share:.2%})"],
        [
            "memory",
            f"{format_bytes(plan.memory.total_bytes)} (budget {format_bytes(plan.budget_bytes)})",
        ],
        ["speed vs full", f"{plan.relative_speed:.2f}x"],
        ["quality", plan.quality_note],
    ]


def _trainable_config(ref: str) -> dict:
    """The config.json a step can be built from: the model's own, or (for a GGUF) the one of
    its converted Hugging Face folder, as the trainer loads it."""
    import json

    from ..models import Model

    model = Model.open(ref)
    if model.kind == "gguf":
        from ..distill.modeling import hf_folder

        return json.loads((hf_folder(ref) / "config.json").read_text(encoding="utf-8"))
    if not model.source.config or "model_type" not in model.source.config:
        raise InvalidInputError(
            f"{ref} has no config.json to build a training step from",
            "profile a Hugging Face folder, a GGUF file or a packaged model",
        )
    return dict(model.source.config)


def _device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
