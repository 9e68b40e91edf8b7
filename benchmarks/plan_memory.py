"""The planner's methods, run: `lora plan --write-config --config BASE` for full bf16 with AdamW,
full bf16 with 8-bit AdamW, LoRA on a bf16 base, QLoRA on an NF4 base (and an int8 base, which
the planner never picks), each trained by a real `entrenar distill run`, its measured peak
against the plan's estimate. bench_memory.py prints these rows after its matrix.

On CUDA the run reports max_memory_allocated, compared with the estimate's tensor peak. On CPU
the runtime (Python, torch, transformers, bitsandbytes) is measured too: a tiny student trained
with the same method is the baseline, and the small student's peak above it is compared with
what the estimate models (as tests/integration/test_plan_runs.py does).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml

from entrenar_tui.core.distill.config import load_config
from entrenar_tui.core.distill.estimate import estimate_distillation
from entrenar_tui.core.lora.plan import plan_lora
from entrenar_tui.core.memory import measure_run_peak

METHODS = ("full", "full-8bit", "lora-8", "qlora-8", "int8")
STUDENTS = {"tiny": (2, 32, 64), "small": (4, 768, 2048)}  # layers, hidden, intermediate
BATCH, SEQUENCE = 8, 128


def build_models(root: Path) -> dict[str, Path]:
    """A 2-layer teacher and the two students, LLaMA-shaped, with SmolLM2's tokenizer."""
    import torch
    import transformers

    from entrenar_tui.core.distill.modeling import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    folders = {}
    for name, (layers, hidden, intermediate) in {"teacher": (2, 32, 64), **STUDENTS}.items():
        config = transformers.LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=8,
            num_key_value_heads=4,
            max_position_embeddings=256,
            tie_word_embeddings=False,
        )
        torch.manual_seed(1)
        folders[name] = root / name
        transformers.LlamaForCausalLM(config).save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    return folders


def base_config(root: Path, teacher: Path, device: str) -> Path:
    """Cross-entropy only (alpha 0): the teacher's logits, which a plan does not count, never
    exist; three steps, no evaluation, no checkpoints."""
    path = root / "base.yaml"
    data = {
        "device": device,
        "teacher": {"model_id": str(teacher)},
        "student": {"model_id": str(teacher)},
        "distillation": {"alpha": 0.0},
        "training": {"max_steps": 3, "log_every": 1, "eval_every": None, "warmup_steps": 0},
        "dataset": {"source": "builtin", "max_documents": 200, "eval_fraction": 0.0},
        "output": {"checkpoint_every": None},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def planned(model: Path, method: str, base: Path, out: Path, device: str) -> int:
    """Write the method's plan for `model`; return the bytes its estimate models."""
    plan = plan_lora(
        str(model),
        "64GB",
        method=method.replace("int8", "qlora-8"),
        batch_size=BATCH,
        sequence_length=SEQUENCE,
        headroom=0,
        device=device,
        config=base,
        write_config=out,
    )
    estimate = plan.memory.to_dict()
    if method == "int8":
        written = yaml.safe_load(out.read_text())
        written["student"]["quantization"] = {"method": "int8"}
        out.write_text(yaml.safe_dump(written))
        estimate = estimate_distillation(load_config(out), measure_steps=0).student_estimate
    return estimate["total_bytes"] - estimate["breakdown"]["overhead"]


def plan_rows(device: str) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="entrenar-plan-rows-") as tmp:
        root = Path(tmp)
        folders = build_models(root)
        base = base_config(root, folders["teacher"], device)
        for method in METHODS:
            estimates, peaks = {}, {}
            names = ("small",) if device == "cuda" else tuple(STUDENTS)
            for name in names:
                config = root / f"{method}-{name}.yaml"
                estimates[name] = planned(folders[name], method, base, config, device)
                peaks[name] = measure_run_peak(config, root / f"run-{method}-{name}")
            runtime = 0 if device == "cuda" else peaks["tiny"] - estimates["tiny"]
            measured = peaks["small"] - runtime
            error = (estimates["small"] - measured) / measured
            rows.append(
                {
                    "method": method,
                    "device": device,
                    "estimate_bytes": estimates["small"],
                    "measured_bytes": measured,
                    "runtime_bytes": runtime,
                    "error": error,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows
