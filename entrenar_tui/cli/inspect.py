"""`entrenar inspect`: info, layers, memory, compare, validate, convert."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from . import render
from .common import DebugOpt, JsonOpt, run

app = typer.Typer(help="Inspect, check, compare and convert models.", no_args_is_help=True)

ModelArg = Annotated[
    str, typer.Argument(help="Path, hub id (org/name) or packaged name (smollm2-135m, minilm-l6).")
]


class Optimizer(str, Enum):
    adamw = "adamw"
    adamw8bit = "adamw8bit"
    sgd = "sgd"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Attention(str, Enum):
    sdpa = "sdpa"
    eager = "eager"


class QuantizeBase(str, Enum):
    nf4 = "nf4"
    int8 = "int8"


class Target(str, Enum):
    gguf = "gguf"
    safetensors = "safetensors"
    pth = "pth"
    apr = "apr"


@app.command()
def info(model: ModelArg, json_out: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Architecture, exact parameter count, sizes and precision, from headers only."""
    from ..core.inspect.info import model_info

    run(lambda: model_info(model), json_out=json_out, debug=debug, show=show_info)


def print_view(items: list) -> None:
    """Print what a *_view built: plain lines as text (never markup), the rest as rich."""
    for item in items:
        if isinstance(item, str):
            render.line(item)
        else:
            render.show(item)


def show_info(result) -> None:
    print_view(info_view(result))


def info_view(result) -> list:
    """The info table (the shell and the TUI's Shell pane draw the same one)."""
    dtypes = ", ".join(f"{k} ({render.human_count(v)})" for k, v in result.dtypes.items())
    guessed = set(result.inferred)

    def shown(value, *fields: str):
        """A value guessed from tensor shapes says so: it may be wrong (heads, family)."""
        return (
            f"{value} (inferred)" if value is not None and guessed.intersection(fields) else value
        )

    heads = f"{result.heads} (kv {result.kv_heads})" if result.heads else None
    architecture = f"{result.architecture} ({result.model_type}, from {result.arch_source})"
    rows = [
        ("architecture", shown(architecture, "model_type", "family")),
        ("format", result.kind),
        ("parameters", f"{result.parameters:,} ({render.human_count(result.parameters)})"),
        ("layers", shown(result.layers, "layers")),
        ("hidden size", shown(result.hidden_size, "hidden_size")),
        ("attention heads", shown(heads, "heads", "kv_heads")),
        ("intermediate size", shown(result.intermediate_size, "intermediate_size")),
        ("vocab size", shown(result.vocab_size, "vocab_size")),
        ("max positions", result.max_positions),
        ("tied embeddings", result.tied_embeddings),
        ("precision", dtypes),
        ("tensors", result.tensor_count),
        ("files", f"{result.file_count} ({render.human_bytes(result.file_size_bytes)})"),
        ("tokenizer", "yes" if result.has_tokenizer else "no"),
    ]
    return [render.kv_table(f"{result.ref}", rows)]


@app.command()
def layers(
    model: ModelArg,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Every tensor, not blocks.")
    ] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Tensors grouped by block: shape, dtype, parameters, bytes."""
    from ..core.inspect.info import model_layers

    run(lambda: model_layers(model, verbose), json_out=json_out, debug=debug, show=show_layers)


def show_layers(result) -> None:
    print_view(layers_view(result))


def layers_view(result) -> list:
    if result.verbose:
        rows = [
            [
                t["name"],
                "x".join(map(str, t["shape"])),
                t["dtype"],
                f"{t['parameters']:,}",
                render.human_bytes(t["bytes"]),
            ]
            for t in result.tensors
        ]
        cols = ["tensor", "shape", "dtype", "params", "bytes"]
    else:
        rows = [
            [
                g.name,
                g.tensors,
                ",".join(g.dtypes),
                f"{g.parameters:,}",
                render.human_bytes(g.bytes),
            ]
            for g in result.groups
        ]
        cols = ["block", "tensors", "dtype", "params", "bytes"]
    return [
        render.table(result.ref, cols, rows, right={3, 4}),
        f"total: {result.parameters:,} parameters, {render.human_bytes(result.bytes)}",
    ]


@app.command()
def memory(
    model: ModelArg,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 1,
    sequence_length: Annotated[int, typer.Option("--sequence-length", "-s", min=1)] = 512,
    optimizer: Annotated[Optimizer, typer.Option()] = Optimizer.adamw,
    precision: Annotated[Precision, typer.Option()] = Precision.bf16,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing")] = False,
    lora_rank: Annotated[int | None, typer.Option("--lora-rank", min=1)] = None,
    lora_targets: Annotated[
        str | None,
        typer.Option(
            "--lora-targets",
            help="Comma list of modules, or all-linear (default: the attention projections).",
        ),
    ] = None,
    quantize_base: Annotated[
        QuantizeBase | None,
        typer.Option(
            "--quantize-base",
            help="nf4 (QLoRA) or int8 (LLM.int8): a quantized base; needs --lora-rank.",
        ),
    ] = None,
    lora_dropout: Annotated[
        float,
        typer.Option("--lora-dropout", min=0, max=0.99, help="PEFT's dropout before A (0.05)."),
    ] = 0.0,
    double_quant: Annotated[
        bool,
        typer.Option("--double-quant/--no-double-quant", help="NF4 double quantisation."),
    ] = True,
    attention: Annotated[
        Attention, typer.Option("--attention", help="sdpa (fused kernels) or eager.")
    ] = Attention.sdpa,
    master_weights: Annotated[
        bool | None,
        typer.Option(
            "--master-weights/--no-master-weights",
            help="fp32 master weights for 16-bit full fine-tuning (default: on).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cuda or cpu: which overheads to count.")] = "cuda",
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Training-memory breakdown for a batch size and sequence length."""
    from ..core.memory import TrainSettings, estimate_for_model

    targets = [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets else None

    def call():
        settings = TrainSettings(
            batch_size=batch_size,
            sequence_length=sequence_length,
            optimizer=optimizer.value,
            precision=precision.value,
            master_weights=master_weights,
            gradient_checkpointing=gradient_checkpointing,
            lora_rank=lora_rank,
            lora_targets=targets,
            lora_dropout=lora_dropout if lora_rank else 0.0,
            quantize_base=quantize_base.value if quantize_base else None,
            double_quant=double_quant,
            attention=attention.value,
            device=device,
        )
        return estimate_for_model(model, settings)

    run(call, json_out=json_out, debug=debug, show=show_memory)


def show_memory(r) -> None:
    total = r.total_bytes or 1
    rows = [[k, render.human_bytes(v), f"{100 * v / total:.1f}%"] for k, v in r.breakdown.items()]
    rows.append(["total", render.human_bytes(r.total_bytes), "100%"])
    render.show(
        render.table("training memory estimate", ["term", "bytes", "share"], rows, right={1, 2})
    )
    for note in getattr(r, "notes", []) or []:
        render.line(f"note: {note}")


@app.command()
def compare(
    model_a: ModelArg,
    model_b: ModelArg,
    values: Annotated[
        bool, typer.Option("--values", help="Also compare values (streamed).")
    ] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Tensors added, removed, reshaped or retyped; with --values, how far values moved."""
    from ..core.inspect.compare import compare_models

    run(
        lambda: compare_models(model_a, model_b, values),
        json_out=json_out,
        debug=debug,
        show=show_compare,
    )


def show_compare(result) -> None:
    print_view(compare_view(result))


def compare_view(result) -> list:
    rows = [
        ("A", f"{result.a} ({result.parameters_a:,} params)"),
        ("B", f"{result.b} ({result.parameters_b:,} params)"),
        ("common tensors", result.common),
        ("only in B (added)", len(result.added)),
        ("only in A (removed)", len(result.removed)),
        ("shape changed", len(result.shape_changed)),
        ("dtype changed", len(result.dtype_changed)),
    ]
    if result.values is not None:
        rows.append(("max |A-B|", f"{result.max_abs_diff:.3g}" if result.values else "-"))
    items: list = [render.kv_table("compare", rows)]
    for label, names in (("added", result.added), ("removed", result.removed)):
        for name in names[:20]:
            items.append(f"{label}: {name}")
        if len(names) > 20:
            items.append(f"{label}: ... and {len(names) - 20} more")
    changed = result.shape_changed + result.dtype_changed
    for change in changed[:20]:
        items.append(f"changed: {change['name']} {change['a']} -> {change['b']}")
    if len(changed) > 20:
        items.append(f"changed: ... and {len(changed) - 20} more (--json for all)")
    if result.values and result.max_abs_diff == 0:
        items.append(f"values: all {len(result.values)} matching tensors are bit-identical")
    elif result.values:
        worst = sorted(result.values, key=lambda v: -v.relative_l2)[:20]
        rows = [[v.name, f"{v.max_abs_diff:.3g}", f"{v.relative_l2:.3g}"] for v in worst]
        items.append(
            render.table(
                "largest differences", ["tensor", "max |A-B|", "rel L2"], rows, right={1, 2}
            )
        )
    return items


@app.command()
def validate(
    model: ModelArg,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too.")] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Check structure and values (NaN/Inf, zeros, shapes vs config); exit 3 on problems."""
    from ..core.inspect.validate import validate_model

    report = run(
        lambda: validate_model(model, strict), json_out=json_out, debug=debug, show=show_validate
    )
    if not report.ok:
        raise typer.Exit(3)


def show_validate(report) -> None:
    print_view(validate_view(report))


def validate_view(report) -> list:
    items = []
    for problem in report.problems:
        where = f" [{problem.tensor}]" if problem.tensor else ""
        hint = f" (hint: {problem.hint})" if problem.hint else ""
        items.append(f"{problem.severity}: {problem.code}{where}: {problem.message}{hint}")
    summary = report.to_dict()
    errors = sum(p.severity == "error" for p in report.problems)
    warnings = len(report.problems) - errors
    verdict = "ok" if report.ok else "FAILED"
    items.append(
        f"{verdict}: {summary.get('tensors_checked', '?')} tensors checked, {errors} errors, {warnings} warnings"
    )
    return items


@app.command()
def convert(
    model: ModelArg,
    to: Annotated[Target, typer.Option("--to", help="Output format.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Output file or folder.")],
    quantize: Annotated[
        str | None,
        typer.Option("--quantize", "-q", help="f32|f16|bf16 (any format); q8_0|q4_0 (gguf)."),
    ] = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Convert between SafeTensors, GGUF, PyTorch and APR; verifies the output."""
    from ..core.convert import convert_model

    run(
        lambda: convert_model(model, to.value, output, quantize),
        json_out=json_out,
        debug=debug,
        show=show_convert,
    )


def show_convert(r) -> None:
    d = r.to_dict()
    rows = [(k, v) for k, v in d.items() if not isinstance(v, (dict, list))]
    render.show(render.kv_table("converted", rows))
