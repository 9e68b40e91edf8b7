"""`entrenar lora`: plan, compare, merge, inspect, convert."""

from __future__ import annotations

from typing import Annotated

import typer

from . import render
from .common import DebugOpt, JsonOpt, run

app = typer.Typer(help="LoRA/QLoRA planning and adapter tools.", no_args_is_help=True)


@app.command()
def merge(
    base: Annotated[str, typer.Option("--base", "-b", help="Base model (folder, file, hub id).")],
    adapter: Annotated[str, typer.Option("--adapter", "-a", help="PEFT adapter folder.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Output folder.")],
    scale: Annotated[
        float, typer.Option("--scale", help="Multiply the update (1.0 = as trained).")
    ] = 1.0,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Merge an adapter into its base, tensor by tensor; keeps the base dtype and shards."""
    from ..core.lora.merge import merge_adapter

    run(
        lambda: merge_adapter(base, adapter, output, scale),
        json_out=json_out,
        debug=debug,
        show=show_merge,
    )


def show_merge(result) -> None:
    summary = result.to_dict()
    rows = [
        ("output", summary["output"]),
        ("modules merged", summary["modules"]),
        ("tensors merged", summary["tensors_merged"]),
        ("tensors replaced", summary["tensors_replaced"]),
        ("tensors copied", summary["tensors_copied"]),
        ("dtype", summary["dtype"]),
        ("scale", summary["scale"]),
        ("written", render.human_bytes(summary["bytes_written"])),
        ("time", f"{summary['seconds']:.1f} s"),
    ]
    render.show(render.kv_table("lora merge", rows))


@app.command("inspect")
def inspect_cmd(
    adapter: Annotated[str, typer.Argument(help="PEFT adapter folder.")],
    base: Annotated[
        str | None, typer.Option("--base", "-b", help="Check shapes against this base.")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Singular values to report.")] = 4,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Ranks, alpha, scale, targets, parameters, per-module effective rank; exit 3 on problems."""
    from ..core.lora.inspect import inspect_adapter

    report = run(
        lambda: inspect_adapter(adapter, base, top_k),
        json_out=json_out,
        debug=debug,
        show=show_inspect,
    )
    if not report.ok:
        raise typer.Exit(3)


def show_inspect(report) -> None:
    targets = ", ".join(f"{k} x{v['modules']}" for k, v in report.targets.items())
    rank = (
        report.rank
        if len(report.ranks) <= 1
        else f"{report.rank} (pattern: {sorted(set(report.ranks))})"
    )
    rows = [
        ("adapter", report.adapter),
        ("rank", rank),
        ("alpha", report.alpha),
        ("scale", f"{report.scale:.4g}" + (" (rsLoRA)" if report.use_rslora else "")),
        ("DoRA", report.use_dora),
        ("targets", targets),
        ("layers", report.layers),
        ("parameters", f"{report.parameters:,}"),
        ("modules_to_save", ", ".join(report.modules_to_save) or "-"),
        ("total trainable", f"{report.total_parameters:,}"),
    ]
    render.show(render.kv_table("lora adapter", rows))
    mods = [
        [
            m.name,
            m.rank,
            m.effective_rank,
            f"{m.energy_top_k:.1%}" if m.energy_top_k is not None else "-",
            f"{m.sparsity:.1%}",
            f"{m.norm_delta:.3g}" if m.norm_delta is not None else "-",
        ]
        for m in report.modules[:40]
    ]
    render.show(
        render.table(
            "modules (effective rank at 99% energy)",
            ["module", "rank", "eff. rank", f"top-{report.top_k} energy", "zeros", "|dW|"],
            mods,
            right={1, 2, 3, 4, 5},
        )
    )
    if len(report.modules) > 40:
        render.line(f"... and {len(report.modules) - 40} more modules (--json for all)")
    for problem in report.problems:
        render.line(f"{problem.severity}: {problem.code}: {problem.message} (hint: {problem.hint})")


@app.command()
def convert(
    adapter: Annotated[str, typer.Argument(help="PEFT adapter folder.")],
    to: Annotated[str, typer.Option("--to", help="safetensors | pth | gguf")],
    output: Annotated[str, typer.Option("--output", "-o")],
    base: Annotated[
        str | None, typer.Option("--base", "-b", help="Base model (GGUF needs its head counts).")
    ] = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Convert an adapter between PEFT safetensors, PEFT pth and llama.cpp's GGUF LoRA format."""
    from ..core.lora.convert import convert_adapter

    run(
        lambda: convert_adapter(adapter, to, output, base),
        json_out=json_out,
        debug=debug,
        show=show_convert,
    )


def show_convert(r) -> None:
    d = r.to_dict()
    rows = [(k, v) for k, v in d.items() if not isinstance(v, (list, dict))]
    render.show(render.kv_table("lora convert", rows))
    for note in d.get("notes", []):
        render.line(f"note: {note}")


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Model: folder, file, hub id, packaged name, or a bare config.json."
    ),
]
HeadroomOpt = Annotated[
    float, typer.Option("--headroom", min=0, max=0.99, help="Share of VRAM kept free (0.1 = 10%).")
]
_METHOD_NAMES = {
    "full": "full fine-tuning",
    "lora": "LoRA (bf16 base)",
    "qlora": "QLoRA (4-bit NF4 base)",
}


@app.command()
def plan(
    model: ModelOpt,
    vram: Annotated[str, typer.Option("--vram", help="GPU memory, e.g. 16GB (= 16 GiB).")],
    method: Annotated[
        str, typer.Option("--method", help="auto | full | lora[-RANK] | qlora[-RANK]")
    ] = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=1, help="Effective batch (default 16), micro-batched."),
    ] = None,
    sequence_length: Annotated[
        int | None,
        typer.Option("--sequence-length", min=1, help="Tokens per sample (default 2048)."),
    ] = None,
    headroom: HeadroomOpt = 0.1,
    write_config: Annotated[
        str | None,
        typer.Option(
            "--write-config",
            help="Write the plan as distill.yaml keys (with --config: the whole config).",
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config", help="A base distill.yaml that --write-config applies the plan to."
        ),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="cuda (counts a CUDA context) or cpu (RAM).")
    ] = "cuda",
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """The best full/LoRA/QLoRA configuration that fits a GPU, and why bigger ones do not."""
    from ..core.lora.plan import plan_lora

    run(
        lambda: plan_lora(
            model,
            vram,
            method=method,
            batch_size=batch_size,
            sequence_length=sequence_length,
            headroom=headroom,
            write_config=write_config,
            device=device,
            config=config,
        ),
        json_out=json_out,
        debug=debug,
        show=show_plan,
    )


def _plan_rows(lora_plan) -> list[tuple[str, object]]:
    adapter = f"r={lora_plan.rank}, alpha={lora_plan.alpha}, {lora_plan.target_set}: {', '.join(lora_plan.target_modules)}"
    method = _METHOD_NAMES[lora_plan.method] + (
        " with 8-bit AdamW" if lora_plan.optimizer == "adamw8bit" else ""
    )
    batch = f"{lora_plan.batch_size} x {lora_plan.gradient_accumulation} accumulation = {lora_plan.effective_batch_size}"
    trainable = (
        f"{render.human_count(lora_plan.trainable_parameters)} of {render.human_count(lora_plan.parameters)}"
        f" ({lora_plan.trainable_share:.2%})"
    )
    memory = (
        f"{render.human_bytes(lora_plan.memory.total_bytes)} of {render.human_bytes(lora_plan.vram_bytes)}"
        f" ({lora_plan.utilization:.0%}; budget {render.human_bytes(lora_plan.budget_bytes)})"
    )
    return [
        ("model", lora_plan.model),
        ("method", method),
        ("adapter", adapter if lora_plan.rank else "-"),
        ("batch", batch),
        ("gradient checkpointing", "on" if lora_plan.gradient_checkpointing else "off"),
        ("sequence length", lora_plan.sequence_length),
        ("trainable", trainable),
        ("memory", memory),
        ("speed vs full", f"{lora_plan.relative_speed:.2f}x"),
        ("quality", lora_plan.quality_note),
    ]


def _why_not_row(r, vram_bytes: int) -> list[str]:
    tried = f"micro-batch {r.batch_size}" + (", checkpointing" if r.gradient_checkpointing else "")
    verdict = "only without headroom" if r.memory_bytes <= vram_bytes else "no"
    return [r.option, tried, render.human_bytes(r.memory_bytes), verdict]


def show_plan(p) -> None:
    render.show(render.kv_table("lora plan", _plan_rows(p)))
    if p.rejected:
        why = [_why_not_row(r, p.vram_bytes) for r in p.rejected]
        title = f"why not the better options (budget {render.human_bytes(p.budget_bytes)})"
        columns = ["option", "smallest tried", "needs", "fits the card"]
        render.show(render.table(title, columns, why, right={2}))
    for note in p.notes:
        render.line(f"note: {note}")
    if p.config_written:
        render.line(f"wrote {p.config_written}")


@app.command()
def compare(
    model: ModelOpt,
    methods: Annotated[
        str, typer.Option("--methods", help="Comma list, e.g. full,lora-16,lora-64,qlora-4bit.")
    ] = "full,lora-16,lora-64,qlora-4bit",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Micro-batch.")] = 1,
    sequence_length: Annotated[
        int, typer.Option("--sequence-length", min=1, help="Tokens per sample.")
    ] = 2048,
    vram: Annotated[
        str | None, typer.Option("--vram", help="Mark which fit, e.g. 24GB (= 24 GiB).")
    ] = None,
    checkpointing: Annotated[
        bool, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing")
    ] = True,
    headroom: HeadroomOpt = 0.1,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Memory, trainable parameters, relative speed and quality of methods, side by side."""
    from ..core.lora.compare import compare_methods

    run(
        lambda: compare_methods(
            model,
            methods.split(","),
            batch_size=batch_size,
            sequence_length=sequence_length,
            vram=vram,
            gradient_checkpointing=checkpointing,
            headroom=headroom,
        ),
        json_out=json_out,
        debug=debug,
        show=show_compare,
    )


def _compare_row(r) -> list[str]:
    trainable = f"{render.human_count(r.trainable_parameters)} ({r.trainable_share:.2%})"
    fits = "-" if r.fits is None else ("yes" if r.fits else "no")
    memory = render.human_bytes(r.memory_bytes)
    return [r.method, memory, trainable, f"{r.relative_speed:.2f}x", fits, r.quality_note]


def show_compare(c) -> None:
    rows = [_compare_row(r) for r in c.rows]
    checkpointing = "on" if c.gradient_checkpointing else "off"
    title = f"{c.model}: micro-batch {c.batch_size}, {c.sequence_length} tokens, checkpointing {checkpointing}"
    columns = ["method", "memory", "trainable", "speed", "fits", "quality"]
    render.show(render.table(title, columns, rows, right={1, 2, 3}))
    for note in c.notes:
        render.line(f"note: {note}")
