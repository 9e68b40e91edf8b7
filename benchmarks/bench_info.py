"""`inspect info` start-to-finish vs a bare `safe_open(...).keys()` process, on multi-GB files.

Goal: ratio <= 1.2x and flat in file size (info reads only the header). Files are sparse
(header + a hole), so a 13 GB Llama-2-7B-shaped file costs no disk.

    python benchmarks/bench_info.py
"""

from __future__ import annotations

import json
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANCHOR = "from safetensors import safe_open; import sys; f = safe_open(sys.argv[1], 'np'); print(len(list(f.keys())))"


def llama_shapes(layers: int, hidden: int, inter: int, vocab: int) -> dict[str, list[int]]:
    shapes = {
        "model.embed_tokens.weight": [vocab, hidden],
        "lm_head.weight": [vocab, hidden],
        "model.norm.weight": [hidden],
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{name}.weight"] = [hidden, hidden]
        shapes[p + "mlp.gate_proj.weight"] = [inter, hidden]
        shapes[p + "mlp.up_proj.weight"] = [inter, hidden]
        shapes[p + "mlp.down_proj.weight"] = [hidden, inter]
        shapes[p + "input_layernorm.weight"] = [hidden]
        shapes[p + "post_attention_layernorm.weight"] = [hidden]
    return shapes


def write_sparse(path: Path, shapes: dict[str, list[int]]) -> int:
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return 8 + len(raw) + offset


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def in_process(path: Path, repeats: int) -> tuple[float, float]:
    """The same two reads inside one process: our header parse + architecture facts vs
    safe_open().keys(). Separates our work from the CLI's start-up (Python, Typer, pydantic)."""
    from safetensors import safe_open

    from entrenar_tui.core.inspect.info import model_info

    ours, anchor = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        model_info(str(path))
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        with safe_open(str(path), "np") as f:
            list(f.keys())
        anchor.append(time.perf_counter() - start)
    return statistics.median(ours), statistics.median(anchor)


def main(repeats: int = 9) -> None:
    entrenar = [sys.executable, "-m", "entrenar_tui.cli.main"]
    cases = {
        "1.3B-shaped": llama_shapes(24, 2048, 5504, 32000),
        "7B-shaped": llama_shapes(32, 4096, 11008, 32000),
        "13B-shaped": llama_shapes(40, 5120, 13824, 32000),
    }
    print("process to process (what a script calling the CLI pays):")
    print(
        f"{'file':<14}{'size':>10}{'entrenar info':>16}{'safe_open keys':>17}{'ratio':>8}{'in-process':>13}{'anchor':>10}{'ratio':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for label, shapes in cases.items():
            path = Path(tmp) / f"{label}.safetensors"
            size = write_sparse(path, shapes)
            ours, anchor = [], []
            for _ in range(repeats):  # interleaved, so load changes hit both alike
                ours.append(timed([*entrenar, "inspect", "info", str(path), "--json"]))
                anchor.append(timed([sys.executable, "-c", ANCHOR, str(path)]))
            a, b = statistics.median(ours), statistics.median(anchor)
            c, d = in_process(path, repeats)
            print(
                f"{label:<14}{size / 2**30:>8.1f}GiB{a * 1000:>13.0f} ms{b * 1000:>14.0f} ms{a / b:>7.2f}x{c * 1000:>10.1f} ms{d * 1000:>7.1f} ms{c / d:>7.2f}x"
            )


if __name__ == "__main__":
    main()
