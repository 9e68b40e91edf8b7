"""The shell's commands that train, score and write models: `finetune`, `evaluate`, `save`,
`export`, `convert` and `quantize`. Each calls the core function its CLI twin calls."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInputError
from ..sizes import format_bytes
from .commands import COMMANDS
from .output import Output, table
from .parse import Command

GGUF_QUANTS = COMMANDS["quantize"].first_words  # q8_0, q4_0


class WorkCommands:
    """Mixed into the Evaluator (which provides `session`, `pending` and `_current`)."""

    def _latest_run(self, given: str | None, usage: str) -> str:
        if given:
            return given
        if not self.session.runs:
            raise InvalidInputError("no run in this session yet", usage)
        return self.session.runs[-1]

    def _finetune(self, command: Command) -> Output:
        """LoRA on the current model through the distillation trainer with alpha 0."""
        from .training import estimate_plan, finetune_config, plan_text, start_run

        config = finetune_config(self.session, command.options)
        output = command.options.get("output")
        if command.options.get("dry-run"):
            self.pending = {"config": config, "output": output, "prefix": "finetune"}
            text = plan_text(*estimate_plan(config))
            return Output("text", None, text, confirm="Proceed with training?")
        return start_run(self.session, config, output, prefix="finetune")

    def _evaluate(self, command: Command) -> Output:
        """A run's student on its held-out blocks, or a model on the builtin corpus."""
        from .heldout import evaluate_model, evaluate_run, is_run_dir

        settings = self.session.settings
        target = command.args[0] if command.args else None
        if target is None and self.session.runs:
            target = self.session.runs[-1]
        target = self._current(target)
        if is_run_dir(target):
            result = evaluate_run(target, settings["device"])
        else:
            sizes = (settings["seq"], settings["eval_blocks"], settings["batch"])
            result = evaluate_model(target, *sizes, settings["device"])
        rows = [
            ["eval loss", f"{result.eval_loss:.4f}"],
            ["perplexity", f"{result.eval_ppl:.2f}"],
            ["held-out tokens", f"{result.tokens:,}"],
            ["blocks", f"{result.blocks} x {result.block_size} tokens"],
        ]
        if result.recorded:
            rows.append(
                [
                    f"run's eval at step {result.recorded['step']}",
                    f"{result.recorded['eval_ppl']:.2f}",
                ]
            )
        message = (
            f"✓ {result.student}: eval loss {result.eval_loss:.4f}, perplexity"
            f" {result.eval_ppl:.2f} on {result.tokens:,} held-out tokens ({result.device})"
        )
        title = f"Held-out evaluation: {target}"
        return table(title, ["", "value"], rows, message, result=result.to_dict())

    def _save(self, command: Command) -> Output:
        """`export` in the run's own output.format (merged when the student is a LoRA)."""
        from ..distill.config import config_from_data
        from ..distill.export import export_run
        from ..distill.rundir import RunDir

        output = command.args[0]
        run_dir = self._latest_run(
            command.args[1] if len(command.args) > 1 else None, "save OUTPUT RUN_DIR"
        )
        fmt = config_from_data(RunDir(Path(run_dir)).read_config()).output.format
        result = export_run(run_dir, fmt, output)
        return Output("text", result, f"✓ Saved to {output} ({format_bytes(_size(output))}, {fmt})")

    def _export(self, command: Command) -> Output:
        from ..distill.export import export_run

        fmt, output = command.args[0], command.args[1]
        run_dir = self._latest_run(
            command.args[2] if len(command.args) > 2 else None, "export FORMAT OUTPUT RUN_DIR"
        )
        result = export_run(run_dir, fmt, output)
        return Output("text", result, f"✓ Exported to {output}")

    def _convert(self, command: Command) -> Output:
        from ..convert import convert_model

        fmt, output = command.args[0], command.args[1]
        ref = self._current(command.args[2] if len(command.args) > 2 else None)
        result = convert_model(ref, fmt, output, command.options.get("quantize"))
        return Output("text", result, _written("Converted", ref, result))

    def _quantize(self, command: Command) -> Output:
        from ..convert import convert_model

        kind, output = command.args[0].lower(), command.args[1]
        if kind not in GGUF_QUANTS:
            raise InvalidInputError(
                f"quantize {command.args[0]!r}?",
                f"quantize writes a GGUF in {' or '.join(GGUF_QUANTS)}: quantize q8_0 model.gguf",
            )
        ref = self._current(command.args[2] if len(command.args) > 2 else None)
        result = convert_model(ref, "gguf", output, kind)
        return Output("text", result, _written(f"Quantized ({kind})", ref, result))


def _written(what: str, ref: str, result) -> str:
    checked = "verified" if result.verified else "NOT verified"
    return (
        f"✓ {what} {ref} to {result.output} ({format_bytes(_size(result.output))}, "
        f"{result.format}, {result.tensors} tensors, {checked})"
    )


def _size(path: str | Path) -> int:
    """Bytes on disk of a file, or of every file in a folder."""
    path = Path(path)
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size if path.exists() else 0
