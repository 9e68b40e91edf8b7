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


def show_merge(r) -> None:
    d = r.to_dict()
    rows = [("output", d["output"]), ("modules merged", d["modules"]), ("tensors merged", d["tensors_merged"]), ("tensors replaced", d["tensors_replaced"]),
            ("tensors copied", d["tensors_copied"]), ("dtype", d["dtype"]), ("scale", d["scale"]), ("written", render.human_bytes(d["bytes_written"])), ("time", f"{d['seconds']:.1f} s")]  # fmt: skip
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


def show_inspect(r) -> None:
    targets = ", ".join(f"{k} x{v['modules']}" for k, v in r.targets.items())
    rows = [("adapter", r.adapter), ("rank", r.rank if len(r.ranks) <= 1 else f"{r.rank} (pattern: {sorted(set(r.ranks))})"), ("alpha", r.alpha),
            ("scale", f"{r.scale:.4g}" + (" (rsLoRA)" if r.use_rslora else "")), ("DoRA", r.use_dora), ("targets", targets), ("layers", r.layers),
            ("parameters", f"{r.parameters:,}"), ("modules_to_save", ", ".join(r.modules_to_save) or "-"), ("total trainable", f"{r.total_parameters:,}")]  # fmt: skip
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
        for m in r.modules[:40]
    ]
    render.show(
        render.table(
            "modules (effective rank at 99% energy)",
            ["module", "rank", "eff. rank", f"top-{r.top_k} energy", "zeros", "|dW|"],
            mods,
            right={1, 2, 3, 4, 5},
        )
    )
    if len(r.modules) > 40:
        render.line(f"... and {len(r.modules) - 40} more modules (--json for all)")
    for p in r.problems:
        render.line(f"{p.severity}: {p.code}: {p.message} (hint: {p.hint})")


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
