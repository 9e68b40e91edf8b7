"""`distill export`: a run, its final student or one of its checkpoints -> any format the
inspect converters write. A LoRA student exports as its adapter, or merged into its base."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InvalidInputError
from ..fsutil import atomic_dir
from .config import DistillConfig
from .rundir import RunDir


@dataclass
class ExportResult:
    input: str
    source: str  # what was converted: final/, a rebuilt checkpoint, a merged adapter
    format: str
    output: str
    quantize: str | None
    merged_adapter: bool
    conversion: dict | None

    def to_dict(self) -> dict:
        return asdict(self)


def _locate(path: Path) -> tuple[RunDir | None, Path]:
    """(run directory if known, the folder or checkpoint to export)."""
    if (path / "trainer.pt").exists():  # checkpoints/step-NNNNNN
        return RunDir(path.parent.parent), path
    if (path / "config.yaml").exists() and (path / "final").is_dir():
        return RunDir(path), path / "final"
    if (path / "config.yaml").exists():
        _refuse_unfinished_run(RunDir(path))
    if (path / "config.json").exists() or (path / "adapter_config.json").exists():
        parent = path.parent
        return (RunDir(parent) if (parent / "config.yaml").exists() else None), path
    raise InvalidInputError(
        f"{path} is not a run directory, a final student or a checkpoint",
        "pass the folder `distill run` wrote (or its final/ or checkpoints/step-N)",
    )


def _refuse_unfinished_run(run: RunDir) -> None:
    """A run stopped before its end has no final/: say so and name what can be exported, rather
    than call the folder "not a run directory" (or quietly export a half-trained student)."""
    latest = run.latest_checkpoint()
    if latest is None:
        raise InvalidInputError(
            f"{run.path} has no final/ and no checkpoint yet: nothing to export",
            f"finish it first: entrenar distill run --resume {run.path}",
        )
    raise InvalidInputError(
        f"{run.path} has no final/ yet (it stopped before its last step)",
        f"export its last checkpoint: --input {latest}, or finish it first: "
        f"entrenar distill run --resume {run.path}",
    )


def _without_lora(config: DistillConfig) -> DistillConfig:
    lora = config.student.lora.model_copy(update={"enabled": False})
    student = config.student.model_copy(update={"lora": lora})
    return config.model_copy(update={"student": student})


def _unquantized(config: DistillConfig) -> DistillConfig:
    """A quantized base is merged into in full precision: its frozen weights come from the
    base model's own file, so the export holds no 4- or 8-bit rounding."""
    if config.student.quantization is None:
        return config
    student = config.student.model_copy(update={"quantization": None, "precision": "fp32"})
    return config.model_copy(update={"student": student})


def _load_trained(student, state: dict, lora: bool) -> None:
    """A checkpoint's trained weights into the rebuilt student: all of them, or for LoRA only
    the adapters (the frozen base, quantized or not, is the base model's own)."""
    if not lora:
        student.load_state_dict(state)
        return
    adapters = {key: value for key, value in state.items() if "lora_" in key}
    _missing, unexpected = student.load_state_dict(adapters, strict=False)
    wanted = [key for key, _ in student.named_parameters() if "lora_" in key]
    if unexpected or len(adapters) != len(wanted):
        raise InvalidInputError(
            f"the checkpoint's adapters do not match the run's LoRA config ({len(adapters)} of"
            f" {len(wanted)} tensors)",
            "export the run's final/ adapter instead, or the checkpoint of the same config",
        )


def _rebuild_student(run: RunDir, checkpoint: Path | None, adapter: Path | None):
    """(student as a plain transformers model, tokenizer, whether a LoRA adapter was merged
    into it), from the run's config plus a checkpoint or a saved adapter."""
    import torch

    from .modeling import load_causal_lm, load_tokenizer
    from .trainer import _build_student

    config = _unquantized(DistillConfig.model_validate(run.read_config()))
    tc = config.teacher
    teacher = load_causal_lm(tc.model_id, "cpu", revision=tc.revision, fmt=tc.format)
    tokenizer = load_tokenizer(tc.model_id, tc.revision, tc.format)
    if adapter is not None:
        from peft import PeftModel

        base = _build_student(_without_lora(config), teacher, "cpu")
        return PeftModel.from_pretrained(base, adapter).merge_and_unload(), tokenizer, True
    student = _build_student(config, teacher, "cpu")
    state = torch.load(checkpoint / "trainer.pt", map_location="cpu", weights_only=True)
    _load_trained(student, state["student"], config.student.lora.enabled)
    if config.student.lora.enabled:  # a LoRA checkpoint: the adapter is merged, as for final/
        return student.merge_and_unload(), tokenizer, True
    return student, tokenizer, False


def export_run(
    input_path: str | Path,
    fmt: str,
    output: str | Path,
    quantize: str | None = None,
    merge: bool = True,
) -> ExportResult:
    """Convert a run's final student or a checkpoint; `merge=False` keeps a LoRA adapter."""
    from ..convert import convert_model

    path = Path(input_path)
    run, source = _locate(path)
    is_adapter = (source / "adapter_config.json").exists()
    if is_adapter and not merge:
        return _export_adapter(path, source, fmt, output)
    needs_rebuild = is_adapter or (source / "trainer.pt").exists()
    if not needs_rebuild:
        conv = convert_model(str(source), fmt, output, quantize)
        return ExportResult(
            str(path), str(source), fmt, str(output), quantize, False, conv.to_dict()
        )
    if run is None:
        raise InvalidInputError(
            f"{source} needs its run directory to be rebuilt",
            "export from inside the run directory `distill run` wrote",
        )
    student, tokenizer, merged = _rebuild_student(
        run, source if not is_adapter else None, source if is_adapter else None
    )
    with tempfile.TemporaryDirectory(prefix="entrenar-export-") as tmp:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        conv = convert_model(tmp, fmt, output, quantize)
    return ExportResult(str(path), str(source), fmt, str(output), quantize, merged, conv.to_dict())


def _export_adapter(path: Path, adapter: Path, fmt: str, output: str | Path) -> ExportResult:
    if fmt == "safetensors":
        with atomic_dir(output) as tmp:
            for f in adapter.iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        return ExportResult(str(path), str(adapter), fmt, str(output), None, False, None)
    from ..lora.convert import convert_adapter

    result = convert_adapter(str(adapter), fmt, output)
    return ExportResult(str(path), str(adapter), fmt, str(output), None, False, result.to_dict())
